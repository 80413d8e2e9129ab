"""Coroutine (``async def``) mappers: run concurrently in every worker's own loop or on the
caller's loop, against a real HTTP server and real worker processes; per-record retries and
timeouts, skipped records, per-worker resources opened and closed once, cancellation that
runs every coroutine's ``finally``."""

from __future__ import annotations

import asyncio
import contextlib
import operator
import os
import pathlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiomr
from aiomr.executors import ProcessExecutor
from tests.conftest import alive
from tests.http_server import document, serving

httpx = pytest.importorskip("httpx", reason="the service extra is not installed")

EXECUTORS = ["inline", "thread", "process"]


def log(path: str, line: str) -> None:
    """Append one line to ``path`` (one write: lines of several processes never mix)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def lines(path: pathlib.Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


async def wait_for(check: Any, seconds: float = 10.0) -> None:
    """Poll ``check()`` until it is true (the workers end a job's coroutines within 0.1 s of
    its end, on their own time)."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


# -- answers ---------------------------------------------------------------------------------


async def doubled(x: int) -> int:
    await asyncio.sleep((x * 7919 % 13) / 10_000)  # finish out of order
    return 2 * x


async def as_text(x: int) -> str:
    await asyncio.sleep((x * 7919 % 13) / 10_000)
    return f"{x},"


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_the_same_answer_as_a_plain_mapper(executor: str) -> None:
    total = await aiomr.map_reduce(
        range(3_000), doubled, operator.add, executor=executor, max_workers=2
    )
    assert total == 2 * sum(range(3_000))
    text = await aiomr.map_reduce(
        range(500), as_text, operator.add, executor=executor, max_workers=2, ordered=True
    )
    assert text == "".join(f"{x}," for x in range(500))  # record order kept


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=st.lists(st.integers(-1_000, 1_000), min_size=1, max_size=200),
    chunk_size=st.integers(1, 50),
    concurrency=st.integers(1, 20),
)
async def test_any_chunks_any_concurrency_inline(
    records: list[int], chunk_size: int, concurrency: int
) -> None:
    text = await aiomr.map_reduce(
        records,
        as_text,
        operator.add,
        executor="inline",
        chunk_size=chunk_size,
        concurrency=concurrency,
        ordered=True,
    )
    assert text == "".join(f"{x}," for x in records)


async def chunk_total(chunk: list[int]) -> int:
    await asyncio.sleep(0.001)
    return sum(chunk)


async def test_chunk_mode_awaits_one_coroutine_per_chunk(
    process_executor: ProcessExecutor,
) -> None:
    total = await aiomr.map_reduce(
        range(10_000), chunk_total, operator.add, mode="chunk", executor=process_executor
    )
    assert total == sum(range(10_000))


class Peak:
    """A mapper that notes how many of its coroutines are in flight in this process."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.now = 0
        self.most = 0

    async def __call__(self, x: int) -> int:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(0.002)
            return 1
        finally:
            self.now -= 1
            log(self.path, f"{os.getpid()} {self.most}")


@pytest.mark.parametrize("executor", ["inline", "process"])
async def test_concurrency_bounds_the_coroutines_in_flight(
    tmp_path: pathlib.Path, executor: str
) -> None:
    path = tmp_path / "peaks"
    count = await aiomr.map_reduce(
        range(2_000),
        Peak(str(path)),
        operator.add,
        executor=executor,
        max_workers=2,
        concurrency=7,
    )
    assert count == 2_000
    peaks = [int(most) for _, most in lines(path)]
    assert max(peaks) == 7  # reached, never passed


class Paced:
    def __init__(self, path: str) -> None:
        self.path = path

    async def __call__(self, x: int) -> int:
        log(self.path, f"{os.getpid()} {time.monotonic()}")
        return 1


async def test_max_per_second_paces_each_worker_by_its_share(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "starts"
    await aiomr.map_reduce(
        range(60), Paced(str(path)), operator.add, max_workers=2, max_per_second=100.0
    )
    starts: dict[str, list[float]] = {}
    for pid, at in lines(path):
        starts.setdefault(pid, []).append(float(at))
    for times in starts.values():  # each of 2 processes starts at most 50 a second
        gaps = [b - a for a, b in zip(sorted(times), sorted(times)[1:], strict=False)]
        assert min(gaps) >= 0.02 - 0.005


# -- a real HTTP server and per-worker resources ------------------------------------------


class Session:
    """A per-worker resource: an HTTP client, its opening and closing logged per process."""

    def __init__(self, path: str) -> None:
        self.path = path

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[Any]:
        log(self.path, f"open {os.getpid()}")
        async with httpx.AsyncClient() as client:
            try:
                yield client
            finally:
                log(self.path, f"close {os.getpid()}")


class Fetch:
    """Fetch a record's document and count its words."""

    def __init__(
        self, base: str, delay: float = 0.0, die_at: int | None = None, marker: str = ""
    ) -> None:
        self.base = base
        self.delay = delay
        self.die_at = die_at
        self.marker = marker

    async def __call__(self, n: int, client: Any) -> int:
        if n == self.die_at and not os.path.exists(self.marker):
            pathlib.Path(self.marker).touch()  # once: the chunk's second run succeeds
            os._exit(17)
        answer = await client.get(f"{self.base}/doc/{n}", params={"delay": self.delay})
        answer.raise_for_status()
        return len(answer.json()["words"])


