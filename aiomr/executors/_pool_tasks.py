"""Which worker holds which task: a process pool's queue, its handout, and what goes back.

Each worker gets at most `DEPTH` tasks at a time, the second queued in its pipe so that it
never waits a round trip for its next task; idle workers are served first. When a worker
ends, the first task it had not answered is the one it was running (its slot says whether it
had started it); the others never started and simply go back to the front of the queue. A
worker silent for a moment gives its unstarted tasks to workers that answer (`take_back`).

The book is shared: the event loop's thread adds tasks and looks them up, the pool thread
hands them out and settles them. Every access holds its lock. A reply becomes its task's
result or exception (`read_reply`), set on the future of the task's own loop (`deliver`),
as are the futures that wait for the pool to be ready or closed (`Waiters`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import mmap
import threading
import time
from collections.abc import Callable
from typing import Any

from .._exceptions import BrokenWorkerError, WorkerTraceback
from ._handle import Task
from ._handle import WorkerHandle as Worker
from ._process_worker import Slots, unpack

__all__ = ["DEPTH", "SILENT_SECONDS", "TaskBook", "Waiters", "deliver", "read_reply", "silent"]

log = logging.getLogger("aiomr.executors._process")

DEPTH = 2
"""Tasks a worker holds at most: the one it runs and the next, already in its pipe."""
SILENT_SECONDS = 0.5
"""A worker whose heartbeat has stood still this long gets no new task while it stays so: it
may be stopped, and a task sent to it would wait for ``stall_timeout``. (An idle worker's
heartbeat never stands still; a busy one's may, inside a long C call: it keeps its task.)"""
_BIG_REPLY = 256 << 10
"""Replies from this size on are unpickled through a reader that hands the GIL over between
pickle frames, so the event loop's thread is never held for the whole of one."""


def silent(worker: Worker, now: float) -> bool:
    """Whether ``worker`` has shown no sign of life for `SILENT_SECONDS`."""
    return now - worker.last_sign >= SILENT_SECONDS


def _resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    elif isinstance(value, asyncio.CancelledError):
        future.cancel()
    else:
        future.set_exception(value)


def read_reply(body: bytearray | mmap.mmap, pid: int) -> tuple[bool, Any]:
    """Unpickle a task's reply from worker ``pid``: ``(True, result)``, or ``(False,
    exception)`` with the worker's traceback as the exception's cause."""
    try:
        if len(body) >= _BIG_REPLY:
            ok, value = unpack(body, sliced=True)
        else:
            ok, value = unpack(body)
    except Exception as exc:
        ok, value = False, BrokenWorkerError(f"a reply from worker {pid} is unreadable")
        value.__cause__ = exc
    else:
        if not ok:
            exception, formatted = value
            exception.__cause__ = WorkerTraceback(formatted)
            value = exception
    return ok, value


def deliver(task: Task, ok: bool, value: Any) -> None:
    """Set ``task``'s future on its own loop: to ``value``, or failed with it unless ``ok``."""
    with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
        task.loop.call_soon_threadsafe(_resolve, task.future, ok, value)


class Waiters:
    """Futures of any threads' loops that wait for one event of the pool (ready, closed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def add(self) -> asyncio.Future[None]:
        """A future of the running loop, set when the pool next calls `settle`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._futures.append((loop, future))
        return future

    def settle(self, error: BaseException | None = None) -> None:
        """Set every future waiting now, each on its own loop: failed with ``error``, if any."""
        with self._lock:
            waiters, self._futures = self._futures, []
        for loop, future in waiters:
            if error is not None:
                deliver(Task(0, [], future, loop), False, error)
            else:
                deliver(Task(0, [], future, loop), True, None)


class TaskBook:
    """The tasks of one pool: those waiting for a worker, and those each worker holds."""

    def __init__(self, slots: Slots) -> None:
        self.lock = threading.Lock()
        self.pending: collections.deque[Task] = collections.deque()
        self.workers: dict[int, Worker] = {}
        """By slot: the live worker of each slot that has one."""
        self._slots = slots
        self._seq = 0

    # -- any thread -----------------------------------------------------------------------

    def add(self, task: Task) -> None:
        """Queue ``task`` for the next worker with room."""
        with self.lock:
            self.pending.append(task)

    def limit(self, future: asyncio.Future[Any], seconds: float) -> bool:
        """Give the task whose future is ``future`` a limit of ``seconds`` of running; False
        if no such task is here."""
        with self.lock:
            queues = [self.pending, *(w.tasks for w in self.workers.values())]
            for queue in queues:
                for task in queue:
                    if task.future is future and not future.done():
                        task.limit = seconds
                        return True
        return False

    def pids(self) -> list[int]:
        """Process ids of the workers that are ready and not known to have ended."""
        with self.lock:
            return [w.pid for w in self.workers.values() if w.ready and not w.ended]

    def ready_count(self) -> int:
        """Workers that are ready and not known to have ended."""
        with self.lock:
            return sum(w.ready and not w.ended for w in self.workers.values())

    def take_pending(self) -> list[Task]:
        """Remove and return every task that waits for a worker."""
        with self.lock:
            tasks = list(self.pending)
            self.pending.clear()
        return tasks

    def take_all(self) -> list[Task]:
        """Remove and return every task, waiting or held by a worker."""
        with self.lock:
            tasks = list(self.pending)
            self.pending.clear()
            for worker in self.workers.values():
                tasks.extend(worker.tasks)
                worker.tasks.clear()
        return tasks

    def live(self) -> list[Worker]:
        """The worker of each slot that has one."""
        with self.lock:
            return list(self.workers.values())

    # -- the pool thread ------------------------------------------------------------------

    def put(self, worker: Worker) -> None:
        """Count ``worker``, just started, as its slot's."""
        with self.lock:
            self.workers[worker.slot] = worker

    def remove(self, worker: Worker) -> None:
        """Forget ``worker``, which ended, unless another has taken its slot already."""
        with self.lock:
            if self.workers.get(worker.slot) is worker:
                del self.workers[worker.slot]

    def started(self, worker: Worker, task: Task) -> bool:
        """Whether ``worker`` has taken ``task`` up (it writes each one's number as soon as it
        has read it, before it even loads the task's code)."""
        return self._slots.read(worker.slot)[1] == task.seq

    def running(self, worker: Worker, task: Task) -> bool:
        """Whether ``worker`` runs ``task``: its code is loaded, its ``task_timeout`` counts."""
        return self._slots.read(worker.slot)[2] == task.seq

    def assign(self, oom_kills: int | None, write: Callable[[Worker], None]) -> None:
        """Hand pending tasks to ready workers, idle ones first; ``write`` sends to a worker.
        ``oom_kills``: the OOM killer's count, noted on each task as it starts."""
        if not self.pending:
            return
        with self.lock:
            while self.pending:
                task = self.pending[0]
                if task.future.done():  # cancelled while it waited: it never runs
                    self.pending.popleft()
                    continue
                now = time.monotonic()
                ready = [
                    w
                    for w in self.workers.values()
                    if w.ready and not w.ended and not silent(w, now)
                ]
                if not ready:
                    break
                worker = min(ready, key=lambda w: len(w.tasks))
                if len(worker.tasks) >= DEPTH:
                    break
                self.pending.popleft()
                # A number of its own each time it is sent: a copy taken back from a
                # silent worker may still run there one day, and its answer is ignored.
                self._seq += 1
                task.seq, task.started_at, task.oom_kills = self._seq, 0.0, oom_kills
                worker.send(task)
                write(worker)

    def answered(self, worker: Worker, tag: int) -> Task | None:
        """The task ``worker`` answered with frame ``tag``, no longer its; None if the answer
        is to be ignored."""
        with self.lock:
            if tag in worker.revoked:  # taken back while it was silent, and run elsewhere
                worker.revoked.discard(tag)
                return None
            if not worker.tasks or worker.tasks[0].seq != tag:
                log.error("worker %d answered task %d out of turn; ignored", worker.pid, tag)
                return None
            return worker.tasks.popleft()

    def settle(self, worker: Worker) -> Task | None:
        """Take back the tasks of ``worker``, which ended: those it had not started go back to
        the front of the queue; return the one it was running, if any."""
        with self.lock:
            running = worker.tasks.popleft() if worker.tasks else None
            if running is not None and not self.started(worker, running):
                worker.tasks.appendleft(running)
                running = None
            self.pending.extendleft(reversed(worker.tasks))
            worker.tasks.clear()
        return running

    def take_back(self, worker: Worker, now: float) -> None:
        """Give the tasks a silent ``worker`` has not started to workers that can run them.

        Silent for `SILENT_SECONDS`: stopped, perhaps, and a task waiting behind it would
        wait for ``stall_timeout``. Only when another worker has room, so a lone worker in a
        long C call keeps its next task; the copy left in its pipe is ignored if it ever runs.
        """
        if len(worker.tasks) == 0:
            return
        with self.lock:
            keep = 1 if self.started(worker, worker.tasks[0]) else 0
            if len(worker.tasks) <= keep:
                return
            others = [
                w
                for w in self.workers.values()
                if w is not worker
                and w.ready
                and not w.ended
                and not silent(w, now)
                and len(w.tasks) < DEPTH
            ]
            if not others:
                return
            back = [worker.tasks.pop() for _ in range(len(worker.tasks) - keep)]
            worker.revoked.update(task.seq for task in back)
            self.pending.extendleft(back)  # reversed twice: their order is kept
