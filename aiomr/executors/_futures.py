"""Run tasks on any `concurrent.futures.Executor` the caller already has."""

from __future__ import annotations

import asyncio
import concurrent.futures
import pickle
import shutil
from collections.abc import Callable
from typing import Any

from .._worker.job_code import dumps_code
from ._base import Executor, ShippedCode, default_max_workers
from ._shipping import private_directory, ship_by_file

__all__ = ["FuturesExecutor"]


class _PickledCall:
    """Code carried by value in every task, for executors of unknown reach."""

    __slots__ = ("_data", "_fn")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._fn: Callable[..., Any] | None = None

    def __call__(self, *args: Any) -> Any:
        if self._fn is None:
            self._fn = pickle.loads(self._data)
        return self._fn(*args)

    def __reduce__(self) -> tuple[type[_PickledCall], tuple[bytes]]:
        return (_PickledCall, (self._data,))


class FuturesExecutor(Executor):
    """Adapt a `concurrent.futures.Executor` you own; `aclose` leaves it running.

    A `concurrent.futures.ThreadPoolExecutor` gets the code as it is. A
    `concurrent.futures.ProcessPoolExecutor` runs on this machine, so the job's code is
    pickled once into a file its workers read once per job (as `ProcessExecutor` does).
    Any other executor may run tasks in other processes or on other machines, so the job's
    code is pickled once with cloudpickle and the bytes travel with each task.

    Such a pool has none of `ProcessExecutor`'s fault handling: a worker that dies breaks
    the stdlib pool for good (every task fails with ``BrokenProcessPool``), a stopped worker
    can stall it, and ``task_timeout`` is not available. Prefer ``executor="process"``.

    Args:
        executor: the executor to submit to.
        max_workers: how many tasks it runs at once; read from the executor when omitted.
    """

    def __init__(
        self, executor: concurrent.futures.Executor, *, max_workers: int | None = None
    ) -> None:
        self._executor = executor
        found = getattr(executor, "_max_workers", None)
        self._max_workers = max_workers or (found if isinstance(found, int) else None)
        if self._max_workers is None:
            self._max_workers = default_max_workers()
        self._directory: str | None = None

    @property
    def max_workers(self) -> int:
        assert self._max_workers is not None
        return self._max_workers

    def ship(self, fn: Callable[..., Any]) -> ShippedCode:
        self._check_open()
        if isinstance(self._executor, concurrent.futures.ThreadPoolExecutor):
            return ShippedCode(fn)
        if isinstance(self._executor, concurrent.futures.ProcessPoolExecutor):
            if self._directory is None:
                self._directory = private_directory()
            return ship_by_file(fn, self._directory)
        try:
            data = dumps_code(fn)
        except Exception as exc:
            raise TypeError(
                f"the job's code cannot be pickled for {self._executor!r}: {exc}"
            ) from exc
        return ShippedCode(_PickledCall(data))

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> asyncio.Future[Any]:
        self._check_open()
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def aclose(self) -> None:
        self._closed = True
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