def words(count: int) -> int:
    return sum(len(document(n)["words"]) for n in range(count))


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_fetch_from_a_real_server_with_one_client_per_worker(
    tmp_path: pathlib.Path, executor: str
) -> None:
    path = tmp_path / "sessions"
    with serving() as (base, counts):
        total = await aiomr.map_reduce(
            range(1_500),
            Fetch(base, delay=0.002),
            operator.add,
            executor=executor,
            max_workers=2,
            resources=Session(str(path)),
        )
        assert total == words(1_500)
        assert counts.answered["doc"] == 1_500  # each record fetched once
    await wait_for(lambda: len(lines(path)) == 2 * len({pid for _, pid in lines(path)}))
    events = lines(path)
    opened = [pid for kind, pid in events if kind == "open"]
    closed = [pid for kind, pid in events if kind == "close"]
    assert sorted(opened) == sorted(closed)  # closed once where opened, once per process
    assert len(opened) == len(set(opened))


async def test_a_killed_worker_loses_its_chunk_not_the_answer(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "sessions"
    with serving() as (base, _):
        total = await aiomr.map_reduce(
            range(2_000),
            Fetch(base, die_at=1_234, marker=str(tmp_path / "died")),
            operator.add,
            max_workers=2,
            resources=Session(str(path)),
        )
    assert (tmp_path / "died").exists()
    assert total == words(2_000)

    def closes_left() -> int:
        kinds = [kind for kind, _ in lines(path)]
        return kinds.count("open") - kinds.count("close")

    await wait_for(lambda: closes_left() == 1)  # the killed worker's: never closed
    events = lines(path)
    opened = [pid for kind, pid in events if kind == "open"]
    closed = [pid for kind, pid in events if kind == "close"]
    assert len(opened) == len(set(opened))  # once per worker process
    assert len(opened) == len(closed) + 1  # all but the killed one closed theirs
    assert set(closed) < set(opened)


# -- failures of one record ---------------------------------------------------------------

_ATTEMPTS: dict[int, int] = {}


async def flaky(x: int) -> int:
    """Fails the first two tries of every tenth record (in its process)."""
    if x % 10 == 0:
        _ATTEMPTS[x] = _ATTEMPTS.get(x, 0) + 1
        if _ATTEMPTS[x] <= 2:
            raise ConnectionError(f"try {_ATTEMPTS[x]} of record {x}")
    return x


@pytest.mark.parametrize("executor", ["inline", "process"])
async def test_retries_are_per_record(executor: str) -> None:
    _ATTEMPTS.clear()
    policy = aiomr.RetryPolicy(max_attempts=3, retry_on=(ConnectionError,), backoff=0.001)
    total = await aiomr.map_reduce(
        range(300), flaky, operator.add, executor=executor, max_workers=2, retry=policy
    )
    assert total == sum(range(300))


async def test_a_record_out_of_retries_fails_the_job_once() -> None:
    _ATTEMPTS.clear()
    policy = aiomr.RetryPolicy(max_attempts=2, retry_on=(ConnectionError,), backoff=0.001)
    with pytest.raises(ConnectionError, match="try 2 of record") as caught:
        await aiomr.map_reduce(
            range(300), flaky, operator.add, executor="inline", retry=policy, chunk_size=300
        )
    notes = "\n".join(caught.value.__notes__)
    assert "failed 2 times (max_attempts=2)" in notes
    assert max(_ATTEMPTS.values()) == 2  # the chunk was not run again on top


async def slow_at_seven(x: int) -> int:
    await asyncio.sleep(30 if x == 7 else 0)
    return x


async def test_record_timeout_cancels_one_record() -> None:
    with pytest.raises(TimeoutError, match=r"record 7 of the chunk took longer than"):
        await aiomr.map_reduce(
            range(20), slow_at_seven, operator.add, executor="inline", record_timeout=0.2
        )
    stats = aiomr.JobStats()
    total = await aiomr.map_reduce(
        range(20),
        slow_at_seven,
        operator.add,
        max_workers=2,
        record_timeout=0.2,
        on_error="collect",
        stats=stats,
    )
    assert total == sum(range(20)) - 7
    assert stats.records_skipped == 1
    assert stats.records == stats.records_reduced + stats.records_skipped
    (bad,) = stats.bad_records
    assert "7" in bad.record
    assert "TimeoutError" in bad.error


async def odd_fails(x: int) -> int:
    await asyncio.sleep(0)
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


async def test_on_error_skip_names_each_failed_record() -> None:
    stats = aiomr.JobStats()
    total = await aiomr.map_reduce(
        range(100), odd_fails, operator.add, max_workers=2, on_error="collect", stats=stats
    )
    assert total == sum(range(0, 100, 2))
    assert stats.records_skipped == 50
    assert sorted(int(bad.record) for bad in stats.bad_records) == list(range(1, 100, 2))
    with pytest.raises(ValueError, match="odd 1") as caught:
        await aiomr.map_reduce(range(100), odd_fails, operator.add, executor="inline")
    assert any("record 1" in note for note in caught.value.__notes__)


# -- cancellation ------------------------------------------------------------------------------


class Hangs:
    """Log each coroutine's start and its ``finally``; wait on the server for ever."""

    def __init__(self, base: str, path: str) -> None:
        self.base = base
        self.path = path

    async def __call__(self, n: int, client: Any) -> int:
        log(self.path, f"start {n}")
        try:
            await client.get(f"{self.base}/hang", timeout=None)
            return 0
        finally:
            log(self.path, f"end {n}")


@pytest.mark.parametrize("on", ["call", "engine", "inline"])
async def test_cancelling_runs_every_coroutines_finally_and_closes_resources(
    tmp_path: pathlib.Path, on: str, process_executor: ProcessExecutor
) -> None:
    path = tmp_path / "coroutines"
    sessions = tmp_path / "sessions"
    with serving() as (base, counts):
        options: dict[str, Any] = {
            "resources": Session(str(sessions)),
            "concurrency": 5,
            "max_workers": 2,
        }
        if on == "engine":
            job = aiomr.Engine(process_executor).map_reduce(
                range(1_000), Hangs(base, str(path)), operator.add, **options
            )
        else:
            executor = "inline" if on == "inline" else "process"
            job = aiomr.map_reduce(
                range(1_000), Hangs(base, str(path)), operator.add, executor=executor, **options
            )
        task = asyncio.ensure_future(job)
        expected = 5 if on == "inline" else 10
        await wait_for(lambda: counts.begun.get("hang", 0) >= expected)
        pids = process_executor.worker_pids if on == "engine" else None
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_for(lambda: sum(e[0] == "end" for e in lines(path)) >= expected)
    events = lines(path)
    started = sorted(n for kind, n in events if kind == "start")
    ended = sorted(n for kind, n in events if kind == "end")
    assert started == ended  # every coroutine that started ran its finally
    await wait_for(lambda: sum(e[0] == "close" for e in lines(sessions)) >= 1)
    opened = sorted(pid for kind, pid in lines(sessions) if kind == "open")
    closed = sorted(pid for kind, pid in lines(sessions) if kind == "close")
    assert opened == closed
    if pids is not None:
        assert alive(pids())  # a shared pool's workers stay, for the next job


# -- what is refused ----------------------------------------------------------------------


def plain(x: int) -> int:
    return x


async def test_coroutine_options_need_an_async_mapper(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match=r"concurrency is for an async def mapper; mapper plain"):
        await aiomr.map_reduce(range(3), plain, operator.add, concurrency=3)
    source = tmp_path / "lines.txt"
    source.write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"runs in mode='record' over lines"):
        await aiomr.map_reduce(aiomr.sources.files(source), doubled, operator.add, mode="chunk")
    with pytest.raises(ValueError, match=r"concurrency must be >= 1"):
        await aiomr.map_reduce(range(3), doubled, operator.add, concurrency=0)


