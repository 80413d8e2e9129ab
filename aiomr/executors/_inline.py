"""Run tasks in the caller, one at a time, for debugging and deterministic tests."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from ._base import Executor

__all__ = ["InlineExecutor"]


class InlineExecutor(Executor):
    """Run every task synchronously in the calling thread, in submission order.

    No concurrency at all: a breakpoint in a mapper stops the program where you expect, and
    every task has finished before the next chunk is read (folding still follows
    ``ordered=``, as with any executor). It blocks the event loop while a task runs, so keep it to
    debugging and tests. The one exception is an ``async def`` mapper: its coroutines run
    as tasks of the caller's loop, concurrently (``concurrency``), for I/O-bound work that
    needs no process.
    """

    runs_coroutines = True
    """An ``async def`` mapper's coroutines run on the caller's loop, as tasks of their own
    (up to the job's ``concurrency`` at once): the way for purely I/O-bound mappers."""

    in_process = True
    """Tasks run in the caller's thread."""

    @property
    def max_workers(self) -> int:
        return 1

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> asyncio.Future[Any]:
        self._check_open()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            value = fn(*args)
            if inspect.iscoroutine(value):  # a coroutine mapper's task: run on this loop
                return asyncio.ensure_future(value)
            future.set_result(value)
        except BaseException as exc:  # delivered through the future, like any executor
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            future.set_exception(exc)
        return future

    async def aclose(self) -> None:
        self._closed = True
