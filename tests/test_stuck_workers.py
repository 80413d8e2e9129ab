"""Stopped and wedged workers: found, killed, replaced; no other worker and no loop waits.

Every test here stops real worker processes with SIGSTOP (as a debugger, a supervisor or an
operator would) or wedges one in C code that holds the GIL, and checks three things: the job
gives the right answer, the stuck process is gone afterwards, and the caller's event loop was
never held up (a ticker measures its longest pause; the bound is loose on purpose: a frozen
loop pauses for many seconds, a busy test machine for milliseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import operator
import os
import pathlib
import random
import re
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterable

import psutil
import pytest

import aiomr
from aiomr.executors import ProcessExecutor
from tests.conftest import alive

pytestmark = pytest.mark.usefixtures("nothing_left_running")

FROZEN = 1.0
"""A loop that pauses this long was blocked, not merely busy."""


class Ticker:
    """Measure the longest pause of the running loop while the block runs."""

    def __init__(self) -> None:
        self.longest = 0.0

    async def _tick(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.longest = max(self.longest, now - last)
            last = now


@contextlib.asynccontextmanager
async def watched_loop() -> AsyncIterator[Ticker]:
    ticker = Ticker()
    task = asyncio.create_task(ticker._tick())
    try:
        yield ticker
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def slow_square(seconds: float, x: int) -> int:
    time.sleep(seconds)
    return x * x


def state(pid: int) -> str:
    try:
        return str(psutil.Process(pid).status())
    except psutil.NoSuchProcess:
        return "gone"


async def until(condition: Callable[[], bool], what: str, within: float = 30.0) -> None:
    """Wait until ``condition()`` holds; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what} after {within} s"
        await asyncio.sleep(0.01)


def stop(pids: Iterable[int]) -> list[int]:
    stopped = []
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)
    return stopped