# -- every job shape -----------------------------------------------------------------------


async def word_pairs(line: str) -> list[tuple[str, int]]:
    await asyncio.sleep(0.0005)
    return [(word, 1) for word in line.split()]


async def yielded_pairs(line: str) -> AsyncIterator[tuple[str, int]]:
    await asyncio.sleep(0.0005)
    for word in line.split():
        yield word, 1


async def fails_on_b(line: str) -> list[tuple[str, int]]:
    if "b" in line.split():
        raise ValueError(f"b in {line!r}")
    return [(word, 1) for word in line.split()]


LINES = ["a b c", "a b", "a", "d"] * 250
COUNTED = {"a": 750, "b": 500, "c": 250, "d": 250}


class AsyncWords(aiomr.Job):
    async def mapper(self, _: None, line: str) -> list[tuple[str, int]]:
        return await word_pairs(line)

    def reducer(self, word: str, counts: Any) -> Any:
        yield word, sum(counts)


class YieldedWords(aiomr.Job):
    async def mapper(self, _: None, line: str) -> AsyncIterator[tuple[str, int]]:
        async for pair in yielded_pairs(line):
            yield pair

    def reducer(self, word: str, counts: Any) -> Any:
        yield word, sum(counts)


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_key_based_jobs_and_job_classes(executor: str) -> None:
    for mapper in (word_pairs, yielded_pairs):
        counts = await aiomr.map_reduce_by_key(
            LINES, mapper, operator.add, executor=executor, max_workers=2
        )
        assert dict(counts) == COUNTED
    for job in (AsyncWords(), YieldedWords()):
        assert dict(await job.run(LINES, executor=executor, max_workers=2)) == COUNTED
    stats = aiomr.JobStats()
    counts = await aiomr.map_reduce_by_key(
        LINES,
        fails_on_b,
        operator.add,
        executor=executor,
        max_workers=2,
        on_error="skip",
        stats=stats,
    )
    assert dict(counts) == {"a": 250, "d": 250}
    assert stats.records_skipped == 500
    with pytest.raises(ValueError, match=r"b in 'a b c'") as caught:
        await aiomr.map_reduce_by_key(LINES, fails_on_b, operator.add, executor=executor)
    (where,) = [n for n in caught.value.__notes__ if "of the source" in n][:1]
    found = re.search(r"at record (\d+) of the source", where)
    assert found is not None
    assert "b" in LINES[int(found.group(1))].split()  # the record named is one that fails


