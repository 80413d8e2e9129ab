"""The jobs running on an `aiomr.Engine`: each counted while it runs, drained or cancelled
when the engine closes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ._exceptions import ClosedResourceError
from ._scheduler import FairScheduler
from .executors import Executor

__all__ = ["RunningJobs"]


class RunningJobs:
    """Count the tasks running jobs on one engine; give each its lane to the workers."""

    def __init__(self, scheduler: FairScheduler) -> None:
        self._scheduler = scheduler
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cancelled: set[asyncio.Task[Any]] = set()
        self._idle: asyncio.Event | None = None

    def __contains__(self, task: object) -> bool:
        return task in self._tasks

    @contextlib.asynccontextmanager
    async def job(self, max_workers: int | None) -> AsyncIterator[Executor]:
        """Count the current task as a running job while inside; yield its lane
        (`aiomr._scheduler`), which ``max_workers`` caps."""
        task = asyncio.current_task()
        assert task is not None, "jobs run in a task"
        lane = self._scheduler.open_lane(max_workers=max_workers)
        self._tasks.add(task)
        try:
            yield lane
        except asyncio.CancelledError:
            if task in self._cancelled and task.uncancel() == 0:
                # Cancelled by aclose(cancel=True) and by nobody else: say so.
                raise ClosedResourceError(
                    "the engine was closed with aclose(cancel=True) while this job ran"
                ) from None
            raise
        finally:
            lane.close()
            self._tasks.discard(task)
            self._cancelled.discard(task)
            if not self._tasks and self._idle is not None:
                self._idle.set()

    def cancel(self) -> None:
        """Cancel every running job (each then raises `aiomr.ClosedResourceError`)."""
        for task in self._tasks:
            if task not in self._cancelled:
                self._cancelled.add(task)
                task.cancel()

    async def wait_idle(self) -> None:
        """Return once no job runs."""
        if self._tasks:
            self._idle = asyncio.Event()
            await self._idle.wait()
