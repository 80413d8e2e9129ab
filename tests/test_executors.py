"""Executors: code shipped once per job, worker lifetimes, ownership."""

from __future__ import annotations

import asyncio
import concurrent.futures
import operator
import os
import pathlib
import threading
from typing import Any

import pytest

import aiomr
from aiomr.executors import (
    Executor,
    FuturesExecutor,
    InlineExecutor,
    ProcessExecutor,
    ThreadExecutor,
    resolve_executor,
)
from tests.conftest import alive


class CountingMapper:
    """A mapper that appends a line to a file each time it is unpickled."""

    def __init__(self, log: str) -> None:
        self.log = log

    def __call__(self, x: int) -> int:
        return x + 1

    def __getstate__(self) -> dict[str, Any]:
        return {"log": self.log}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.log = state["log"]
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")


async def test_code_travels_once_per_worker_per_job(
    tmp_path: pathlib.Path, process_executor: ProcessExecutor
) -> None:
    log = tmp_path / "unpickled.log"
    log.touch()
    stats = aiomr.JobStats()
    engine = aiomr.Engine(process_executor)
    result = await engine.map_reduce(
        range(500), CountingMapper(str(log)), operator.add, chunk_size=5, stats=stats
    )
    assert result == sum(range(1, 501))
    assert stats.chunks == 100
    loads = log.read_text().split()
    # One unpickle per worker that ran tasks, never one per task.
    assert len(loads) == len(set(loads)) <= process_executor.max_workers
    assert set(map(int, loads)) <= set(process_executor.worker_pids())


async def test_shipped_code_files_are_removed_after_the_job(
    process_executor: ProcessExecutor,
) -> None:
    code = process_executor.ship(len)
    path = pathlib.Path(code.fn.path)
    assert path.exists()
    code.release()
    assert not path.exists()
    code.release()  # idempotent


async def test_process_workers_use_forkserver_and_run_elsewhere(
    process_executor: ProcessExecutor,
) -> None:
    pids = await asyncio.gather(*(process_executor.submit(os.getpid) for _ in range(4)))
    assert os.getpid() not in pids
    assert set(pids) <= set(process_executor.worker_pids())


async def test_aclose_with_running_tasks_terminates_workers() -> None:
    executor = ProcessExecutor(2)
    await executor.start()
    pids = executor.worker_pids()
    assert len(pids) == 2
    executor.submit(__import__("time").sleep, 30)
    await executor.aclose()
    await executor.aclose()  # idempotent
    assert alive(pids) == []
    with pytest.raises(aiomr.ClosedResourceError, match="ProcessExecutor is closed"):
        executor.submit(len, "x")


async def test_thread_executor_runs_off_the_loop_thread() -> None:
    loop_thread = threading.get_ident()
    async with ThreadExecutor(2) as executor:
        ident = await executor.submit(threading.get_ident)
    assert ident != loop_thread


async def test_inline_executor_runs_in_the_caller() -> None:
    executor = InlineExecutor()
    assert await executor.submit(threading.get_ident) == threading.get_ident()
    with pytest.raises(ZeroDivisionError):
        await executor.submit(operator.truediv, 1, 0)


async def test_futures_executor_ships_by_value_to_unknown_executors() -> None:
    class Opaque(concurrent.futures.Executor):
        """An executor aiomr knows nothing about: it runs tasks in a fresh pickle round-trip."""

        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
            import pickle

            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            fn = pickle.loads(pickle.dumps(fn))
            future.set_result(fn(*args))
            return future

    offset = 3
    result = await aiomr.map_reduce(
        range(10), lambda x: x + offset, operator.add, executor=Opaque()
    )
    assert result == 75


def test_resolve_executor_ownership() -> None:
    executor, owned = resolve_executor("thread", max_workers=3)
    assert isinstance(executor, ThreadExecutor)
    assert owned
    assert executor.max_workers == 3
    mine = InlineExecutor()
    assert resolve_executor(mine) == (mine, False)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        wrapped, owned = resolve_executor(pool)
        assert isinstance(wrapped, FuturesExecutor)
        assert owned
        assert wrapped.max_workers == 2


async def test_custom_executor_subclass_plugs_in() -> None:
    class Counting(Executor):
        def __init__(self) -> None:
            self.submitted = 0

        @property
        def max_workers(self) -> int:
            return 1

        def submit(self, fn: Any, /, *args: Any) -> asyncio.Future[Any]:
            self.submitted += 1
            return asyncio.get_running_loop().run_in_executor(None, fn, *args)

        async def aclose(self) -> None:
            self._closed = True

    executor = Counting()
    assert (
        await aiomr.map_reduce(range(10), abs, operator.add, executor=executor, chunk_size=2) == 45
    )
    assert executor.submitted == 5
    assert not executor.closed  # passed in, so not ours to close
