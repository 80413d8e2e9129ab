"""The Engine: many jobs on one warm pool, at once; closing."""

from __future__ import annotations

import asyncio
import operator
import pathlib
import threading
import time

import pytest

import aiomr
from tests.conftest import alive


def square(x: int) -> int:
    return x * x


async def test_many_concurrent_jobs_share_one_engine(engine: aiomr.Engine) -> None:
    sizes = [0, 1, 10, 1000, 5000, 33]
    results = await asyncio.gather(
        *(engine.map_reduce(range(n), square, operator.add, initial=0, chunk_size=7) for n in sizes)
    )
    assert results == [sum(x * x for x in range(n)) for n in sizes]


async def test_engine_context_starts_workers_and_closes_them() -> None:
    async with aiomr.Engine(max_workers=2) as engine:
        assert engine.max_workers == 2
        executor = engine.executor
        assert isinstance(executor, aiomr.executors.ProcessExecutor)
        assert len(executor.worker_pids()) == 2
        assert await engine.map_reduce(range(1, 11), square, operator.add) == 385
    assert engine.closed
    assert executor.closed


async def test_aclose_waits_for_running_jobs() -> None:
    engine = aiomr.Engine("thread", max_workers=2)
    release = threading.Event()

    def gated(x: int) -> int:
        release.wait(10)
        return x

    job = asyncio.create_task(engine.map_reduce(range(4), gated, operator.add, chunk_size=1))
    await asyncio.sleep(0)
    closing = asyncio.create_task(engine.aclose())
    await asyncio.sleep(0.05)
    assert not closing.done()  # still draining
    release.set()
    assert await job == 6
    await closing
    with pytest.raises(aiomr.ClosedResourceError):
        await engine.map_reduce(range(3), square, operator.add)


def slow_square(x: int) -> int:
    time.sleep(0.01)
    return x * x


async def test_aclose_with_cancel_stops_running_jobs(tmp_path: pathlib.Path) -> None:
    engine = aiomr.Engine(max_workers=2)
    await engine.start()
    executor = engine.executor
    assert isinstance(executor, aiomr.executors.ProcessExecutor)
    workers = executor.worker_pids()
    plain = asyncio.create_task(engine.map_reduce(range(100_000), slow_square, operator.add))
    spec = aiomr.ReduceByKey(lambda x: [(x % 7, x)], operator.add)
    keyed = asyncio.create_task(
        engine.run_by_key(range(100_000), spec, chunk_size=100, temp_dir=str(tmp_path))
    )
    while not any(tmp_path.iterdir()):  # both jobs are under way
        await asyncio.sleep(0.01)
    await engine.aclose(cancel=True)
    for job in (plain, keyed):
        with pytest.raises(aiomr.ClosedResourceError, match=r"aclose\(cancel=True\)"):
            await job
    assert list(tmp_path.iterdir()) == []
    assert alive(workers) == []


async def test_drain_then_cancel_what_is_left() -> None:
    engine = aiomr.Engine("thread", max_workers=2)
    quick = asyncio.create_task(engine.map_reduce(range(10), square, operator.add))
    endless = asyncio.create_task(
        engine.map_reduce(range(10**7), slow_square, operator.add, chunk_size=10)
    )
    await asyncio.sleep(0.05)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await asyncio.shield(engine.aclose())
    assert await quick == 285  # drained
    assert not endless.done()
    await engine.aclose(cancel=True)
    with pytest.raises(aiomr.ClosedResourceError):
        await endless
    assert engine.executor.closed


async def test_a_job_cancelled_by_its_caller_during_aclose_stays_cancelled() -> None:
    engine = aiomr.Engine("thread", max_workers=2)
    job = asyncio.create_task(engine.map_reduce(range(10**6), square, operator.add, chunk_size=10))
    await asyncio.sleep(0.05)
    job.cancel()
    await engine.aclose(cancel=True)
    with pytest.raises(asyncio.CancelledError):
        await job


async def test_reducer_runs_off_the_event_loop_thread(engine: aiomr.Engine) -> None:
    loop_thread = threading.get_ident()
    threads: set[int] = set()

    def merge(a: list[int], b: list[int]) -> list[int]:
        threads.add(threading.get_ident())
        return a + b

    result = await engine.map_reduce(range(50), lambda x: [x], merge, ordered=True, chunk_size=5)
    assert result == list(range(50))
    assert threads
    assert loop_thread not in threads


def die_once(marker: str, x: int) -> int:
    import os

    if x == 5 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(3)
    return x


async def test_engine_survives_a_dead_worker(tmp_path: object) -> None:
    import functools
    import pathlib

    marker = str(pathlib.Path(str(tmp_path)) / "died")
    async with aiomr.Engine(max_workers=2) as engine:
        stats = aiomr.JobStats()
        total = await engine.map_reduce(
            range(10), functools.partial(die_once, marker), operator.add, chunk_size=1, stats=stats
        )
        # The pool the dead worker broke is replaced and the lost chunks run again.
        assert total == 45
        assert stats.chunks_retried >= 1
        # Without retries, the loss reaches the caller, and the engine still serves.
        pathlib.Path(marker).unlink()
        with pytest.raises(aiomr.BrokenWorkerError, match="a worker process died while running"):
            await engine.map_reduce(
                range(10),
                functools.partial(die_once, marker),
                operator.add,
                chunk_size=1,
                retry=aiomr.RetryPolicy(max_attempts=1),
            )
        assert await engine.map_reduce(range(1, 11), square, operator.add) == 385
