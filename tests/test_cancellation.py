"""Cancellation and timeouts: the source is closed, outstanding work stops, no worker is left."""

from __future__ import annotations

import asyncio
import operator
import time
import tracemalloc
from collections.abc import AsyncIterator

import pytest

import aiomr
from tests.conftest import alive


def slow_identity(x: int) -> int:
    time.sleep(0.05)
    return x


def square(x: int) -> int:
    return x * x


async def test_cancelling_the_call_closes_source_and_stops_owned_workers() -> None:
    started = asyncio.Event()
    closed = asyncio.Event()
    stats = aiomr.JobStats()

    async def numbers() -> AsyncIterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
                if i == 20:
                    started.set()
        finally:
            closed.set()

    job = asyncio.create_task(
        aiomr.map_reduce(numbers(), slow_identity, operator.add, max_workers=2, stats=stats)
    )
    await started.wait()
    while not stats.worker_pids:  # the first task has reached a worker
        await asyncio.sleep(0.01)
    pids = set(stats.worker_pids)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert closed.is_set()
    assert alive(pids) == []


async def test_timeout_around_an_endless_source_keeps_memory_bounded(
    engine: aiomr.Engine,
) -> None:
    chunk_size = 1000
    max_in_flight = 4
    stats = aiomr.JobStats()
    closed = asyncio.Event()
    enough = asyncio.Event()
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        try:
            while True:
                pulled += 1
                if pulled == 300_000:
                    enough.set()
                # A fresh 100-byte object per record: an unbounded reader would hold
                # tens of megabytes by the time the job is stopped.
                yield bytes(100)
        finally:
            closed.set()

    tracemalloc.start()
    try:
        job = asyncio.create_task(
            engine.map_reduce(
                endless(),
                len,
                operator.add,
                chunk_size=chunk_size,
                max_in_flight=max_in_flight,
                stats=stats,
            )
        )
        await enough.wait()
        # The window: never more than max_in_flight chunks beyond those already done.
        assert stats.records <= (stats.chunks_done + max_in_flight) * chunk_size
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await job
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert closed.is_set()
    assert stats.records >= 300_000
    assert stats.records <= (stats.chunks_done + max_in_flight) * chunk_size
    # 300 k records of ~133 bytes would be ~40 MB; the window holds ~0.5 MB of them.
    assert peak < 15 * 1024 * 1024, f"peak traced memory {peak / 1e6:.1f} MB"


async def test_cancelled_job_leaves_the_engine_usable(engine: aiomr.Engine) -> None:
    stats = aiomr.JobStats()
    job = asyncio.create_task(
        engine.map_reduce(range(1000), slow_identity, operator.add, chunk_size=1, stats=stats)
    )
    while stats.chunks_done < 2:
        await asyncio.sleep(0.01)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert await engine.map_reduce(range(1, 11), square, operator.add) == 385


async def test_engine_aclose_while_a_task_runs_terminates_workers() -> None:
    engine = aiomr.Engine(max_workers=2)
    await engine.start()
    stats = aiomr.JobStats()
    job = asyncio.create_task(
        engine.map_reduce(range(100), slow_identity, operator.add, chunk_size=1, stats=stats)
    )
    while not stats.worker_pids:
        await asyncio.sleep(0.01)
    pids = set(stats.worker_pids)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    await engine.aclose()
    assert alive(pids) == []
    with pytest.raises(aiomr.ClosedResourceError, match="the Engine is closed"):
        await engine.map_reduce(range(3), square, operator.add)
