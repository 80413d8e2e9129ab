"""Real faults: workers that die, chunks that kill them, errors worth another run."""

from __future__ import annotations

import asyncio
import functools
import json
import operator
import os
import pathlib
import signal
import time

import pytest

import aiomr
from aiomr.executors._proc import oom_kills
from tests.conftest import alive

pytestmark = pytest.mark.usefixtures("nothing_left_running")

N = 400
EXPECTED = sum(x * x for x in range(N))
EXPECTED_40 = sum(x * x for x in range(40))


def accounted(stats: aiomr.JobStats, records: int) -> None:
    """Every record read was reduced or skipped, and none twice."""
    assert stats.records == records
    assert stats.records == stats.records_reduced + stats.records_skipped


def die_once_at(marker: str, fatal: int, x: int) -> int:
    """Kill this worker the first time record ``fatal`` is seen (a marker file makes it once)."""
    if x == fatal and not os.path.exists(marker):
        pathlib.Path(marker).touch()
        os._exit(17)
    return x * x


def always_die_at(fatal: int, x: int) -> int:
    """Crash this worker on record ``fatal``, every time (as a failed C assertion would)."""
    if x == fatal:
        os.abort()
    return x * x


def killed_at(directory: str, fatal: int, times: int, x: int) -> int:
    """SIGKILL this worker on record ``fatal``, the first ``times`` times it is seen: to the
    pool, a kill from outside (no OOM kill happens)."""
    if x == fatal:
        kills = pathlib.Path(directory) / "kills"
        count = len(kills.read_text()) if kills.exists() else 0
        if count < times:
            kills.write_text("x" * (count + 1))
            os.kill(os.getpid(), signal.SIGKILL)
    return x * x


needs_oom_count = pytest.mark.skipif(
    oom_kills() is None,
    reason="the kernel's OOM kill count (/proc/vmstat oom_kill) cannot be read here, so a "
    "SIGKILL from outside cannot be told from the OOM killer",
)


def fail_twice_then_succeed(directory: str, x: int) -> int:
    if x == 7:
        tries = pathlib.Path(directory) / "tries"
        count = len(tries.read_text()) if tries.exists() else 0
        tries.write_text("x" * (count + 1))
        if count < 2:
            raise ConnectionError(f"flaky, try {count + 1}")
    return x * x


def slow_square(x: int) -> int:
    time.sleep(0.002)
    return x * x


async def test_a_worker_that_dies_once_is_replaced_and_its_chunk_rerun(
    tmp_path: pathlib.Path,
) -> None:
    stats = aiomr.JobStats()
    mapper = functools.partial(die_once_at, str(tmp_path / "died"), 123)
    async with aiomr.Engine(max_workers=2) as engine:
        total = await engine.map_reduce(range(N), mapper, operator.add, chunk_size=10, stats=stats)
        assert total == EXPECTED
        assert stats.chunks_retried >= 1
        assert stats.workers_replaced >= 1
        accounted(stats, N)
        assert stats.chunks_done == stats.chunks == N // 10
        # The engine keeps serving.
        assert await engine.map_reduce(range(1, 11), abs, operator.add) == 55


async def test_a_poison_chunk_is_reported_after_max_attempts() -> None:
    policy = aiomr.RetryPolicy(max_attempts=2, backoff=0)
    with pytest.raises(aiomr.BrokenWorkerError) as info:
        await aiomr.map_reduce(
            range(50),
            functools.partial(always_die_at, 25),
            operator.add,
            chunk_size=10,
            retry=policy,
            max_workers=2,
        )
    message = str(info.value)
    assert "a worker process died while running chunk 2 (records [20, 30) of the source)" in message
    assert any("failed 2 times (max_attempts=2); giving up" in n for n in info.value.__notes__)


@needs_oom_count
async def test_a_worker_killed_from_outside_does_not_use_up_attempts(
    tmp_path: pathlib.Path,
) -> None:
    # Two SIGKILLs while the OOM killer did nothing: not the chunk's fault, so even with a
    # single attempt allowed the job completes, exactly.
    stats = aiomr.JobStats()
    total = await aiomr.map_reduce(
        range(N),
        functools.partial(killed_at, str(tmp_path), 25, 2),
        operator.add,
        chunk_size=10,
        retry=aiomr.RetryPolicy(max_attempts=1),
        max_workers=2,
        stats=stats,
    )
    assert total == EXPECTED
    assert (tmp_path / "kills").read_text() == "xx"
    assert stats.chunks_retried >= 2
    assert stats.workers_replaced >= 2
    accounted(stats, N)


