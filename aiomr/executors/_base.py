"""The executor interface: where map tasks run.

An executor has three duties, kept small so that other backends (a Dask cluster, a pool of
remote machines) can slot in:

* `Executor.ship` makes a job's code available to the workers, once per job, and returns
  a cheap stand-in callable that tasks carry instead of the code itself;
* `Executor.submit` starts one task and returns an `asyncio.Future` for its result;
* `Executor.aclose` releases the workers; it is idempotent.
"""

from __future__ import annotations

import abc
import asyncio
import os
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import Any, Self

from .._exceptions import ClosedResourceError
from .._retry import Verdict

__all__ = ["Executor", "ShippedCode", "WorkerLost", "default_max_workers"]


class WorkerLost(BrokenProcessPool):
    """How an executor fails a task whose worker ended before the task did.

    It says what happened (``str(exc)``: which worker, how it ended, why it was killed when
    the executor killed it) and whose fault it was (`verdict`), so the retry rules can be
    fair: a task that was running when its worker crashed ``"failed"``; one whose worker was
    killed from outside (a SIGKILL the OOM killer did not send, a stopped process) was
    ``"killed"``; one that had not started is never failed at all, the executor runs it
    elsewhere. A subclass of `concurrent.futures.process.BrokenProcessPool`, which
    executors that cannot tell raise instead (all of those count as ``"failed"``).
    """

    def __init__(self, description: str, *, verdict: Verdict) -> None:
        super().__init__(description)
        self.description = description
        self.verdict: Verdict = verdict


def default_max_workers() -> int:
    """Return the number of CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


class ShippedCode:
    """A job's code as the workers see it: call `fn` in tasks, `release` after.

    The default simply hands the callable through (threads and inline execution share the
    caller's memory); process-based executors store the pickled code once and hand out a
    small token instead.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def release(self) -> None:
        """Forget the shipped code; tasks still running may fail to load it."""


class Executor(abc.ABC):
    """Run map tasks; subclass it to add a backend.

    Executors are async context managers; `aclose` is idempotent and, for executors that
    own workers, leaves none running.
    """

    _closed: bool = False

    @property
    @abc.abstractmethod
    def max_workers(self) -> int:
        """How many tasks can run at the same time."""

    def ship(self, fn: Callable[..., Any]) -> ShippedCode:
        """Make ``fn`` available to the workers for one job.

        Raise `TypeError` when ``fn`` cannot travel to them (it cannot be pickled, say),
        before any task is submitted.
        """
        self._check_open()
        return ShippedCode(fn)

    @abc.abstractmethod
    def submit(self, fn: Callable[..., Any], /, *args: Any) -> asyncio.Future[Any]:
        """Start ``fn(*args)`` on a worker and return a future for its result.

        Cancelling the future cancels the task if it has not started; a task already running
        in another process or thread runs to its end and its result is dropped.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release the workers. Idempotent."""

    @property
    def closed(self) -> bool:
        """Whether `aclose` has been called."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedResourceError(f"{type(self).__name__} is closed")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
