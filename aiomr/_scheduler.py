"""Share an engine's workers between its jobs by worker time (fair queuing).

::

    job A ── Lane.submit ──► A's queue ──┐
    job B ── Lane.submit ──► B's queue ──┼──► FairScheduler ──► Executor.submit
    job C ── Lane.submit ──► C's queue ──┘    a worker is free:     at most one task
                                              take the next task    per worker
                                              of the job with the
                                              least worker time

Why not hand every task to the executor at once: the process pool runs tasks in the order
they were submitted. With each job keeping its window of tasks queued there, the queue
alternates between jobs task by task, so a job of millisecond tasks beside a job of
one-second tasks advances at the pace of the long ones. Here the executor holds only as
many tasks as it has workers (twice as many for a job alone with short tasks, see
`SHORT_TASK_SECONDS`); the rest wait in their job's own queue, and the next free worker
goes to the active job that has used the least worker time so far.

Worker time is measured in the caller, from the moment a task is handed to the executor to
the moment its future completes: with no more tasks than workers, a task starts at once, so
that is the time it holds a worker. Tasks still running count for the time they have run so
far, so a job's share is right from its first task, with no estimate needed. A job that
becomes active (new, or idle for a while) starts level with the least-served active job:
time it did not ask for is not credit to spend later.

A running task cannot be preempted: a job that arrives waits for the first running task to
end. The scheduler's ``split_seconds``, which each lane passes on to its job, bounds how long
the splits of file jobs run (see `aiomr._chunker` and docs/concepts/fairness.md).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._exceptions import ClosedResourceError
from ._reducer import Folder
from .executors import Executor, ShippedCode

__all__ = ["FairScheduler", "Lane"]


SHORT_TASK_SECONDS = 0.1
"""A job alone on the engine whose tasks take less than this (on average, caller's clock) may
have a second task per worker waiting in the executor. Handing tasks over one at a time
leaves each worker idle for a round trip between tasks, which costs a job of millisecond
tasks a tenth of its speed; a task queued in the pool cannot be taken back, so a job
arriving later waits for one more task per worker, which this bounds."""


@dataclass(eq=False, slots=True)
class _Task:
    """One task of a lane, waiting for a worker or running."""

    future: asyncio.Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    started: float = 0.0
    inner: asyncio.Future[Any] | None = None
    """The executor's future for the task, once it was handed over."""


@dataclass(eq=False)
class _Account:
    """What one lane has received: worker seconds of finished tasks, and what runs now."""

    used: float = 0.0
    queue: collections.deque[_Task] = field(default_factory=collections.deque)
    running: set[_Task] = field(default_factory=set)
    finished: int = 0
    finished_seconds: float = 0.0

    @property
    def short_tasks(self) -> bool:
        """Whether the lane's tasks have so far taken less than `SHORT_TASK_SECONDS`."""
        return self.finished > 0 and self.finished_seconds < SHORT_TASK_SECONDS * self.finished

    def served(self, now: float) -> float:
        """Worker seconds received up to ``now``, counting running tasks so far."""
        return self.used + sum(now - task.started for task in self.running)

    @property
    def active(self) -> bool:
        return bool(self.queue or self.running)


class FairScheduler:
    """Hand the tasks of several jobs to one executor, fairly by worker time.

    Args:
        executor: where the tasks run; the scheduler never closes it.
        split_seconds: how long the splits of file jobs should take in a worker (``None``:
            no bound); read by each job through its lane.

    Each job submits through its own `Lane` (`open_lane`). The executor is given at most
    ``executor.max_workers`` tasks at a time (read afresh each time: a cluster may grow),
    twice as many while one job alone runs tasks shorter than `SHORT_TASK_SECONDS`.
    """

    def __init__(self, executor: Executor, *, split_seconds: float | None = None) -> None:
        self.executor = executor
        self.split_seconds = split_seconds
        self._lanes: dict[Lane, _Account] = {}
        self._running = 0

    def open_lane(self, *, max_workers: int | None = None) -> Lane:
        """Return a new job's view of the executor; `Lane.close` it when the job ends.

        Args:
            max_workers: the most tasks of this job that run at the same time; ``None``
                lets it use every worker.
        """
        lane = Lane(self, max_workers)
        self._lanes[lane] = _Account()
        return lane

    def _submit(self, lane: Lane, task: _Task) -> None:
        account = self._lanes.get(lane)
        if account is None:
            raise ClosedResourceError("the job's lane to the executor is closed")
        if not account.active:
            # Level with the least-served active job: no credit for time not asked for.
            now = _now()
            others = [a.served(now) for a in self._lanes.values() if a.active]
            if others:
                account.used = max(account.used, min(others))
        account.queue.append(task)
        self._fill()

    def _close(self, lane: Lane) -> None:
        account = self._lanes.pop(lane, None)
        if account is None:
            return
        for task in account.queue:
            task.future.cancel()
        account.queue.clear()
        # Tasks still running keep their workers until they end; `_ended` frees the slots.

    def _fill(self) -> None:
        """Give free workers to the least-served lanes with work waiting."""
        while self._running < self._slots():
            picked = self._pick()
            if picked is None:
                return
            lane, account = picked
            task = account.queue.popleft()
            if task.future.done():  # cancelled while it waited
                continue
            self._start(lane, account, task)

    def _slots(self) -> int:
        """Tasks the executor may hold: one per worker, two for a lone job of short tasks."""
        workers = self.executor.max_workers
        active = [a for a in self._lanes.values() if a.active]
        if len(active) == 1 and active[0].short_tasks:
            return 2 * workers
        return workers

    def _pick(self) -> tuple[Lane, _Account] | None:
        now = _now()
        best: tuple[Lane, _Account] | None = None
        best_served = 0.0
        for lane, account in self._lanes.items():
            capped = lane._cap is not None and len(account.running) >= lane.max_workers
            if not account.queue or capped:
                continue
            served = account.served(now)
            if best is None or served < best_served:
                best, best_served = (lane, account), served
        return best

    def _start(self, lane: Lane, account: _Account, task: _Task) -> None:
        try:
            inner = self.executor.submit(task.fn, *task.args)
        except Exception as exc:  # closed, or broken beyond repair: the job learns it
            task.future.set_exception(exc)
            return
        task.started, task.inner = _now(), inner
        account.running.add(task)
        self._running += 1
        inner.add_done_callback(lambda done: self._ended(account, task, done))
        # Cancelling the job's future cancels the executor's (a task not yet started in
        # the pool never runs; one already running runs on, its result dropped).
        task.future.add_done_callback(lambda own: inner.cancel() if own.cancelled() else None)

    def _kill(self, lane: Lane, future: asyncio.Future[Any], ran_for: float) -> bool:
        """Pass a lane's `Lane.kill_task` on to the executor, for a task it holds."""
        account = self._lanes.get(lane)
        if account is None:
            return False
        for task in account.running:
            if task.future is future and task.inner is not None:
                return self.executor.kill_task(task.inner, ran_for=ran_for)
        return False  # still waiting for its turn: the job asks again

    def _ended(self, account: _Account, task: _Task, inner: asyncio.Future[Any]) -> None:
        self._running -= 1
        account.running.discard(task)
        took = _now() - task.started
        account.used += took
        if not inner.cancelled():  # a task cancelled before it started says nothing
            account.finished += 1
            account.finished_seconds += took
        future = task.future
        if not future.done():
            if inner.cancelled():
                future.cancel()
            elif (exc := inner.exception()) is not None:
                future.set_exception(exc)
            else:
                future.set_result(inner.result())
        self._fill()


def _now() -> float:
    return asyncio.get_running_loop().time()


class Lane(Executor):
    """One job's view of an engine's executor: tasks wait for their turn, then run there.

    Everything but `submit` is the executor's own: shipping code, the number of workers
    (capped by the job's ``max_workers``), and every optional feature the executor
    declares, each passed on below (killing a task's worker for its ``task_timeout`` once
    the task is in the executor's hands). A lost worker is reported by the executor's own
    future, which the lane's future takes over as it is. The one feature that is the
    engine's: `split_seconds`, from the scheduler.
    """

    def __init__(self, scheduler: FairScheduler, max_workers: int | None) -> None:
        self._scheduler = scheduler
        self._cap = max_workers

    @property
    def max_workers(self) -> int:
        workers = self._scheduler.executor.max_workers
        return workers if self._cap is None else max(1, min(self._cap, workers))

    @property
    def name(self) -> str:
        """The name of the executor the lane leads to."""
        return self._scheduler.executor.name

    @property
    def closed(self) -> bool:
        return self._scheduler.executor.closed

    def ship(self, fn: Callable[..., Any]) -> ShippedCode:
        return self._scheduler.executor.ship(fn)

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> asyncio.Future[Any]:
        executor = self._scheduler.executor
        if executor.closed:
            raise ClosedResourceError(f"{executor.name} is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._scheduler._submit(self, _Task(future, fn, args))
        return future

    def close(self) -> None:
        """Cancel the tasks still waiting and leave the scheduler. Idempotent."""
        self._scheduler._close(self)

    async def aclose(self) -> None:
        self.close()

    # -- the executor's declared features, passed on ------------------------------------

    async def start(self) -> None:
        await self._scheduler.executor.start()

    @property
    def workers_replaced(self) -> int:
        return self._scheduler.executor.workers_replaced

    @property
    def seals_chunks(self) -> bool:
        return self._scheduler.executor.seals_chunks

    @property
    def split_seconds(self) -> float | None:
        """How long a split of a file job should take on this engine (``None``: no bound)."""
        return self._scheduler.split_seconds

    @property
    def can_kill_tasks(self) -> bool:
        return self._scheduler.executor.can_kill_tasks

    @property
    def runs_coroutines(self) -> bool:
        return self._scheduler.executor.runs_coroutines

    @property
    def same_machine(self) -> bool:
        return self._scheduler.executor.same_machine

    @property
    def in_process(self) -> bool:
        return self._scheduler.executor.in_process

    def kill_task(self, task: asyncio.Future[Any], *, ran_for: float) -> bool:
        """Pass ``task`` on to the executor's `Executor.kill_task` once it holds the task;
        False while the task still waits for its turn here."""
        return self._scheduler._kill(self, task, ran_for)

    def open_folder(
        self, reducer: Callable[[Any, Any], Any], *, initial: Any, ordered: bool
    ) -> Folder | None:
        return self._scheduler.executor.open_folder(reducer, initial=initial, ordered=ordered)
