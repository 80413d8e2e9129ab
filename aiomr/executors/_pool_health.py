"""Judge a process pool's workers from the pool thread: alive, silent, stuck, or over time.

::

    every TICK_SECONDS, for each worker:
      not ready: none after BOOT_SECONDS, or stopped while starting ───► end it
      its process ended ───────────────────────────────────────────────► the pool settles it
      its task ran past ``task_timeout`` ──────────────────────────────► end it
      heartbeat moved since the last look ─────────────────────────────► alive
      silent for SILENT_SECONDS ───► its unstarted tasks go to workers that answer
      silent for ``stall_timeout``:
        CPU time used since the last look (busy in C code) ────────────► alive
        stopped (``/proc`` says T or t) ───► end it, "killed": not the task's fault
        otherwise ─────────────────────────► end it, "failed": the task hung it

A worker whose task ran over its time ends with the verdict "failed" for that task, or
"killed" when the worker was stopped meanwhile (not the task's doing).

The judgements read the heartbeat counters and ``/proc`` (`aiomr.executors._proc`), never
waiting for a worker; `Watch` makes them every tick and kills the workers that must end
(`end`), noting why. A worker that ends, whoever ended it, fails the one task it was
running: `loss` says how, and whose fault it was, from the reason noted (`Ending`) or the
exit status; the pool thread settles the rest (`aiomr.executors._pool`).
"""

from __future__ import annotations

import signal
from collections.abc import Callable

from .._retry import Verdict
from ._handle import Task
from ._handle import WorkerHandle as Worker
from ._pool_tasks import TaskBook, silent
from ._proc import describe_exit, proc_state, send, stopped, unprompted_kill
from ._process_worker import Slots

__all__ = [
    "BOOT_SECONDS",
    "TICK_SECONDS",
    "Ending",
    "Watch",
    "boot_ending",
    "end",
    "heard_from",
    "loss",
    "overrun_ending",
    "stall_ending",
]

TICK_SECONDS = 0.1
"""How often the pool thread looks at the workers' heartbeats and deadlines."""
BOOT_SECONDS = 120.0
"""How long a new worker may take to say it is ready (importing the caller's main module and
whatever it imports) before it counts as failed to start."""

Ending = tuple[Verdict, str]
"""Why the pool ends a worker: the verdict for the task it runs, and a description."""


def heard_from(worker: Worker, beats: int, now: float) -> bool:
    """Note ``worker``'s heartbeat count ``beats``; whether it moved since the last look."""
    if beats != worker.beats:
        worker.beats, worker.last_sign = beats, now
        return True
    return False


def boot_ending(worker: Worker, now: float, stall_timeout: float) -> Ending | None:
    """Why a worker that is not ready yet must end, if it must: too slow, or stopped."""
    if now - worker.spawned_at > BOOT_SECONDS:
        return "failed", f"it was not ready after {BOOT_SECONDS:.0f} s"
    if now - worker.spawned_at > stall_timeout:
        state = proc_state(worker.pid)
        if stopped(state):
            return "killed", "it was stopped while starting"
    return None


def stall_ending(worker: Worker, now: float, stall_timeout: float) -> Ending | None:
    """Why a worker whose heartbeat stood still must end, if it must: stopped, or hung.

    Silent for less than ``stall_timeout`` (or ending already), it is left alone; so is one
    that used CPU time since the last look, busy in C code that holds the GIL.
    """
    if now - worker.last_sign < stall_timeout or worker.ending is not None:
        return None
    state = proc_state(worker.pid)
    if state is not None and not stopped(state) and state[1] != worker.cpu:
        worker.cpu, worker.last_sign = state[1], now  # busy in C code: alive
        return None
    silence = f"no sign of life for {now - worker.last_sign:.1f} s"
    if stopped(state):
        return "killed", f"it was stopped: {silence}"
    return "failed", f"it hung: {silence}"


def overrun_ending(worker: Worker, task: Task) -> Ending:
    """Why a worker whose task ran past its limit ends: the task's doing, unless stopped."""
    state = proc_state(worker.pid)
    if stopped(state):
        # Its time ran out while it was stopped: that was not the task's doing.
        return "killed", "it was stopped past its task_timeout"
    return "failed", f"it ran longer than task_timeout={task.limit}s"


def loss(worker: Worker, task: Task, code: int) -> tuple[Verdict, str]:
    """How ``task`` failed, its worker having ended with exit ``code`` while running it, and
    whether that was the task's fault: the verdict for the retry rules, and a description."""
    how = describe_exit(worker.pid, code)
    if worker.ending is not None:
        verdict, why = worker.ending
        return verdict, f"{how}: {why}"
    if code == -signal.SIGKILL and unprompted_kill(task.oom_kills):
        return "killed", f"{how} from outside (not by the OOM killer)"
    return "failed", how


def end(worker: Worker, verdict: Verdict, why: str) -> None:
    """Kill ``worker``; its running task fails with ``verdict``, for ``why``."""
    if worker.ending is None:
        worker.ending = (verdict, why)
    send(worker.pid)


class Watch:
    """The pool thread's look at its workers every `TICK_SECONDS` (the diagram above).

    ``ended`` settles a worker whose process has ended; ``drain`` handles the replies a
    worker has written; ``closing`` says whether the pool is closing.
    """

    def __init__(
        self,
        book: TaskBook,
        slots: Slots,
        stall_timeout: float,
        *,
        ended: Callable[[Worker], None],
        drain: Callable[[Worker], None],
        closing: Callable[[], bool],
    ) -> None:
        self._book = book
        self._slots = slots
        self._stall_timeout = stall_timeout
        self._ended = ended
        self._drain = drain
        self._closing = closing

    def look(self, now: float) -> None:
        """Judge every worker once; end those that must end."""
        for worker in list(self._book.workers.values()):
            if worker.ended:
                continue
            if worker.ending is None and not worker.ready:
                ending = boot_ending(worker, now, self._stall_timeout)
                if ending is not None:
                    end(worker, *ending)
                continue
            if worker.process.exitcode is not None:
                self._ended(worker)
                continue
            self._check_limit(worker, now)
            if heard_from(worker, self._slots.read(worker.slot)[0], now):
                continue
            if silent(worker, now) and worker.ending is None and not self._closing():
                self._book.take_back(worker, now)
            ending = stall_ending(worker, now, self._stall_timeout)
            if ending is not None:
                end(worker, *ending)

    def _check_limit(self, worker: Worker, now: float) -> None:
        """Note when ``worker``'s task starts running; kill the worker once the task has run
        longer than its limit."""
        task = worker.tasks[0] if worker.tasks else None
        if task is None or worker.ending is not None:
            return
        if task.started_at == 0.0:
            if self._book.running(worker, task):  # first seen running: its time counts from now
                task.started_at = now
            return
        if task.limit is None or now - task.started_at < task.limit:
            return
        self._drain(worker)  # it may have answered since the last look
        if not worker.tasks or worker.tasks[0] is not task:
            return
        end(worker, *overrun_ending(worker, task))
