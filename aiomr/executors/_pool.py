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

The pool's parts: which worker holds which task, and the handout, in
`aiomr.executors._pool_tasks`; the look at the workers every tick, and whose fault a worker's
end was, in `aiomr.executors._pool_health`; the workers' start, and the pace of restarts, in
`aiomr.executors._pool_spawner`. This module is the pool thread itself: its selector, the
frames to and from the workers, what a worker's end means for its tasks, and the close.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import logging
import mmap
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

from .._exceptions import BrokenWorkerError
from ._base import WorkerLost
from ._handle import Task
from ._handle import WorkerHandle as Worker
from ._pool_health import TICK_SECONDS, Watch, end, loss
from ._pool_spawner import Spawner
from ._pool_tasks import TaskBook, Waiters, deliver, read_reply
from ._proc import describe_exit, oom_kills, proc_state, send, stopped
from ._process_worker import CONTROL, Slots, pack, unpack

__all__ = ["Pool"]

log = logging.getLogger("aiomr.executors._process")

TERMINATE_GRACE = 5.0
"""Seconds a terminated worker may take to exit before it is killed."""
_READ_BUDGET = 8 << 20
"""Bytes read from one worker per turn of the pool thread, so one large reply cannot hold up
the other workers' replies."""


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
        slots_path = os.path.join(directory, "slots")
        self._slots = Slots(slots_path, max_workers, create=True)
        self._book = TaskBook(self._slots)
        self._spawner = Spawner(
            context,
            self._slots,
            slots_path,
            niceness=niceness,
            post=self._command,
            started=self._add,
            gave_up=self._gave_up,
            closing=lambda: self._closing,
        )
        self._watch = Watch(
            self._book,
            self._slots,
            stall_timeout,
            ended=self._ended,
            drain=lambda worker: self._read(worker, drain=True),
            closing=lambda: self._closing,
        )
        self._ready_waiters = Waiters()
        self._closing = False
        self._closed_waiters = Waiters()
        self._kill_at: float | None = None
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
            self._spawner.spawn(slot)

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
        self._book.add(Task(0, call, future, loop))
        self._command(self._assign)
        return future

    def limit(self, future: asyncio.Future[Any], seconds: float) -> bool:
        """Have the worker of the task whose future `submit` returned killed once the task
        has run for ``seconds`` (time waiting to start does not count); False if no such
        task is here."""
        return self._book.limit(future, seconds)

    def pids(self) -> list[int]:
        """Process ids of the workers that are ready and not known to have ended."""
        return self._book.pids()

    def wait_ready(self) -> asyncio.Future[None]:
        """A future of the running loop, set once every worker is ready (or the pool gave up)."""
        future = self._ready_waiters.add()
        self._command(self._check_ready)
        return future

    def close(self, *, terminate: bool) -> asyncio.Future[None]:
        """Stop every worker; return a future of the running loop set once all have ended.

        Workers with tasks are terminated when ``terminate`` is true (SIGTERM, then SIGKILL
        after `TERMINATE_GRACE`); idle ones are told to exit. A stopped worker is killed.
        """
        future = self._closed_waiters.add()
        self._command(lambda: self._close(terminate))
        return future

    def kill_all(self) -> None:
        """SIGKILL every worker now (cancelled close, interpreter exit)."""
        self._closing = True
        for worker in self._book.live():
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
        self._spawner.broken = error
        tasks = self._book.take_all()
        for worker in self._book.live():
            send(worker.pid)
        for task in tasks:
            deliver(task, False, error)
        self._check_ready()
        self._closed_waiters.settle()
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
            if self._closing and not self._book.workers and not self._spawner.booting:
                self._finish()
                return

    def _add(self, worker: Worker) -> None:
        worker.last_sign = time.monotonic()
        self._book.put(worker)
        self._selector.register(worker.in_fd, selectors.EVENT_READ, lambda: self._read(worker))
        self._selector.register(
            worker.process.sentinel, selectors.EVENT_READ, lambda: self._ended(worker)
        )
        if self._closing:
            self._stop(worker, terminate=True)

    def _assign(self) -> None:
        """Hand pending tasks to ready workers, idle ones first."""
        self._book.assign(self._oom_kills, self._write)

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

    def _frame(self, worker: Worker, tag: int, body: bytearray | mmap.mmap) -> None:
        if tag == CONTROL:
            message = unpack(body)
            if message[0] == "ready" and not worker.ready:
                worker.ready = True
                worker.last_sign = time.monotonic()
                worker.pid = int(message[1])
                self._spawner.ready()
                self._check_ready()
            return
        task = self._book.answered(worker, tag)
        if task is None:
            return
        ok, value = read_reply(body, worker.pid)
        deliver(task, ok, value)

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
        running = self._book.settle(worker)
        if running is not None:
            self._lose(worker, running, code)
        elif not worker.ready and not self._closing:
            self._spawner.failed(worker.slot, describe_exit(worker.pid, code))
            return
        elif worker.ending is not None and not self._closing:
            how = describe_exit(worker.pid, code)
            log.warning("%s: %s; starting another", how, worker.ending[1])
        elif not self._closing:
            log.warning("%s while idle; starting another", describe_exit(worker.pid, code))
        if not self._closing:
            self.replaced += 1
            self._spawner.spawn(worker.slot)

    def _lose(self, worker: Worker, task: Task, code: int) -> None:
        """Fail ``task``, whose worker ended while running it, saying how and whose fault."""
        if self._closing:
            deliver(task, False, asyncio.CancelledError())
            return
        verdict, how = loss(worker, task, code)
        log.warning("%s; starting another", how)
        deliver(task, False, WorkerLost(how, verdict=verdict))

    def _gave_up(self, error: BaseException) -> None:
        """Workers failed to start too often: fail the tasks that wait for one."""
        for task in self._book.take_pending():
            deliver(task, False, error)
        self._check_ready()

    def _forget(self, worker: Worker) -> None:
        for fd in (worker.in_fd, worker.process.sentinel):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fd)
        fd = worker.out_fd
        if fd in self._writing:
            self._writing.discard(fd)
            self._selector.unregister(fd)
        self._book.remove(worker)
        worker.close()

    def _tick(self, now: float) -> None:
        self._oom_kills = oom_kills()
        self._spawner.respawn_due(now, wanted=bool(self._book.pending))
        self._watch.look(now)
        if self._closing and self._kill_at is not None and now >= self._kill_at:
            self._kill_at = None
            for worker in list(self._book.workers.values()):
                send(worker.pid)

    def _check_ready(self) -> None:
        ready = self._book.ready_count()
        broken = self._spawner.broken
        if ready < self.max_workers and broken is None and not self._closing:
            return
        self._ready_waiters.settle(broken)

    def _close(self, terminate: bool) -> None:
        self._closing = True
        self._spawner.stop()
        for task in self._book.take_pending():
            deliver(task, False, asyncio.CancelledError())
        self._check_ready()
        for worker in list(self._book.workers.values()):
            self._stop(worker, terminate=terminate or not worker.ready)
        self._kill_at = time.monotonic() + TERMINATE_GRACE

    def _stop(self, worker: Worker, *, terminate: bool) -> None:
        state = proc_state(worker.pid) if worker.pid else None
        if stopped(state):
            end(worker, "killed", "the pool was closed")
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
        self._closed_waiters.settle()


_live: weakref.WeakSet[Pool] = weakref.WeakSet()


def _kill_at_exit() -> None:
    # multiprocessing joins the children it knows of when the interpreter exits; workers
    # of a pool nobody closed would wait for a task forever, and so would the exit.
    for pool in list(_live):
        pool.kill_all()


# Registered after multiprocessing's own exit handler (imported above), so it runs first.
atexit.register(_kill_at_exit)