async def squared(x: int) -> int:
    await asyncio.sleep(0)
    return x * x


async def test_streams_and_windows(process_executor: ProcessExecutor) -> None:
    engine = aiomr.Engine(process_executor)
    async with engine.open_stream(range(1_000), squared, operator.add) as snapshots:
        seen = [snapshot async for snapshot in snapshots]
    assert seen[-1].final
    assert seen[-1].value == sum(x * x for x in range(1_000))
    async with engine.open_windows(range(100), squared, operator.add, size=50) as windows:
        found = [window.value async for window in windows]
    assert found == [sum(x * x for x in range(50)), sum(x * x for x in range(50, 100))]


async def line_length(line: str) -> int:
    await asyncio.sleep(0)
    if line.startswith("bad"):
        raise ValueError(f"bad line {line!r}")
    return len(line)


@pytest.mark.parametrize("executor", ["inline", "process"])
async def test_lines_of_files_the_workers_read(tmp_path: pathlib.Path, executor: str) -> None:
    lines_of = [f"line {i}" if i % 1_000 != 999 else f"bad {i}" for i in range(20_000)]
    path = tmp_path / "lines.txt"
    path.write_text("".join(f"{line}\n" for line in lines_of))
    stats = aiomr.JobStats()
    total = await aiomr.map_reduce(
        aiomr.sources.files(path, split_size=64 * 1024),
        line_length,
        operator.add,
        executor=executor,
        max_workers=2,
        concurrency=4,  # windows of 128 lines: many windows per split
        on_error="collect",
        stats=stats,
    )
    assert total == sum(len(line) for line in lines_of if not line.startswith("bad"))
    assert stats.records == 20_000
    assert stats.records_skipped == 20
    assert sorted(bad.location for bad in stats.bad_records)[0].startswith(f"{path}:")
    with pytest.raises(ValueError, match="bad line 'bad 999'") as caught:
        await aiomr.map_reduce(
            aiomr.sources.files(path, split_size=64 * 1024),
            line_length,
            operator.add,
            executor=executor,
            max_workers=1,
            concurrency=4,
        )
    assert any("at record 999 of the split" in note for note in caught.value.__notes__)


class Gate:
    """A mapper whose coroutines wait until the test lets them go."""

    def __init__(self) -> None:
        self.started = 0
        self.go = asyncio.Event()

    async def __call__(self, x: int) -> int:
        self.started += 1
        await self.go.wait()
        return x


async def test_records_in_flight_are_bounded_by_the_window() -> None:
    pulled = 0

    async def records() -> AsyncIterator[int]:
        nonlocal pulled
        for x in range(10_000):
            pulled += 1
            yield x

    gate = Gate()
    job = asyncio.ensure_future(
        aiomr.map_reduce(
            records(),
            gate,
            operator.add,
            executor="inline",
            chunk_size=10,
            max_in_flight=2,
            concurrency=5,
        )
    )
    await wait_for(lambda: gate.started == 5)
    for _ in range(20):  # the job has every chance to read ahead, if it would
        await asyncio.sleep(0.005)
    assert gate.started == 5  # the job's bound on coroutines in flight
    assert pulled <= 2 * 10 + 1  # two chunks out, and at most the record that ends one
    gate.go.set()
    assert await job == sum(range(10_000))
