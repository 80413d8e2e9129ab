"""The caller's side of `ProcessExecutor`'s worker processes: one thread, no blocking.

::

    submit (loop thread) ──► pending ──► a ready worker with room ──► its task pipe
                                                                        │
       future set on the task's loop ◄── reply frame ◄── its reply pipe ◄┘
                                         (unpickled here)

    every TICK_SECONDS: heartbeats read from shared memory; a worker with no sign of life
    for ``stall_timeout`` is killed. A worker that ends (its sentinel turns readable) fails
    the one task it was running and hands back those it had not started; a new worker
    takes its slot.

Everything here runs on one helper thread, the pool thread, around one selector: the task
and reply pipes are non-blocking, a worker's end is seen through its process sentinel,
processes are started on a thread of their own (a forkserver handshake can take a while).
So no stopped, hung or dying worker can make anyone wait: not the event loop, not this
thread, not the other workers. The event loop only pickles small tasks and sets futures.

Each worker gets at most `DEPTH` tasks at a time, the second queued in its pipe so that it
never waits a round trip for its next task; idle workers are served first. When a worker
ends, the first task it had not answered is the one it was running (its slot says whether it
had started it); the others never started and simply go back to the front of the queue.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import logging
import multiprocessing
import multiprocessing.context
import os
import selectors
import signal
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from .._exceptions import BrokenWorkerError, WorkerTraceback
from .._retry import Verdict
from ._base import WorkerLost
from ._handle import Task
from ._handle import WorkerHandle as Worker
from ._proc import describe_exit, oom_kills, proc_state, send, stopped, unprompted_kill
from ._process_worker import CONTROL, Slots, pack, serve, unpack

__all__ = ["DEPTH", "Pool", "TICK_SECONDS"]

log = logging.getLogger("aiomr.executors._process")

DEPTH = 2
"""Tasks a worker holds at most: the one it runs and the next, already in its pipe."""
TICK_SECONDS = 0.1
"""How often the pool thread looks at the workers' heartbeats and deadlines."""
BOOT_SECONDS = 120.0
"""How long a new worker may take to say it is ready (importing the caller's main module and
whatever it imports) before it counts as failed to start."""
BOOT_FAILURES = 3
"""Workers in a row that end before they are ready, after which the pool gives up: tasks
fail with `BrokenWorkerError` until the next submit tries again."""
SILENT_SECONDS = 0.5
"""A worker whose heartbeat has stood still this long gets no new task while it stays so: it
may be stopped, and a task sent to it would wait for ``stall_timeout``. (An idle worker's
heartbeat never stands still; a busy one's may, inside a long C call: it keeps its task.)"""
TERMINATE_GRACE = 5.0
"""Seconds a terminated worker may take to exit before it is killed."""
_BIG_REPLY = 256 << 10
"""Replies from this size on are unpickled through a reader that hands the GIL over between
pickle frames, so the event loop's thread is never held for the whole of one."""
_READ_BUDGET = 8 << 20
"""Bytes read from one worker per turn of the pool thread, so one large reply cannot hold up
the other workers' replies."""


def _resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    elif isinstance(value, asyncio.CancelledError):
        future.cancel()
    else:
        future.set_exception(value)