@needs_oom_count
async def test_a_chunk_that_keeps_sigkilling_its_worker_is_reported_after_max_kills(
    tmp_path: pathlib.Path,
) -> None:
    with pytest.raises(aiomr.BrokenWorkerError) as info:
        await aiomr.map_reduce(
            range(50),
            functools.partial(killed_at, str(tmp_path), 25, 1000),
            operator.add,
            chunk_size=10,
            retry=aiomr.RetryPolicy(max_attempts=1, max_kills=2),
            max_workers=2,
        )
    assert "a worker process died while running chunk 2 (records [20, 30)" in str(info.value)
    assert any(
        "to a SIGKILL from outside or a stop 3 times (max_kills=2); giving up" in n
        for n in info.value.__notes__
    )
    assert (tmp_path / "kills").read_text() == "xxx"


def test_max_kills_is_checked() -> None:
    with pytest.raises(ValueError, match="max_kills must be >= 0"):
        aiomr.RetryPolicy(max_kills=-1)
    with pytest.raises(TypeError, match="max_kills must be an int"):
        aiomr.RetryPolicy(max_kills=1.5)  # type: ignore[arg-type]


async def test_listed_exceptions_are_retried_with_backoff(tmp_path: pathlib.Path) -> None:
    stats = aiomr.JobStats()
    mapper = functools.partial(fail_twice_then_succeed, str(tmp_path))
    policy = aiomr.RetryPolicy(max_attempts=3, retry_on=(ConnectionError,), backoff=0.01)
    total = await aiomr.map_reduce(
        range(20), mapper, operator.add, chunk_size=5, retry=policy, executor="thread", stats=stats
    )
    assert total == sum(x * x for x in range(20))
    assert stats.chunks_retried == 2
    accounted(stats, 20)
    # Unlisted, or out of attempts: the error reaches the caller as itself.
    (tmp_path / "tries").unlink()
    with pytest.raises(ConnectionError, match="flaky, try 2"):
        await aiomr.map_reduce(
            range(20),
            mapper,
            operator.add,
            chunk_size=5,
            retry=aiomr.RetryPolicy(max_attempts=2, retry_on=(ConnectionError,), backoff=0),
            executor="thread",
        )


async def test_workers_killed_from_outside_mid_job() -> None:
    stats = aiomr.JobStats()
    async with aiomr.Engine(max_workers=2) as engine:
        job = asyncio.create_task(
            engine.map_reduce(range(3000), slow_square, operator.add, chunk_size=50, stats=stats)
        )
        killed: set[int] = set()
        while len(killed) < 2 and not job.done():
            if stats.chunks_done >= 5 * (len(killed) + 1):
                executor = engine.executor
                assert isinstance(executor, aiomr.executors.ProcessExecutor)
                victims = [pid for pid in executor.worker_pids() if pid not in killed]
                if victims:
                    os.kill(victims[0], signal.SIGKILL)
                    killed.add(victims[0])
            await asyncio.sleep(0.01)
        total = await job
    assert total == sum(x * x for x in range(3000))
    assert len(killed) == 2
    assert stats.workers_replaced >= 2
    # Only a chunk that was running on a killed worker runs again: one each at most (a worker
    # killed between two chunks costs none).
    assert stats.chunks_retried <= 2
    accounted(stats, 3000)
    assert alive(killed) == []


def test_retry_policy_arguments() -> None:
    with pytest.raises(ValueError, match="max_attempts must be >= 1"):
        aiomr.RetryPolicy(max_attempts=0)
    with pytest.raises(TypeError, match="retry_on must be a tuple of exception types"):
        aiomr.RetryPolicy(retry_on=ValueError)  # type: ignore[arg-type]
    policy = aiomr.RetryPolicy(backoff=0.1, max_backoff=0.3)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.3, 0.3]


def parse_value(row: list[str]) -> int:
    return int(row[1])


def write_tsv_with_bad_rows(path: pathlib.Path, rows: int) -> tuple[int, list[int]]:
    """Write ``rows`` lines, every 100th malformed; return the good total and bad line numbers."""
    total = 0
    bad_lines = []
    with path.open("w") as f:
        for n in range(1, rows + 1):
            if n % 100 == 0:
                f.write(f"key{n}\tnot-a-number\n" if n % 200 else f"key{n}\n")
                bad_lines.append(n)
            else:
                f.write(f"key{n}\t{n}\n")
                total += n
    return total, bad_lines


