"""Run tasks in the caller, one at a time, for debugging and deterministic tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ._base import Executor

__all__ = ["InlineExecutor"]


class InlineExecutor(Executor):
    """Run every task synchronously in the calling thread, in submission order.

    No concurrency at all: a breakpoint in a mapper stops the program where you expect, and
    every task has finished before the next chunk is read (folding still follows
    ``ordered=``, as with any executor). It blocks the event loop while a task runs, so keep it to
    debugging and tests.
    """

    @property
    def max_workers(self) -> int:
        return 1

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> asyncio.Future[Any]:
        self._check_open()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # delivered through the future, like any executor
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            future.set_exception(exc)
        return future

    async def aclose(self) -> None:
        self._closed = True
