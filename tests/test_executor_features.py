"""Executors written as a user would: what they declare is used, what they do not is not assumed.

`Threads` implements only what `aiomr.executors.Executor` requires and runs every kind of job.
`ProcessPerTask` runs each task in a fresh Python process and declares that it can kill a
task: ``task_timeout`` then really stops hung map and reduce tasks. `Featured` declares the
rest (all three in tests/user_executors.py). The defaults of the base class are checked
against the table in docs/concepts/executors.md.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import os
import pathlib
import re
import threading
import time
from collections.abc import Iterable, Iterator

import pytest

import aiomr
from aiomr._scheduler import FairScheduler, Lane
from aiomr.executors import Executor
from tests.user_executors import ROOT, Featured, ProcessPerTask, Threads

DOCS = ROOT / "docs" / "concepts" / "executors.md"

FEATURES = {
    "name",
    "start",
    "workers_replaced",
    "seals_chunks",
    "split_seconds",
    "can_kill_tasks",
    "kill_task",
    "open_folder",
    "runs_coroutines",
    "same_machine",
    "in_process",
}
"""Every optional feature `Executor` declares."""
REQUIRED = {"max_workers", "submit", "aclose", "ship", "closed"}
"""What every executor has: the three abstract members, shipping code, and `closed`."""

WORDS = [f"w{n % 37}" for n in range(2000)]
COUNTS = {word: WORDS.count(word) for word in set(WORDS)}
SQUARES_40 = sum(x * x for x in range(40))


def square(x: int) -> int:
    return x * x


def one_word(word: str) -> Iterator[tuple[str, int]]:
    yield word, 1


def hang_once_at(marker: str, x: int) -> int:
    """Hang on record 5 the first time it is seen, for longer than any test runs."""
    if x == 5 and not os.path.exists(marker):
        pathlib.Path(marker).touch()
        time.sleep(300)
    return x * x


def hang_once_reducing(marker: str, word: str, ones: Iterable[int]) -> int:
    if word == "w7" and not os.path.exists(marker):
        pathlib.Path(marker).touch()
        time.sleep(300)
    return sum(ones)


def always_hang_at(x: int) -> int:
    if x == 5:
        time.sleep(300)
    return x * x


class Flaky:
    """Raise `ConnectionError` the first time each of ``bad`` is seen (threads share it)."""

    def __init__(self, bad: set[int]) -> None:
        self._left = set(bad)
        self._lock = threading.Lock()

    def __call__(self, x: int) -> int:
        with self._lock:
            if x in self._left:
                self._left.discard(x)
                raise ConnectionError(f"flaky at {x}")
        return x * x


class FlakyReducer:
    """Raise `ConnectionError` the first time key ``w3`` is reduced."""

    def __init__(self) -> None:
        self.failed = False

    def __call__(self, word: str, ones: Iterable[int]) -> int:
        if word == "w3" and not self.failed:
            self.failed = True
            raise ConnectionError("flaky reducer")
        return sum(ones)


def no_sevens(x: int) -> int:
    if x % 7 == 0:
        raise ValueError(f"{x} is a multiple of 7")
    return x


# -- an executor that declares nothing ---------------------------------------------------


async def test_a_plain_executor_runs_a_map_reduce_job() -> None:
    stats = aiomr.JobStats()
    async with Threads() as executor:
        total = await aiomr.map_reduce(
            range(1000), square, operator.add, executor=executor, chunk_size=50, stats=stats
        )
        assert not executor.closed  # the caller's executor stays open
    assert total == sum(x * x for x in range(1000))
    assert stats.chunks == stats.chunks_done == 20
    assert stats.workers_replaced == 0
    assert set(executor.payloads) == {list}  # nothing sealed


async def test_a_plain_executor_runs_key_based_jobs() -> None:
    async with Threads() as executor:
        counts = await aiomr.map_reduce_by_key(
            WORDS, one_word, operator.add, executor=executor, chunk_size=300
        )
        grouped = await aiomr.group_by_key(
            WORDS, one_word, lambda word, ones: sum(ones), executor=executor, partitions=3
        )
    assert counts == grouped == COUNTS


async def test_a_plain_executor_reads_files(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "numbers.txt"
    path.write_text("".join(f"{n}\n" for n in range(5000)))
    async with Threads() as executor:
        total = await aiomr.map_reduce(
            aiomr.sources.files(path, split_size=4096), int, operator.add, executor=executor
        )
        lines = await aiomr.map_reduce(
            aiomr.sources.lines(path), lambda line: 1, operator.add, executor=executor
        )
    assert total == sum(range(5000))
    assert lines == 5000


async def test_a_plain_executor_skips_bad_records() -> None:
    stats = aiomr.JobStats()
    async with Threads() as executor:
        total = await aiomr.map_reduce(
            range(100), no_sevens, operator.add, executor=executor, on_error="skip", stats=stats
        )
    assert total == sum(x for x in range(100) if x % 7)
    assert stats.records_skipped == len(range(0, 100, 7))
    assert stats.records == stats.records_reduced + stats.records_skipped == 100


async def test_a_plain_executor_retries_failed_map_and_reduce_tasks() -> None:
    policy = aiomr.RetryPolicy(retry_on=(ConnectionError,), backoff=0)
    stats = aiomr.JobStats()
    async with Threads() as executor:
        total = await aiomr.map_reduce(
            range(100),
            Flaky({13, 77}),
            operator.add,
            executor=executor,
            chunk_size=10,
            retry=policy,
            stats=stats,
        )
        assert total == sum(x * x for x in range(100))
        assert stats.chunks_retried == 2
        keyed = aiomr.JobStats()
        counts = await aiomr.group_by_key(
            WORDS, one_word, FlakyReducer(), executor=executor, retry=policy, stats=keyed
        )
        assert counts == COUNTS
        assert keyed.partitions_retried == 1
        with pytest.raises(ConnectionError, match="flaky at 13"):
            await aiomr.map_reduce(range(100), Flaky({13}), operator.add, executor=executor)


async def test_a_plain_executor_serves_an_engine_with_two_jobs_at_once() -> None:
    async with Threads() as executor:
        async with aiomr.Engine(executor) as engine:
            squares, numbers = await asyncio.gather(
                engine.map_reduce(range(2000), square, operator.add, chunk_size=10),
                engine.map_reduce(range(3000), abs, operator.add, chunk_size=10),
            )
        assert (squares, numbers) == (sum(x * x for x in range(2000)), sum(range(3000)))
        assert not executor.closed  # the engine leaves a given executor open


async def test_task_timeout_is_refused_on_an_executor_that_cannot_kill_tasks() -> None:
    policy = aiomr.RetryPolicy(task_timeout=1)
    message = "task_timeout needs an executor that can stop a running task"
    async with Threads() as executor:
        with pytest.raises(ValueError, match=f"^{message}; Threads cannot "):
            await aiomr.map_reduce(range(10), square, operator.add, executor=executor, retry=policy)
        with pytest.raises(ValueError, match=message):
            await aiomr.map_reduce_by_key(
                WORDS, one_word, operator.add, executor=executor, retry=policy
            )
        assert executor.payloads == []  # refused before any task


# -- declared features are used ----------------------------------------------------------


async def test_an_engine_starts_an_executor_that_declares_start() -> None:
    async with Featured() as executor, aiomr.Engine(executor) as engine:
        assert executor.starts == 1
        await engine.start()
        assert executor.starts == 2


async def test_large_chunks_are_sealed_for_an_executor_that_declares_it() -> None:
    async with Featured() as executor:
        total = await aiomr.map_reduce(
            range(10_000), square, operator.add, executor=executor, chunk_size=2500
        )
        assert total == sum(x * x for x in range(10_000))
        assert len(executor.payloads) == 4
        assert list not in executor.payloads  # each went pickled, and came back unsealed
        await aiomr.map_reduce(range(100), square, operator.add, executor=executor)
        assert executor.payloads[-1] is list  # a small chunk is not worth sealing


async def test_an_executor_folder_folds_the_partials() -> None:
    async with Featured() as executor:
        stats = aiomr.JobStats()
        total = await aiomr.map_reduce(
            range(100), square, operator.add, executor=executor, chunk_size=10, stats=stats
        )
        ordered = await aiomr.map_reduce(
            range(100), str, operator.add, executor=executor, chunk_size=10, ordered=True
        )
    assert total == sum(x * x for x in range(100))
    assert ordered == "".join(map(str, range(100)))
    [folder] = executor.folders  # None for the ordered job: aiomr folded it
    assert folder.bound is not None
    assert folder.partials == stats.chunks == 10


async def test_an_engines_split_seconds_reaches_the_jobs_on_any_executor(
    tmp_path: pathlib.Path,
) -> None:
    # 8 MiB on one worker: four splits of 2 MiB by bytes; by time, the first is 1 MiB. Jobs
    # read split_seconds from the engine's lane; the executor's own is not consulted.
    path = tmp_path / "lines.txt"
    line = b"x" * 99 + b"\n"
    path.write_bytes(line * (8 * MIB // len(line)))

    async def splits(engine: aiomr.Engine) -> list[int]:
        sizes: list[int] = await engine.map_reduce(
            aiomr.sources.files(path, encoding=None),
            block_sizes,
            operator.add,
            mode="blocks",
            ordered=True,
        )
        return sizes

    async with Threads(1) as executor:
        async with aiomr.Engine(executor, split_seconds=30.0) as engine:
            timed = await splits(engine)
        async with aiomr.Engine(executor, split_seconds=None) as engine:
            by_bytes = await splits(engine)
    assert sum(timed) == sum(by_bytes) == path.stat().st_size
    assert 0 <= timed[0] - MIB < 100
    assert len(by_bytes) == 4


MIB = 1 << 20


def block_sizes(blocks: Iterator[bytes]) -> list[int]:
    return [sum(len(block) for block in blocks)]


@pytest.mark.usefixtures("nothing_left_running")
async def test_kill_task_stops_a_hung_map_task(tmp_path: pathlib.Path) -> None:
    policy = aiomr.RetryPolicy(task_timeout=2, backoff=0)
    stats = aiomr.JobStats()
    async with ProcessPerTask() as executor:
        total = await aiomr.map_reduce(
            range(40),
            functools.partial(hang_once_at, str(tmp_path / "hung")),
            operator.add,
            executor=executor,
            chunk_size=10,
            retry=policy,
            stats=stats,
        )
    assert total == SQUARES_40
    assert executor.killed == 1
    assert stats.chunks_retried == 1
    assert stats.workers_replaced == 1


@pytest.mark.usefixtures("nothing_left_running")
async def test_kill_task_stops_a_hung_task_through_an_engine(tmp_path: pathlib.Path) -> None:
    async with ProcessPerTask() as executor, aiomr.Engine(executor) as engine:
        total = await engine.map_reduce(
            range(40),
            functools.partial(hang_once_at, str(tmp_path / "hung")),
            operator.add,
            chunk_size=10,
            retry=aiomr.RetryPolicy(task_timeout=2, backoff=0),
        )
        assert total == SQUARES_40
        assert executor.killed == 1
        with pytest.raises(aiomr.BrokenWorkerError) as info:
            await engine.map_reduce(
                range(20),
                always_hang_at,
                operator.add,
                chunk_size=10,
                retry=aiomr.RetryPolicy(max_attempts=2, task_timeout=1.5, backoff=0),
            )
    assert "while running chunk 0 (records [0, 10) of the source)" in str(info.value)
    assert "it ran longer than 1.5 s" in str(info.value)
    assert "failed 2 times" in "\n".join(info.value.__notes__)
    assert executor.killed == 3


@pytest.mark.usefixtures("nothing_left_running")
async def test_kill_task_stops_a_hung_reduce_task(tmp_path: pathlib.Path) -> None:
    stats = aiomr.JobStats()
    async with ProcessPerTask() as executor:
        counts = await aiomr.group_by_key(
            WORDS,
            one_word,
            functools.partial(hang_once_reducing, str(tmp_path / "hung")),
            executor=executor,
            chunk_size=1000,
            partitions=2,
            retry=aiomr.RetryPolicy(task_timeout=2, backoff=0),
            stats=stats,
        )
    assert counts == COUNTS
    assert executor.killed == 1
    assert stats.partitions_retried == 1
    assert stats.workers_replaced == 1


# -- the declarations themselves ---------------------------------------------------------


def documented_defaults() -> dict[str, str]:
    """The feature table of docs/concepts/executors.md: each feature's name and default."""
    text = DOCS.read_text()
    table = text.split("| feature | default |", 1)[1].split("\n\n", 1)[0]
    found = {}
    for row in table.splitlines()[2:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        name = re.match(r"`(\w+)", cells[0])
        assert name is not None, row
        found[name.group(1)] = cells[1]
    return found


async def test_the_base_class_defaults_are_the_documented_ones() -> None:
    documented = documented_defaults()
    assert set(documented) == FEATURES
    declared = {name for name in vars(Executor) if not name.startswith("_")}
    assert declared == FEATURES | REQUIRED
    executor = Threads()
    loop = asyncio.get_running_loop()
    defaults: dict[str, object] = {
        "start": await executor.start(),
        "workers_replaced": executor.workers_replaced,
        "seals_chunks": executor.seals_chunks,
        "split_seconds": executor.split_seconds,
        "can_kill_tasks": executor.can_kill_tasks,
        "kill_task": executor.kill_task(loop.create_future(), ran_for=1.0),
        "open_folder": executor.open_folder(operator.add, initial=0, ordered=False),
        "runs_coroutines": executor.runs_coroutines,
        "same_machine": executor.same_machine,
        "in_process": executor.in_process,
    }
    assert executor.name == "Threads"
    assert documented["name"] == "the class name"
    for name, value in defaults.items():
        shown = "does nothing" if value is None and name == "start" else f"`{value!r}`"
        assert documented[name].removeprefix("returns ") == shown, name
    assert executor.ship(square).fn is square
    await executor.aclose()


def test_a_lane_passes_each_feature_on_by_name() -> None:
    # Declared on the lane itself, not found by __getattr__: a feature added to Executor
    # and not passed on here would silently fall back to its default on an engine.
    assert "__getattr__" not in vars(Lane)
    assert set(vars(Lane)) >= FEATURES


async def test_a_lane_reports_what_its_executor_declares() -> None:
    async with Featured(split_seconds=2.0) as featured, Threads() as plain:
        for executor, declares in ((featured, True), (plain, False)):
            lane = FairScheduler(executor, split_seconds=None).open_lane()
            assert lane.seals_chunks is declares
            assert lane.can_kill_tasks is False
            assert lane.split_seconds is None  # the engine's, not the executor's
            assert lane.workers_replaced == 0
            folder = lane.open_folder(operator.add, initial=0, ordered=False)
            assert (folder is not None) is declares
            await lane.start()
            lane.close()
        assert featured.starts == 1
    async with ProcessPerTask() as killing:
        lane = FairScheduler(killing).open_lane()
        assert lane.can_kill_tasks is True
        assert lane.kill_task(asyncio.get_running_loop().create_future(), ran_for=1) is False
        lane.close()