@pytest.mark.parametrize("source_kind", ["files", "lines"])
async def test_one_percent_malformed_records_are_skipped_and_accounted(
    engine: aiomr.Engine, tmp_path: pathlib.Path, source_kind: str
) -> None:
    path = tmp_path / "rows.tsv"
    total, bad_lines = write_tsv_with_bad_rows(path, 5000)
    if source_kind == "files":
        source: object = aiomr.sources.files(path, split_size=20_000, format="tsv", fields=2)
    else:
        source = aiomr.sources.lines(path, format="tsv", fields=2)
    stats = aiomr.JobStats()
    dead = tmp_path / "dead.jsonl"
    result = await engine.map_reduce(
        source,  # type: ignore[arg-type]
        parse_value,
        operator.add,
        on_error="collect",
        dead_letter=dead,
        stats=stats,
    )
    assert result == total
    assert stats.records_skipped == len(bad_lines) == 50
    accounted(stats, 5000)
    assert len(stats.bad_records) == 50
    assert len(stats.bad_sample) == 20
    written = [json.loads(line) for line in dead.read_text().splitlines()]
    assert len(written) == 50
    if source_kind == "lines":
        assert sorted(int(w["location"].rsplit(":", 1)[1]) for w in written) == bad_lines
        assert {w["error"].split(":")[0] for w in written} == {"RecordError", "ValueError"}
    else:
        content = path.read_bytes()
        starts = [0, *(i + 1 for i, b in enumerate(content) if b == 10)]
        assert sorted(w["location"] for w in written) == sorted(
            f"{path}:{n} (byte {starts[n - 1]})" for n in bad_lines
        )


async def test_skip_keeps_a_bounded_sample_and_raise_stays_the_default(
    engine: aiomr.Engine,
) -> None:
    def picky(x: int) -> int:
        if x % 7 == 0:
            raise ValueError(f"multiple of seven: {x}")
        return x

    stats = aiomr.JobStats()
    total = await engine.map_reduce(
        range(1000), picky, operator.add, on_error="skip", chunk_size=50, stats=stats
    )
    assert total == sum(x for x in range(1000) if x % 7)
    assert stats.records_skipped == len(range(0, 1000, 7))
    accounted(stats, 1000)
    assert len(stats.bad_sample) == 20
    assert stats.bad_records == []
    for bad in stats.bad_sample:
        n = int(bad.location.split()[1])
        assert bad.location == f"record {n} of the source"
        assert n % 7 == 0
        assert bad.record == repr(n)
        assert bad.error == f"ValueError: multiple of seven: {n}"
    with pytest.raises(ValueError, match=r"multiple of seven: \d+"):
        await engine.map_reduce(range(1000), picky, operator.add)


async def test_on_error_arguments() -> None:
    with pytest.raises(ValueError, match="on_error must be 'raise', 'skip' or 'collect'"):
        await aiomr.map_reduce([1], abs, operator.add, on_error="ignore")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="need mode='record'"):
        await aiomr.map_reduce([1], len, operator.add, mode="chunk", on_error="skip")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="dead_letter= needs on_error"):
        await aiomr.map_reduce([1], abs, operator.add, dead_letter="x.jsonl")


def hang_once_at(marker: str, x: int) -> int:
    if x == 5 and not os.path.exists(marker):
        pathlib.Path(marker).touch()
        time.sleep(120)
    return x * x


def always_hang_at(x: int) -> int:
    if x == 5:
        time.sleep(120)
    return x * x


async def test_a_hung_task_is_killed_after_task_timeout_and_rerun(tmp_path: pathlib.Path) -> None:
    stats = aiomr.JobStats()
    policy = aiomr.RetryPolicy(task_timeout=1.0, backoff=0)
    async with aiomr.Engine(max_workers=2) as engine:
        total = await engine.map_reduce(
            range(40),
            functools.partial(hang_once_at, str(tmp_path / "hung")),
            operator.add,
            chunk_size=4,
            retry=policy,
            stats=stats,
        )
        assert total == sum(x * x for x in range(40))
        assert stats.chunks_retried >= 1
        assert stats.workers_replaced >= 1
        accounted(stats, 40)
        with pytest.raises(aiomr.BrokenWorkerError) as info:
            await engine.map_reduce(
                range(40),
                always_hang_at,
                operator.add,
                chunk_size=4,
                retry=aiomr.RetryPolicy(max_attempts=2, task_timeout=0.5, backoff=0),
            )
        assert "while running chunk 1 (records [4, 8) of the source)" in str(info.value)
        assert "it ran longer than task_timeout=0.5s" in str(info.value)
        assert "failed 2 times" in "\n".join(info.value.__notes__)


