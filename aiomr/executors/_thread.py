"""Run tasks on a pool of threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any

from ._base import Executor, default_max_workers

__all__ = ["ThreadExecutor"]


class ThreadExecutor(Executor):
    """Run tasks on threads of this process.

    Right for mappers that release the GIL (NumPy, compression, I/O) or that must share
    memory with the caller; pure-Python CPU work gains nothing from threads.

    Args:
        max_workers: threads to run; defaults to the number of CPUs.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        if max_workers is not None and max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        self._max_workers = max_workers or default_max_workers()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    in_process = True
    """The threads share the caller's process (and one event loop for coroutine mappers)."""

    @property
    def max_workers(self) -> int:
        return self._max_workers

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> asyncio.Future[Any]:
        self._check_open()
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self._max_workers, thread_name_prefix="aiomr-worker"
            )
        return asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=False, cancel_futures=True)
            await asyncio.to_thread(pool.shutdown, wait=True)
