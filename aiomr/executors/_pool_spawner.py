"""Start a process pool's workers, each on a thread of its own, and pace their restarts.

Starting a process can take a while (a forkserver handshake), so every worker starts on a
thread of its own and the pool thread hears of it through a command: the pool thread never
waits for one. A worker that cannot start, or ends before it says it is ready, is a failed
start; the slot is tried again a little later each time, and after `BOOT_FAILURES` in a row
the pool gives up: its tasks fail with `BrokenWorkerError` until the next one tries again.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.context
import os
import threading
import time
from collections.abc import Callable

from .._exceptions import BrokenWorkerError
from ._handle import WorkerHandle as Worker
from ._process_worker import Slots, serve

__all__ = ["BOOT_FAILURES", "Spawner"]

log = logging.getLogger("aiomr.executors._process")

BOOT_FAILURES = 3
"""Workers in a row that end before they are ready, after which the pool gives up: tasks
fail with `BrokenWorkerError` until the next submit tries again."""


class Spawner:
    """Starts the worker processes of one pool. Everything but the start itself happens on
    the pool thread; ``post`` hands a command to it.

    ``started`` receives each worker whose process has started (it is not ready yet);
    ``gave_up`` the error the pool's tasks fail with once starts failed `BOOT_FAILURES`
    times in a row; ``closing`` says whether the pool is closing (no new worker then).
    """

    def __init__(
        self,
        context: multiprocessing.context.BaseContext,
        slots: Slots,
        slots_path: str,
        *,
        niceness: int,
        post: Callable[[Callable[[], None]], None],
        started: Callable[[Worker], None],
        gave_up: Callable[[BaseException], None],
        closing: Callable[[], bool],
    ) -> None:
        self._context = context
        self._slots = slots
        self._slots_path = slots_path
        self._niceness = niceness
        self._post = post
        self._started = started
        self._gave_up = gave_up
        self._closing = closing
        self.booting: set[int] = set()
        """Slots whose worker process is being started."""
        self.broken: BaseException | None = None
        """Why the pool's tasks fail, once it gave up starting workers (until one is ready)."""
        self._failures = 0
        self._respawn_at: dict[int, float] = {}

    def spawn(self, slot: int) -> None:
        """Start a worker for ``slot`` on a thread of its own."""
        self.booting.add(slot)
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
                    self._slots.count,
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
            self._post(lambda: self._spawn_failed(slot, error))
            return
        worker = Worker(slot, process, tasks_out, replies_in, time.monotonic())
        self._post(lambda: self._add(worker))

    def _spawn_failed(self, slot: int, exc: BaseException) -> None:
        self.booting.discard(slot)
        log.warning("a worker process could not be started: %s", exc)
        self.failed(slot, f"it could not be started: {exc}")

    def _add(self, worker: Worker) -> None:
        self.booting.discard(worker.slot)
        self._started(worker)

    def ready(self) -> None:
        """A worker said it is ready: starts no longer fail in a row."""
        self._failures = 0
        self.broken = None

    def failed(self, slot: int, how: str) -> None:
        """The worker of ``slot`` did not start, ``how``: try again later, or give up."""
        self._failures += 1
        if self._closing():
            return
        if self._failures >= BOOT_FAILURES:
            error = BrokenWorkerError(
                "worker processes could not start; when the program is a script, its "
                "top-level code must sit under `if __name__ == '__main__':` because workers "
                f"import the main module (the last one: {how})"
            )
            self.broken = error
            self._gave_up(error)
            # Try again on the next submit, not in a loop.
            self._respawn_at[slot] = float("inf")
            return
        self._respawn_at[slot] = time.monotonic() + 0.1 * self._failures

    def respawn_due(self, now: float, *, wanted: bool) -> None:
        """Start the workers whose time to try again has come; once given up, try once more
        if a task is ``wanted``."""
        for slot, when in list(self._respawn_at.items()):
            if when == float("inf") and wanted and not self._closing():
                when = now  # a new task: try once more
                self._failures = BOOT_FAILURES - 1
            if when <= now and not self._closing():
                del self._respawn_at[slot]
                self.spawn(slot)

    def stop(self) -> None:
        """Start no more workers later (the pool closes)."""
        self._respawn_at.clear()