async def test_task_timeout_needs_a_process_executor() -> None:
    with pytest.raises(
        ValueError,
        match=r"^task_timeout needs an executor that can stop a running task; ThreadExecutor "
        r"cannot \(use the process executor\)$",
    ):
        await aiomr.map_reduce(
            range(3), abs, operator.add, executor="thread", retry=aiomr.RetryPolicy(task_timeout=1)
        )


class Locked:
    """Cannot be pickled: it holds a lock."""

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()


def to_locked(x: int) -> Locked:
    return Locked()


async def test_records_and_results_that_cannot_be_pickled_name_the_chunk(
    engine: aiomr.Engine,
) -> None:
    with pytest.raises(
        aiomr.UnpicklableError,
        match=r"^chunk 0 \(records \[0, 2\) of the source\): one of its records cannot be pickled",
    ) as info:
        await engine.map_reduce([Locked(), Locked()], id, operator.add, chunk_size=2)
    assert "lock" in str(info.value)
    with pytest.raises(
        aiomr.UnpicklableError,
        match=r"^chunk 0 \(records \[0, 2\) of the source\): its partial result cannot be pickled",
    ):
        await engine.map_reduce([1, 2], to_locked, lambda a, b: a, chunk_size=2)


async def test_an_overall_timeout_ends_a_job_whose_task_hangs() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.0):
            await aiomr.map_reduce(
                range(40), always_hang_at, operator.add, chunk_size=4, max_workers=2
            )
    # The hung worker was terminated with the pool the call owned, not waited for.
    assert time.monotonic() - started < 30


def die_then_linger_at(directory: str, x: int) -> int:
    """Record 50 kills its worker on its first run and lingers on its second."""
    if x == 50:
        died, lingering = pathlib.Path(directory, "died"), pathlib.Path(directory, "lingering")
        if not died.exists():
            died.touch()
            os._exit(5)
        if not lingering.exists():
            lingering.write_text(str(os.getpid()))
            time.sleep(3)
    return x


async def test_a_chunk_blamed_once_is_not_blamed_for_a_later_death(
    tmp_path: pathlib.Path,
) -> None:
    # Record 50 kills its worker (blamed: its second run is its last allowed one), then,
    # while that second run lingers, another worker is killed from outside. The chunk only
    # shared the pool that time, so it runs a third time for free and the job succeeds.
    stats = aiomr.JobStats()
    mapper = functools.partial(die_then_linger_at, str(tmp_path))
    policy = aiomr.RetryPolicy(max_attempts=2, backoff=0)
    async with aiomr.Engine(max_workers=2) as engine:
        job = asyncio.create_task(
            engine.map_reduce(
                range(100), mapper, operator.add, chunk_size=10, retry=policy, stats=stats
            )
        )
        lingering = tmp_path / "lingering"
        while not lingering.exists() or not lingering.read_text():
            await asyncio.sleep(0.01)
        executor = engine.executor
        assert isinstance(executor, aiomr.executors.ProcessExecutor)
        busy = int(lingering.read_text())
        # Another job keeps the other worker busy (a new pool starts workers as work
        # comes); that worker is the one killed.
        side = asyncio.create_task(
            engine.map_reduce(range(400), slow_square, operator.add, chunk_size=20)
        )
        while not (others := [p for p in executor.worker_pids() if p != busy]):
            await asyncio.sleep(0.01)
        os.kill(others[0], signal.SIGKILL)
        assert await job == sum(range(100))
        assert await side == sum(x * x for x in range(400))
    assert stats.workers_replaced >= 2
    accounted(stats, 100)


class SlowToLoad:
    """A mapper whose unpickling takes 1.5 s: a job whose module is slow to import."""

    def __call__(self, x: int) -> int:
        return x * x

    def __getstate__(self) -> dict[str, int]:
        return {}

    def __setstate__(self, state: dict[str, int]) -> None:
        time.sleep(1.5)


async def test_task_timeout_does_not_count_loading_the_jobs_code() -> None:
    # Every new worker pays the load on its first task; were it timed, a replacement for a
    # killed worker would be killed again, and again.
    policy = aiomr.RetryPolicy(task_timeout=1.0, max_attempts=1)
    stats = aiomr.JobStats()
    total = await aiomr.map_reduce(
        range(40), SlowToLoad(), operator.add, max_workers=2, retry=policy, stats=stats
    )
    assert total == EXPECTED_40
    assert stats.workers_replaced == 0
