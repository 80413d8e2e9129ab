"""Many jobs on one engine: they share the workers fairly, and the engine stays healthy."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import operator
import os
import pathlib
import signal
import time
from collections.abc import AsyncIterator, Iterator

import psutil
import pytest

import aiomr
from aiomr._chunker import FIRST_TIMED_SPLIT
from tests.conftest import alive

pytestmark = pytest.mark.usefixtures("nothing_left_running")


def slow_square(x: int) -> int:
    time.sleep(0.002)
    return x * x


async def endless() -> AsyncIterator[int]:
    n = 0
    while True:
        yield n
        n += 1


async def big_job_running(
    engine: aiomr.Engine, stats: aiomr.JobStats, **options: int
) -> asyncio.Task[int]:
    job = asyncio.create_task(
        engine.map_reduce(
            endless(), slow_square, operator.add, chunk_size=10, stats=stats, **options
        )
    )
    while stats.chunks_done < 5:
        await asyncio.sleep(0.01)
    return job


async def big_chunks_during_a_small_job(engine: aiomr.Engine, **big_options: int) -> int:
    """How many chunks a never-ending job finishes while a 20-chunk job runs beside it."""
    big = aiomr.JobStats()
    job = await big_job_running(engine, big, **big_options)
    try:
        before = big.chunks_done
        small = await engine.map_reduce(range(200), slow_square, operator.add, chunk_size=10)
        assert small == sum(x * x for x in range(200))
        return big.chunks_done - before
    finally:
        job.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job


async def test_a_small_job_is_not_queued_behind_a_big_one() -> None:
    async with aiomr.Engine(max_workers=2) as engine:
        during = await big_chunks_during_a_small_job(engine)
    # The jobs share the workers by time and their chunks take the same time: the big job
    # finishes about as many chunks as the small one needs (20), not the hundreds it would
    # if it could fill the pool's queue.
    assert during <= 2 * 20 + 8, during


async def test_max_in_flight_caps_what_one_job_takes() -> None:
    async with aiomr.Engine(max_workers=2) as engine:
        during = await big_chunks_during_a_small_job(engine, max_in_flight=1)
    # One chunk at a time: the big job holds at most one worker, the small job the other.
    assert during <= 20 + 4, during


def die_at(marker: str, x: int) -> int:
    if x == 3 and not os.path.exists(marker):
        pathlib.Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return x


async def test_hundreds_of_jobs_with_cancellations_and_lost_workers(
    tmp_path: pathlib.Path,
) -> None:
    caller = psutil.Process()
    jobs_dir = tmp_path / "jobs"
    jobs_dir.mkdir()
    async with aiomr.Engine(max_workers=2) as engine:
        executor = engine.executor
        assert isinstance(executor, aiomr.executors.ProcessExecutor)
        rss: list[int] = []
        for n in range(240):
            if n % 10 == 3:  # cancelled mid-way
                stats = aiomr.JobStats()
                job = asyncio.create_task(
                    engine.map_reduce(endless(), abs, operator.add, stats=stats)
                )
                while stats.chunks_done < 2:
                    await asyncio.sleep(0.001)
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job
            elif n % 40 == 7:  # a worker dies under it
                mapper = functools.partial(die_at, str(tmp_path / f"died-{n}"))
                assert await engine.map_reduce(range(10), mapper, operator.add) == 45
            elif n % 2:
                spec = aiomr.ReduceByKey(lambda x: [(x % 3, 1)], operator.add)
                counts = await engine.run_by_key(range(300), spec, temp_dir=str(jobs_dir))
                assert counts == {0: 100, 1: 100, 2: 100}
            else:
                assert await engine.map_reduce(range(100), abs, operator.add) == 4950
            # Never more workers than asked for (a new pool starts them as work comes).
            assert 1 <= len(executor.worker_pids()) <= 2
            if n % 40 == 39:
                rss.append(caller.memory_info().rss)
        assert executor.workers_replaced >= 6
        workers = executor.worker_pids()
        assert 1 <= len(workers) <= 2
    assert alive(workers) == []
    assert list(jobs_dir.iterdir()) == []
    # Flat memory: after the first rounds warmed everything up, no steady growth.
    growth = rss[-1] - rss[1]
    assert growth < 40 * 1024 * 1024, [r // 1024 // 1024 for r in rss]


def nap(seconds: float, x: int) -> int:
    time.sleep(seconds)
    return x


async def endless_job(
    engine: aiomr.Engine, seconds: float, stats: aiomr.JobStats, **options: int
) -> asyncio.Task[int]:
    """Start a job of one-record tasks of ``seconds`` each that never ends by itself."""
    mapper = functools.partial(nap, seconds)
    return asyncio.create_task(
        engine.map_reduce(endless(), mapper, operator.add, chunk_size=1, stats=stats, **options)
    )


async def stop(*jobs: asyncio.Task[int]) -> None:
    for job in jobs:
        job.cancel()
    for job in jobs:
        with contextlib.suppress(asyncio.CancelledError):
            await job


async def wait_chunks(stats: aiomr.JobStats, count: int) -> None:
    while stats.chunks_done < count:
        await asyncio.sleep(0.005)


async def test_a_job_of_short_tasks_gets_its_share_of_worker_time() -> None:
    async with aiomr.Engine(max_workers=2) as engine:
        big = aiomr.JobStats()
        job = await endless_job(engine, 0.3, big)
        try:
            await wait_chunks(big, 2)
            before = big.task_seconds
            small = aiomr.JobStats()
            mapper = functools.partial(nap, 0.03)
            total = await engine.map_reduce(
                range(40), mapper, operator.add, chunk_size=1, stats=small
            )
            big_seconds = big.task_seconds - before
        finally:
            await stop(job)
    assert total == sum(range(40))
    # Shared by worker time, each job holds about one of the two workers while both run: the
    # small job gets about half (the big job's tasks that were running when it arrived
    # count too, in full). Shared task by task, as the pool's own queue would, it got a
    # tenth: one 30 ms task for every 300 ms task.
    share = small.task_seconds / (small.task_seconds + big_seconds)
    assert share > 0.25, (small.task_seconds, big_seconds)


async def test_a_late_job_gets_no_credit_for_time_it_was_not_running() -> None:
    async with aiomr.Engine(max_workers=2) as engine:
        first, second = aiomr.JobStats(), aiomr.JobStats()
        early = await endless_job(engine, 0.02, first)
        late: asyncio.Task[int] | None = None
        try:
            while first.task_seconds < 3.0:  # a long head start, alone
                await asyncio.sleep(0.01)
            late = await endless_job(engine, 0.02, second)
            await wait_chunks(second, 1)
            before = first.chunks_done
            await wait_chunks(second, 41)
            during = first.chunks_done - before
        finally:
            await stop(early, *([late] if late is not None else []))
    # Even shares from the moment the second job arrives: the first job goes on about as
    # fast. Had the newcomer started from zero worker time, it would hold both workers
    # for the first job's 3 s head start (150 of its tasks) before the first ran again.
    assert during >= 10, during


def interval(seconds: float, records: list[int]) -> list[tuple[float, float]]:
    started = time.time()
    time.sleep(seconds)
    return [(started, time.time())]


async def test_max_workers_caps_the_workers_one_job_holds() -> None:
    async with aiomr.Engine(max_workers=2) as engine:
        mapper = functools.partial(interval, 0.02)
        spans = await engine.map_reduce(
            range(30), mapper, operator.add, mode="chunk", chunk_size=1, max_workers=1
        )
        both = await engine.map_reduce(range(30), mapper, operator.add, mode="chunk", chunk_size=1)
    spans.sort()
    assert len(spans) == 30
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))
    both.sort()
    assert any(a_end > b_start for (_, a_end), (b_start, _) in itertools.pairwise(both))


async def test_max_workers_leaves_the_other_workers_to_other_jobs() -> None:
    async with aiomr.Engine(max_workers=2) as engine:
        capped = aiomr.JobStats()
        job = await endless_job(engine, 0.05, capped, max_workers=1)
        try:
            await wait_chunks(capped, 2)
            before = capped.chunks_done
            started = time.monotonic()
            mapper = functools.partial(nap, 0.05)
            small = aiomr.JobStats()
            await engine.map_reduce(range(20), mapper, operator.add, chunk_size=1, stats=small)
            elapsed = time.monotonic() - started
            during = capped.chunks_done - before
        finally:
            await stop(job)
    # The capped job never takes the second worker, so the other job holds it throughout
    # and the capped job keeps its one worker: both go on, neither waits for the other.
    assert during >= 3, during
    assert small.task_seconds >= 0.4 * elapsed, (small.task_seconds, elapsed)


@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)]
)
async def test_max_workers_is_checked(value: object, error: type[Exception]) -> None:
    async with aiomr.Engine("thread", max_workers=2) as engine:
        with pytest.raises(error, match="max_workers"):
            await engine.map_reduce(range(3), abs, operator.add, max_workers=value)  # type: ignore[arg-type]
        with pytest.raises(error, match="max_workers"):
            await engine.run_by_key(
                range(3),
                aiomr.ReduceByKey(lambda x: [(x, 1)], operator.add),
                max_workers=value,  # type: ignore[arg-type]
            )


def note_run(directory: str, seconds: float, x: int) -> int:
    pathlib.Path(directory, f"{x}-{os.getpid()}-{time.monotonic_ns()}").touch()
    time.sleep(seconds)
    return x


async def test_cancelling_a_job_drops_its_waiting_tasks(tmp_path: pathlib.Path) -> None:
    async with aiomr.Engine(max_workers=2) as engine:
        other = aiomr.JobStats()
        busy = await endless_job(engine, 0.05, other)
        stats = aiomr.JobStats()
        mapper = functools.partial(note_run, str(tmp_path), 0.05)
        job = asyncio.create_task(
            engine.map_reduce(endless(), mapper, operator.add, chunk_size=1, stats=stats)
        )
        try:
            await wait_chunks(stats, 3)
            assert stats.chunks - stats.chunks_done >= 2  # some wait for a worker
            await stop(job)
            ran = len(list(tmp_path.iterdir()))
            before = other.chunks_done
            await wait_chunks(other, before + 6)  # every worker has moved on since
        finally:
            await stop(busy)
    # At most the tasks already running when the job was cancelled ran to their end; none
    # of those waiting for a worker started afterwards.
    assert len(list(tmp_path.iterdir())) <= ran + 2


def read_slowly(seconds_per_mib: float, blocks: Iterator[bytes]) -> list[int]:
    """Read a split at a known speed; return its size."""
    size = sum(len(block) for block in blocks)
    time.sleep(seconds_per_mib * size / MIB)
    return [size]


MIB = 1 << 20


def lines_file(path: pathlib.Path, mib: int) -> str:
    line = b"x" * 99 + b"\n"
    path.write_bytes(line * (mib * MIB // len(line)))
    return str(path)


async def split_sizes(engine: aiomr.Engine, path: str, **options: int) -> list[int]:
    sizes: list[int] = await engine.map_reduce(
        aiomr.sources.files([path], encoding=None, **options),
        functools.partial(read_slowly, 0.1),
        operator.add,
        mode="blocks",
        ordered=True,
        max_workers=1,
    )
    return sizes


async def test_a_shared_engine_sizes_splits_by_time(tmp_path: pathlib.Path) -> None:
    # 8 MiB read at 10 MiB/s on one worker: the automatic size is 2 MiB (4 splits per
    # worker). With split_seconds=0.025 the first splits are 1 MiB and the later ones hold
    # what 25 ms reads, 256 KiB, or less when the machine is slow: never more.
    path = lines_file(tmp_path / "lines.txt", 8)
    async with aiomr.Engine(max_workers=2, split_seconds=0.025) as engine:
        timed = await split_sizes(engine, path)
        fixed = await split_sizes(engine, path, split_size=3 * MIB)
    async with aiomr.Engine(max_workers=2, split_seconds=None) as engine:
        by_bytes = await split_sizes(engine, path)
    assert sum(timed) == sum(fixed) == sum(by_bytes) == os.path.getsize(path)
    # Each split ends at the first line end (every 100 bytes) at or after its size. The job
    # keeps two splits in flight (one worker): both are cut before any was measured.
    assert all(0 <= size - FIRST_TIMED_SPLIT < 100 for size in timed[:2])
    assert len(timed) > 8
    assert max(timed[2:-1]) < MIB // 4 + 100
    assert len(fixed) == 3
    assert all(0 <= size - 3 * MIB < 100 for size in fixed[:2])
    assert len(by_bytes) == 4
    assert all(abs(size - 2 * MIB) < 200 for size in by_bytes)


@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (-0.5, ValueError), (True, TypeError), ("1", TypeError)]
)
def test_split_seconds_is_checked(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="split_seconds must be"):
        aiomr.Engine(executor="inline", split_seconds=value)  # type: ignore[arg-type]