def resume(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


@pytest.mark.parametrize("how_many", [1, 2])
async def test_workers_stopped_while_idle_are_replaced(how_many: int) -> None:
    stats = aiomr.JobStats()
    async with (
        ProcessExecutor(2, stall_timeout=1.0) as executor,
        aiomr.Engine(executor) as engine,
        watched_loop() as ticker,
    ):
        await engine.start()
        stopped = stop(executor.worker_pids()[:how_many])
        try:
            total = await engine.map_reduce(
                range(200),
                functools.partial(slow_square, 0.001),
                operator.add,
                chunk_size=10,
                stats=stats,
            )
            # With one stopped, the other took its tasks: the job may be over before the
            # stopped one is found out.
            await until(lambda: executor.workers_replaced >= how_many, "the stopped replaced")
        finally:
            resume(stopped)
        assert total == sum(x * x for x in range(200))
        assert stats.records == stats.records_reduced == 200
        assert not set(stopped) & set(executor.worker_pids())
    assert alive(stopped) == []
    assert ticker.longest < FROZEN


def lingering_at(directory: str, records: tuple[int, ...], x: int) -> int:
    """The first time one of ``records`` is seen, say so in a file named after it (holding
    this worker's pid) and linger until the test stops the worker there, mid-task for sure.

    A worker lingering at one record never reaches another: each marker names a worker of
    its own, however slowly the machine runs. The linger is bounded so that a failing test
    cannot hang."""
    if x in records:
        marker = os.path.join(directory, f"at-{x}")
        if not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(60)
    time.sleep(0.01)
    return x * x


@pytest.mark.parametrize("how_many", [1, 2])
async def test_workers_stopped_mid_task_are_killed_and_their_chunks_run_again(
    how_many: int, tmp_path: pathlib.Path
) -> None:
    # No task_timeout: the missing heartbeat alone finds them. A stopped worker is not its
    # chunk's fault, so one attempt is enough for the job to succeed.
    stats = aiomr.JobStats()
    policy = aiomr.RetryPolicy(max_attempts=1)
    # In chunks 0 and 1, which the two workers start at once. (Records further on could be
    # queued behind a lingering chunk on the same worker, and never be reached in time.)
    records = (0, 5)[:how_many]
    markers = [tmp_path / f"at-{x}" for x in records]
    async with (
        ProcessExecutor(2, stall_timeout=1.0) as executor,
        aiomr.Engine(executor) as engine,
        watched_loop() as ticker,
    ):
        await engine.start()
        job = asyncio.create_task(
            engine.map_reduce(
                range(60),
                functools.partial(lingering_at, str(tmp_path), records),
                operator.add,
                chunk_size=5,
                stats=stats,
                retry=policy,
            )
        )
        await until(lambda: all(m.exists() and m.read_text() for m in markers), "the workers")
        stopped = stop(int(m.read_text()) for m in markers)
        try:
            total = await job
        finally:
            resume(stopped)
        assert total == sum(x * x for x in range(60))
        assert stats.records == stats.records_reduced == 60
        assert stats.chunks_retried == how_many
        assert stats.workers_replaced >= how_many
    assert alive(stopped) == []
    assert ticker.longest < FROZEN


async def test_task_timeout_ends_stopped_workers_without_freezing_the_loop(
    tmp_path: pathlib.Path,
) -> None:
    # Both workers stopped mid-task, with task_timeout: each is killed for its deadline (the
    # stall timeout is too long to end them first). Each lingers in its first chunk until it
    # is stopped, so both are surely mid-task then.
    stats = aiomr.JobStats()
    policy = aiomr.RetryPolicy(task_timeout=2.0, backoff=0)
    records = (0, 1)  # chunks 0 and 1, which the two workers start at once
    markers = [tmp_path / f"at-{x}" for x in records]
    async with (
        ProcessExecutor(2, stall_timeout=120.0) as executor,
        aiomr.Engine(executor) as engine,
        watched_loop() as ticker,
    ):
        await engine.start()
        job = asyncio.create_task(
            engine.map_reduce(
                range(40),
                functools.partial(lingering_at, str(tmp_path), records),
                operator.add,
                chunk_size=1,
                stats=stats,
                retry=policy,
            )
        )
        await until(lambda: all(m.exists() and m.read_text() for m in markers), "the workers")
        pids = {int(m.read_text()) for m in markers}
        assert pids == set(executor.worker_pids())
        stopped = stop(pids)
        started = time.monotonic()
        try:
            total = await job
        finally:
            resume(stopped)
        assert total == sum(x * x for x in range(40))
        assert time.monotonic() - started < 30
        assert stats.workers_replaced >= 2
        assert stats.records == stats.records_reduced == 40
    assert alive(stopped) == []
    assert ticker.longest < FROZEN


async def test_a_stopped_worker_holds_up_nobody_else() -> None:
    # With a long stall_timeout the stopped worker stays; the other one goes on alone.
    stats = aiomr.JobStats()
    async with (
        ProcessExecutor(2, stall_timeout=120.0) as executor,
        aiomr.Engine(executor) as engine,
        watched_loop() as ticker,
    ):
        await engine.start()
        victim, other = executor.worker_pids()
        stop([victim])
        try:
            job = asyncio.create_task(
                engine.map_reduce(
                    range(400),
                    functools.partial(slow_square, 0.001),
                    operator.add,
                    chunk_size=4,
                    stats=stats,
                )
            )
            # Nearly every chunk is done by the worker that runs, while the other is stopped.
            await until(lambda: stats.chunks_done >= 90, "the other worker's chunks")
            assert state(victim) == psutil.STATUS_STOPPED
            assert stats.worker_pids == {other}
        finally:
            resume([victim])
        assert await job == sum(x * x for x in range(400))
    assert ticker.longest < FROZEN


async def test_tasks_a_stopped_worker_has_not_started_run_elsewhere() -> None:
    # It was stopped just before the job; it cannot have started the tasks it was sent, so
    # the other worker runs them, long before stall_timeout would end the stopped one.
    stats = aiomr.JobStats()
    async with (
        ProcessExecutor(2, stall_timeout=120.0) as executor,
        aiomr.Engine(executor) as engine,
    ):
        await engine.start()
        victim, other = executor.worker_pids()
        stop([victim])
        try:
            async with asyncio.timeout(60):
                total = await engine.map_reduce(
                    range(100),
                    functools.partial(slow_square, 0.001),
                    operator.add,
                    chunk_size=10,
                    stats=stats,
                )
            assert total == sum(x * x for x in range(100))
            assert stats.worker_pids == {other}
            assert stats.chunks_retried == 0  # taken back unstarted: not a retry
            assert state(victim) == psutil.STATUS_STOPPED
        finally:
            resume([victim])


def hold_the_gil_asleep(marker: str, x: int) -> int:
    """Sleep in C while holding the GIL, the first time record 3 is seen: a wedged worker."""
    if x == 3 and not os.path.exists(marker):
        open(marker, "w").close()
        ctypes.PyDLL(None).sleep(30)  # PyDLL calls keep the GIL: no heartbeat, no CPU
    return x * x


def hold_the_gil_busy(seconds: float, x: int) -> float:
    """Stay in one C call that holds the GIL and uses the CPU for ``seconds`` at least (once,
    for record 3); return how long the longest such call took."""
    if x != 3:
        return 0.0
    length = 16
    while True:  # exponential backtracking, all inside the re engine: each + 1 doubles it
        started = time.perf_counter()
        re.match(r"(a+)+b", "a" * length)
        took = time.perf_counter() - started
        if took >= seconds:
            return took
        length += 1


async def test_a_worker_wedged_in_c_code_is_killed_and_its_chunk_blamed(tmp_path: object) -> None:
    stats = aiomr.JobStats()
    marker = os.path.join(str(tmp_path), "wedged")
    async with (
        ProcessExecutor(2, stall_timeout=1.0) as executor,
        aiomr.Engine(executor) as engine,
        watched_loop() as ticker,
    ):
        total = await engine.map_reduce(
            range(10),
            functools.partial(hold_the_gil_asleep, marker),
            operator.add,
            chunk_size=2,
            stats=stats,
            retry=aiomr.RetryPolicy(backoff=0),
        )
        assert total == sum(x * x for x in range(10))
        assert stats.chunks_retried == 1
        os.unlink(marker)
        with pytest.raises(aiomr.BrokenWorkerError, match=r"it hung: no sign of life") as info:
            await engine.map_reduce(
                range(10),
                functools.partial(hold_the_gil_asleep, marker),
                operator.add,
                chunk_size=2,
                retry=aiomr.RetryPolicy(max_attempts=1),
            )
        assert "chunk 1" in str(info.value)
    assert ticker.longest < FROZEN


async def test_a_worker_busy_in_one_long_c_call_is_left_alone() -> None:
    # Its heartbeat stands still (the GIL is held), but it uses CPU time: it is working.
    async with ProcessExecutor(1, stall_timeout=0.5) as executor:
        longest = await aiomr.map_reduce(
            range(6),
            functools.partial(hold_the_gil_busy, 2.0),
            max,
            executor=executor,
            chunk_size=3,
            retry=aiomr.RetryPolicy(max_attempts=1),
        )
        assert longest >= 2.0  # four times stall_timeout without a heartbeat
        assert executor.workers_replaced == 0


async def test_closing_with_stopped_workers_leaves_none_behind() -> None:
    executor = ProcessExecutor(2)
    async with aiomr.Engine(executor) as engine, watched_loop() as ticker:
        await engine.start()
        pids = executor.worker_pids()
        job = asyncio.create_task(
            engine.map_reduce(range(100), functools.partial(slow_square, 0.05), operator.add)
        )
        await asyncio.sleep(0)
        stop(pids)
        started = time.monotonic()
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        await executor.aclose()
        assert time.monotonic() - started < 10
    assert alive(pids) == []
    assert ticker.longest < FROZEN


async def test_random_stops_during_a_job_end_in_seconds() -> None:
    # A ~3 s job; every 0.2 to 0.8 s a random worker is stopped, idle or busy, eight times,
    # and half the stopped ones are resumed a little later. The job must then end in
    # seconds, with the right answer.
    rng = random.Random(os.getpid())
    stats = aiomr.JobStats()
    stopped: list[int] = []
    policy = aiomr.RetryPolicy(task_timeout=1.0, backoff=0)
    async with (
        ProcessExecutor(2, stall_timeout=1.0) as executor,
        aiomr.Engine(executor) as engine,
        watched_loop() as ticker,
    ):
        await engine.start()
        job = asyncio.create_task(
            engine.map_reduce(
                range(1200),
                functools.partial(slow_square, 0.005),
                operator.add,
                chunk_size=20,
                stats=stats,
                retry=policy,
            )
        )
        started = time.monotonic()
        while not job.done() and len(stopped) < 8:
            await asyncio.wait([job], timeout=rng.uniform(0.2, 0.8))
            pids = executor.worker_pids()
            if job.done() or not pids:
                continue
            victim = rng.choice(pids)
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGSTOP)
                stopped.append(victim)
            if rng.random() < 0.5:
                asyncio.get_running_loop().call_later(rng.uniform(0.1, 1.5), resume, [victim])
        stops_ended = time.monotonic()
        total = await job
        took, recovered = time.monotonic() - started, time.monotonic() - stops_ended
        resume(stopped)
    assert total == sum(x * x for x in range(1200))
    assert stats.records == stats.records_reduced == 1200
    # Loose bounds for a loaded machine: a hang would take for ever, a frozen loop minutes.
    assert recovered < 30, f"the job took {recovered:.1f} s to end after the last stop"
    assert took < 60, f"the job took {took:.1f} s"
    assert alive(stopped) == []
    assert ticker.longest < FROZEN
