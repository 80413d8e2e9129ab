"""Many jobs on one engine: they share the workers fairly, and the engine stays healthy."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import operator
import os
import pathlib
import signal
import time
from collections.abc import AsyncIterator

import psutil
import pytest

import aiomr
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
    # Each job keeps at most its window (2 per worker) of chunks in the pool's queue, so the
    # queue alternates between them: the big job finishes about as many chunks as the small
    # one needs (20), not the hundreds it would if it could fill the queue.
    assert during <= 2 * 20 + 8, during


async def test_max_in_flight_caps_what_one_job_takes() -> None:
    async with aiomr.Engine(max_workers=2) as engine:
        during = await big_chunks_during_a_small_job(engine, max_in_flight=1)
    # One chunk at a time: the big job holds one worker, the small job has the other.
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