class Pool:
    """Worker processes for one `ProcessExecutor`, served by one pool thread.

    ``submit``, ``kill``, ``pids`` and ``close`` may be called from any thread (the event
    loop's, in practice); everything else happens on the pool thread.
    """

    def __init__(
        self,
        max_workers: int,
        context: multiprocessing.context.BaseContext,
        *,
        niceness: int,
        stall_timeout: float,
        directory: str,
    ) -> None:
        self.max_workers = max_workers
        self.replaced = 0
        """Workers started to take the place of one that ended."""
        self._context = context
        self._niceness = niceness
        self._stall_timeout = stall_timeout
        self._slots_path = os.path.join(directory, "slots")
        self._slots = Slots(self._slots_path, max_workers, create=True)
        self._lock = threading.Lock()
        self._pending: collections.deque[Task] = collections.deque()
        self._workers: dict[int, Worker] = {}
        """By slot: the live worker of each slot that has one."""
        self._booting: set[int] = set()
        self._respawn_at: dict[int, float] = {}
        self._boot_failures = 0
        self._broken: BaseException | None = None
        self._ready_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._closing = False
        self._closed_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._kill_at: float | None = None
        self._seq = 0
        self._oom_kills = oom_kills()
        """The OOM killer's count, read every tick: a SIGKILL while it stood still since
        the task started was not the OOM killer's."""
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._writing: set[int] = set()
        self._commands: collections.deque[Callable[[], None]] = collections.deque()
        self._thread = threading.Thread(target=self._run, name="aiomr-pool", daemon=True)
        self._thread.start()
        _live.add(self)
        for slot in range(max_workers):
            self._spawn(slot)

    # -- called from other threads ------------------------------------------------------

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Queue ``fn(*args)``; return a future of the running loop for its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        try:
            call = pack((fn, args))
        except Exception as exc:  # a record on its way out that cannot be pickled
            future.set_exception(exc)
            return future
        with self._lock:
            task = Task(0, call, future, loop)
            self._pending.append(task)
        self._command(self._assign)
        return future

    def limit(self, future: asyncio.Future[Any], seconds: float) -> bool:
        """Have the worker of the task whose future `submit` returned killed once the task
        has run for ``seconds`` (time waiting to start does not count); False if no such
        task is here."""
        with self._lock:
            queues = [self._pending, *(w.tasks for w in self._workers.values())]
            for queue in queues:
                for task in queue:
                    if task.future is future and not future.done():
                        task.limit = seconds
                        return True
        return False

    def pids(self) -> list[int]:
        """Process ids of the workers that are ready and not known to have ended."""
        with self._lock:
            return [w.pid for w in self._workers.values() if w.ready and not w.ended]

    def wait_ready(self) -> asyncio.Future[None]:
        """A future of the running loop, set once every worker is ready (or the pool gave up)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._ready_waiters.append((loop, future))
        self._command(self._check_ready)
        return future

    def close(self, *, terminate: bool) -> asyncio.Future[None]:
        """Stop every worker; return a future of the running loop set once all have ended.

        Workers with tasks are terminated when ``terminate`` is true (SIGTERM, then SIGKILL
        after `TERMINATE_GRACE`); idle ones are told to exit. A stopped worker is killed.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._closed_waiters.append((loop, future))
        self._command(lambda: self._close(terminate))
        return future

    def kill_all(self) -> None:
        """SIGKILL every worker now (cancelled close, interpreter exit)."""
        self._closing = True
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            send(worker.pid)
        self._command(lambda: None)

    def _command(self, command: Callable[[], None]) -> None:
        self._commands.append(command)
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")

    # -- the pool thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # a bug here must not leave anybody waiting
            log.exception("aiomr's pool thread failed; its workers are stopped")
            self._fail_everything(exc)

    def _fail_everything(self, exc: BaseException) -> None:
        error = BrokenWorkerError(f"the process pool failed: {type(exc).__name__}: {exc}")
        self._closing = True
        self._broken = error
        with self._lock:
            tasks = list(self._pending)
            self._pending.clear()
            for worker in self._workers.values():
                tasks.extend(worker.tasks)
                worker.tasks.clear()
                send(worker.pid)
        for task in tasks:
            self._deliver(task, False, error)
        self._check_ready()
        with self._lock:
            waiters, self._closed_waiters = self._closed_waiters, []
        for loop, future in waiters:
            self._deliver(Task(0, [], future, loop), True, None)
        _live.discard(self)

    def _serve(self) -> None:
        next_tick = time.monotonic() + TICK_SECONDS
        while True:
            timeout = max(0.0, next_tick - time.monotonic())
            for key, _ in self._selector.select(timeout):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                else:
                    key.data()
            while self._commands:
                self._commands.popleft()()
            now = time.monotonic()
            if now >= next_tick:
                self._tick(now)
                next_tick = now + TICK_SECONDS
            self._assign()
            if self._closing and not self._workers and not self._booting:
                self._finish()
                return

    def _spawn(self, slot: int) -> None:
        """Start a worker for ``slot`` on a thread of its own."""
        self._booting.add(slot)
        self._slots.clear(slot)
        threading.Thread(
            target=self._start_process, args=(slot,), name="aiomr-spawn", daemon=True
        ).start()

    def _start_process(self, slot: int) -> None:
        try:
            tasks_in, tasks_out = self._context.Pipe(duplex=False)
            replies_in, replies_out = self._context.Pipe(duplex=False)
            process = self._context.Process(  # type: ignore[attr-defined]
                target=serve,
                args=(
                    tasks_in,
                    replies_out,
                    self._slots_path,
                    slot,
                    self.max_workers,
                    self._niceness,
                    os.getpid(),
                ),
                name=f"aiomr-worker-{slot}",
            )
            process.start()
            # multiprocessing polls every child it knows of whenever any thread starts a
            # process, and a dead child's exit status can be read only once: a poll from
            # a spawn thread racing the pool thread's left the pool with status 255 for a
            # worker killed by SIGKILL. The pool reaps its workers itself.
            multiprocessing.process._children.discard(process)  # type: ignore[attr-defined]
            tasks_in.close()
            replies_out.close()
        except BaseException as exc:
            error = exc
            self._command(lambda: self._spawn_failed(slot, error))
            return
        worker = Worker(slot, process, tasks_out, replies_in, time.monotonic())
        self._command(lambda: self._add(worker))

    def _spawn_failed(self, slot: int, exc: BaseException) -> None:
        self._booting.discard(slot)
        log.warning("a worker process could not be started: %s", exc)
        self._boot_failed(slot, f"it could not be started: {exc}")

    def _add(self, worker: Worker) -> None:
        self._booting.discard(worker.slot)
        worker.last_sign = time.monotonic()
        with self._lock:
            self._workers[worker.slot] = worker
        self._selector.register(worker.in_fd, selectors.EVENT_READ, lambda: self._read(worker))
        self._selector.register(
            worker.process.sentinel, selectors.EVENT_READ, lambda: self._ended(worker)
        )
        if self._closing:
            self._stop(worker, terminate=True)

    def _assign(self) -> None:
        """Hand pending tasks to ready workers, idle ones first."""
        if not self._pending:
            return
        with self._lock:
            while self._pending:
                task = self._pending[0]
                if task.future.done():  # cancelled while it waited: it never runs
                    self._pending.popleft()
                    continue
                now = time.monotonic()
                ready = [
                    w
                    for w in self._workers.values()
                    if w.ready and not w.ended and now - w.last_sign < SILENT_SECONDS
                ]
                if not ready:
                    break
                worker = min(ready, key=lambda w: len(w.tasks))
                if len(worker.tasks) >= DEPTH:
                    break
                self._pending.popleft()
                # A number of its own each time it is sent: a copy taken back from a
                # silent worker may still run there one day, and its answer is ignored.
                self._seq += 1
                task.seq, task.started_at, task.oom_kills = self._seq, 0.0, self._oom_kills
                worker.send(task)
                self._write(worker)

    def _write(self, worker: Worker) -> None:
        """Write what is queued for ``worker``; wait for its pipe to take the rest."""
        left = worker.flush()
        fd = worker.out_fd
        if left and fd not in self._writing:
            self._writing.add(fd)
            self._selector.register(fd, selectors.EVENT_WRITE, lambda: self._write(worker))
        elif not left and fd in self._writing:
            self._writing.discard(fd)
            self._selector.unregister(fd)

    def _read(self, worker: Worker, *, drain: bool = False) -> None:
        """Handle every whole frame ``worker`` has written, without waiting for more."""
        for tag, body in worker.receive(float("inf") if drain else _READ_BUDGET):
            self._frame(worker, tag, body)

    def _frame(self, worker: Worker, tag: int, body: bytearray) -> None:
        if tag == CONTROL:
            message = unpack(body)
            if message[0] == "ready" and not worker.ready:
                worker.ready = True
                worker.last_sign = time.monotonic()
                worker.pid = int(message[1])
                self._boot_failures = 0
                self._broken = None
                self._check_ready()
            return
        with self._lock:
            if tag in worker.revoked:  # taken back while it was silent, and run elsewhere
                worker.revoked.discard(tag)
                return
            if not worker.tasks or worker.tasks[0].seq != tag:
                log.error("worker %d answered task %d out of turn; ignored", worker.pid, tag)
                return
            task = worker.tasks.popleft()
        try:
            if len(body) >= _BIG_REPLY:
                ok, value = unpack(body, sliced=True)
            else:
                ok, value = unpack(body)
        except Exception as exc:
            ok, value = False, BrokenWorkerError(f"a reply from worker {worker.pid} is unreadable")
            value.__cause__ = exc
        else:
            if not ok:
                exception, formatted = value
                exception.__cause__ = WorkerTraceback(formatted)
                value = exception
        self._deliver(task, ok, value)

    def _deliver(self, task: Task, ok: bool, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
            task.loop.call_soon_threadsafe(_resolve, task.future, ok, value)

    def _started(self, worker: Worker, task: Task) -> bool:
        """Whether ``worker`` has taken ``task`` up (it writes each one's number as soon as it
        has read it, before it even loads the task's code)."""
        return self._slots.read(worker.slot)[1] == task.seq

    def _running(self, worker: Worker, task: Task) -> bool:
        """Whether ``worker`` runs ``task``: its code is loaded, its ``task_timeout`` counts."""
        return self._slots.read(worker.slot)[2] == task.seq

    def _end(self, worker: Worker, verdict: Verdict, why: str) -> None:
        """Kill ``worker``; its running task fails with ``verdict``, for ``why``."""
        if worker.ending is None:
            worker.ending = (verdict, why)
        send(worker.pid)

    def _ended(self, worker: Worker) -> None:
        """``worker``'s process has ended: settle its tasks, free its slot, replace it."""
        if worker.ended:
            return
        code = worker.process.exitcode
        if code is None:  # the sentinel turned readable a moment before the exit status
            return
        self._read(worker, drain=True)  # replies written before the end still count
        worker.ended = True
        self._forget(worker)
        with self._lock:
            running = worker.tasks.popleft() if worker.tasks else None
            if running is not None and not self._started(worker, running):
                worker.tasks.appendleft(running)
                running = None
            self._pending.extendleft(reversed(worker.tasks))
            worker.tasks.clear()
        if running is not None:
            self._lose(worker, running, code)
        elif not worker.ready and not self._closing:
            self._boot_failed(worker.slot, describe_exit(worker.pid, code))
            return
        elif worker.ending is not None and not self._closing:
            how = describe_exit(worker.pid, code)
            log.warning("%s: %s; starting another", how, worker.ending[1])
        elif not self._closing:
            log.warning("%s while idle; starting another", describe_exit(worker.pid, code))
        if not self._closing:
            self.replaced += 1
            self._spawn(worker.slot)

    def _lose(self, worker: Worker, task: Task, code: int) -> None:
        """Fail ``task``, whose worker ended while running it, saying how and whose fault."""
        how = describe_exit(worker.pid, code)
        if self._closing:
            self._deliver(task, False, asyncio.CancelledError())
            return
        verdict: Verdict
        if worker.ending is not None:
            verdict, why = worker.ending
            how = f"{how}: {why}"
        elif code == -signal.SIGKILL and unprompted_kill(task.oom_kills):
            verdict, how = "killed", f"{how} from outside (not by the OOM killer)"
        else:
            verdict = "failed"
        log.warning("%s; starting another", how)
        self._deliver(task, False, WorkerLost(how, verdict=verdict))

    def _boot_failed(self, slot: int, how: str) -> None:
        self._boot_failures += 1
        if self._closing:
            return
        if self._boot_failures >= BOOT_FAILURES:
            error = BrokenWorkerError(
                "worker processes could not start; when the program is a script, its "
                "top-level code must sit under `if __name__ == '__main__':` because workers "
                f"import the main module (the last one: {how})"
            )
            self._broken = error
            with self._lock:
                failed = list(self._pending)
                self._pending.clear()
            for task in failed:
                self._deliver(task, False, error)
            self._check_ready()
            # Try again on the next submit, not in a loop.
            self._respawn_at[slot] = float("inf")
            return
        self._respawn_at[slot] = time.monotonic() + 0.1 * self._boot_failures

    def _forget(self, worker: Worker) -> None:
        for fd in (worker.in_fd, worker.process.sentinel):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fd)
        fd = worker.out_fd
        if fd in self._writing:
            self._writing.discard(fd)
            self._selector.unregister(fd)
        with self._lock:
            if self._workers.get(worker.slot) is worker:
                del self._workers[worker.slot]
        worker.close()

    def _tick(self, now: float) -> None:
        self._oom_kills = oom_kills()
        for slot, when in list(self._respawn_at.items()):
            if when == float("inf") and self._pending and not self._closing:
                when = now  # a new task: try once more
                self._boot_failures = BOOT_FAILURES - 1
            if when <= now and not self._closing:
                del self._respawn_at[slot]
                self._spawn(slot)
        for worker in list(self._workers.values()):
            if worker.ended:
                continue
            if worker.ending is None and not worker.ready:
                if now - worker.spawned_at > BOOT_SECONDS:
                    self._end(worker, "failed", f"it was not ready after {BOOT_SECONDS:.0f} s")
                elif now - worker.spawned_at > self._stall_timeout:
                    state = proc_state(worker.pid)
                    if stopped(state):
                        self._end(worker, "killed", "it was stopped while starting")
                continue
            if worker.process.exitcode is not None:
                self._ended(worker)
                continue
            self._check_limit(worker, now)
            beats = self._slots.read(worker.slot)[0]
            if beats != worker.beats:
                worker.beats, worker.last_sign = beats, now
                continue
            if now - worker.last_sign >= SILENT_SECONDS and worker.ending is None:
                self._take_back(worker, now)
            if now - worker.last_sign < self._stall_timeout or worker.ending is not None:
                continue
            state = proc_state(worker.pid)
            if state is not None and not stopped(state) and state[1] != worker.cpu:
                worker.cpu, worker.last_sign = state[1], now  # busy in C code: alive
                continue
            silent = f"no sign of life for {now - worker.last_sign:.1f} s"
            if stopped(state):
                self._end(worker, "killed", f"it was stopped: {silent}")
            else:
                self._end(worker, "failed", f"it hung: {silent}")
        if self._closing and self._kill_at is not None and now >= self._kill_at:
            self._kill_at = None
            for worker in list(self._workers.values()):
                send(worker.pid)

    def _take_back(self, worker: Worker, now: float) -> None:
        """Give the tasks a silent ``worker`` has not started to workers that can run them.

        Silent for `SILENT_SECONDS`: stopped, perhaps, and a task waiting behind it would
        wait for ``stall_timeout``. Only when another worker has room, so a lone worker in a
        long C call keeps its next task; the copy left in its pipe is ignored if it ever runs.
        """
        if self._closing or len(worker.tasks) == 0:
            return
        with self._lock:
            keep = 1 if self._started(worker, worker.tasks[0]) else 0
            if len(worker.tasks) <= keep:
                return
            others = [
                w
                for w in self._workers.values()
                if w is not worker
                and w.ready
                and not w.ended
                and now - w.last_sign < SILENT_SECONDS
                and len(w.tasks) < DEPTH
            ]
            if not others:
                return
            back = [worker.tasks.pop() for _ in range(len(worker.tasks) - keep)]
            worker.revoked.update(task.seq for task in back)
            self._pending.extendleft(back)  # reversed twice: their order is kept

    def _check_limit(self, worker: Worker, now: float) -> None:
        """Note when ``worker``'s task starts running; kill the worker once the task has run
        longer than its limit."""
        task = worker.tasks[0] if worker.tasks else None
        if task is None or worker.ending is not None:
            return
        if task.started_at == 0.0:
            if self._running(worker, task):  # first seen running: its time counts from now
                task.started_at = now
            return
        if task.limit is None or now - task.started_at < task.limit:
            return
        self._read(worker, drain=True)  # it may have answered since the last look
        if not worker.tasks or worker.tasks[0] is not task:
            return
        state = proc_state(worker.pid)
        if stopped(state):
            # Its time ran out while it was stopped: that was not the task's doing.
            self._end(worker, "killed", "it was stopped past its task_timeout")
        else:
            self._end(worker, "failed", f"it ran longer than task_timeout={task.limit}s")

    def _check_ready(self) -> None:
        with self._lock:
            ready = sum(w.ready and not w.ended for w in self._workers.values())
            if ready < self.max_workers and self._broken is None and not self._closing:
                return
            waiters, self._ready_waiters = self._ready_waiters, []
        for loop, future in waiters:
            if self._broken is not None:
                self._deliver(Task(0, [], future, loop), False, self._broken)
            else:
                self._deliver(Task(0, [], future, loop), True, None)

    def _close(self, terminate: bool) -> None:
        self._closing = True
        self._respawn_at.clear()
        with self._lock:
            dropped = list(self._pending)
            self._pending.clear()
        for task in dropped:
            self._deliver(task, False, asyncio.CancelledError())
        self._check_ready()
        for worker in list(self._workers.values()):
            self._stop(worker, terminate=terminate or not worker.ready)
        self._kill_at = time.monotonic() + TERMINATE_GRACE

    def _stop(self, worker: Worker, *, terminate: bool) -> None:
        state = proc_state(worker.pid) if worker.pid else None
        if stopped(state):
            self._end(worker, "killed", "the pool was closed")
        elif (terminate and worker.tasks) or not worker.ready:
            # A stopped process acts on SIGTERM only once it runs again.
            send(worker.pid, signal.SIGTERM)
            send(worker.pid, signal.SIGCONT)
        else:
            worker.queue(CONTROL, [])
            self._write(worker)

    def _finish(self) -> None:
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._slots.close()
        _live.discard(self)
        with self._lock:
            waiters, self._closed_waiters = self._closed_waiters, []
        for loop, future in waiters:
            self._deliver(Task(0, [], future, loop), True, None)


_live: weakref.WeakSet[Pool] = weakref.WeakSet()


def _kill_at_exit() -> None:
    # multiprocessing joins the children it knows of when the interpreter exits; workers
    # of a pool nobody closed would wait for a task forever, and so would the exit.
    for pool in list(_live):
        pool.kill_all()


# Registered after multiprocessing's own exit handler (imported above), so it runs first.
atexit.register(_kill_at_exit)
