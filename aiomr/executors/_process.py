"""Run tasks in worker processes of aiomr's own, each with pipes of its own and a heartbeat.

Why not `concurrent.futures.ProcessPoolExecutor`
----------------------------------------------
Its workers take tasks from one shared queue under one lock: a worker stopped (SIGSTOP, a
debugger, a swapped-out process) while waiting for a task holds that lock, and every other
worker waits behind it, for ever. A worker that dies breaks the whole pool, so every task in
flight is lost and the pool must be replaced; finding out what happened meant joining the
pool's thread from the caller. Here every worker has its own task pipe and reply pipe
(`aiomr.executors._process_worker`), one helper thread serves them all without ever blocking
(`aiomr.executors._pool`), and a worker that ends costs exactly the one task it was running.

Stuck workers
-------------
Every worker bumps a heartbeat counter in shared memory ten times a second. A worker whose
heartbeat stands still and which uses no CPU time either (``/proc``, on Linux) for
``stall_timeout`` seconds is stuck: stopped, or wedged in C code that holds the GIL. It is
killed and replaced; the task it was running fails as a lost worker (``"killed"`` when the
process was stopped, so the retry rules do not blame the task; ``"failed"`` when it hung), and
the tasks it had not started run elsewhere. A worker busy in a long C call uses CPU time, so
it is left alone; `RetryPolicy.task_timeout` bounds those.

Shipping code once per job
--------------------------
`ProcessExecutor.ship` pickles a job's code once into the pool's private directory; tasks
carry a token and a path (`aiomr.executors._shipping`).

Start method
------------
Workers start with ``forkserver`` where it exists: forking the caller itself is unsafe once it
runs threads (the event loop's default executor, drivers' threads), and ``spawn`` re-imports
the caller's ``__main__`` for every worker. Processes are started on helper threads, so the
event loop never waits for one to boot.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.context
import shutil
from collections.abc import Callable
from typing import Any

from .._checks import check_seconds
from ._base import Executor, ShippedCode, default_max_workers
from ._pool import Pool
from ._shipping import private_directory, ship_by_file

__all__ = ["DEFAULT_STALL_TIMEOUT", "ProcessExecutor"]

DEFAULT_STALL_TIMEOUT = 5.0
"""Seconds a worker may show no sign of life (no heartbeat, no CPU time) before it is killed.
Long enough that a loaded machine never trips it (a heartbeat is due every 0.1 s), short
enough that a stopped worker costs a job seconds, not its life."""

_FORKSERVER_PRELOAD = (
    "aiomr.executors._process_worker",
    "aiomr._worker.run",
    "aiomr._worker.bodies",
    "cloudpickle",
)
"""Modules every worker needs: imported once by the forkserver, inherited by each worker (the
worker's main, and what every map task runs: `execute` around a body)."""


def _preload_in_forkserver(context: multiprocessing.context.BaseContext) -> None:
    """Have the forkserver import aiomr's worker side once, before it forks any worker.

    Otherwise every worker imports aiomr, and everything the caller's ``__main__`` imports,
    on its own (~65 ms per worker on a small machine): before Python 3.13 the forkserver
    never preloads ``__main__`` (CPython gh-126631), so each worker re-runs the main module.
    Modules the server has imported are inherited by every worker it forks. This has no
    effect once the forkserver runs, and it keeps any preload list the application set.
    """
    from multiprocessing import forkserver

    # No public getter for the current list; the default is ["__main__"].
    found = getattr(forkserver._forkserver, "_preload_modules", None)
    current = ["__main__"] if found is None else list(found)
    missing = [name for name in _FORKSERVER_PRELOAD if name not in current]
    if missing:
        context.set_forkserver_preload([*current, *missing])


class ProcessExecutor(Executor):
    """Run tasks in a pool of worker processes (the default executor).

    ```python
    async with aiomr.executors.ProcessExecutor(4) as executor:
        total = await aiomr.map_reduce(range(100), abs, operator.add, executor=executor)
    ```

    Args:
        max_workers: worker processes; defaults to the number of CPUs.
        mp_context: a `multiprocessing` start method name or context; defaults to
            ``"forkserver"`` where available, else ``"spawn"``.
        worker_niceness: added to the workers' scheduling niceness (default 5) so the
            caller's event loop and the pool's helper thread win the CPU when both want it:
            with workers at the caller's priority, a helper thread descheduled while holding
            the GIL stalls the loop for several milliseconds (docs/benchmarks.md).
        stall_timeout: seconds a worker may show no sign of life -- no heartbeat and no CPU
            time -- before it is killed and replaced (a stopped or wedged process); its task
            then runs again under the job's retry rules.

    A worker that ends (killed, crashed, ``os._exit``, the OOM killer) fails only the task it
    was running, with `aiomr.executors.WorkerLost`; tasks it had not started run on
    another worker, and a new worker takes its place (`workers_replaced`).

    Cancellation: `aclose` with tasks still running terminates the workers (SIGTERM, then
    SIGKILL after a grace period) and waits for them without blocking the event loop, so no
    process outlives it; cancelling `aclose` kills them at once.
    """

    seals_chunks = True
    """Large chunks of records may come sealed (pickled by the caller on a helper thread,
    `aiomr._worker.sealing.seal_records`); the task's ``execute`` unseals them in the worker."""

    can_kill_tasks = True
    """`kill_task` stops a task by killing its worker process (``task_timeout``)."""

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        mp_context: str | multiprocessing.context.BaseContext | None = None,
        worker_niceness: int = 5,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    ) -> None:
        if max_workers is not None and (isinstance(max_workers, bool) or max_workers < 1):
            raise ValueError("max_workers must be >= 1")
        check_seconds("stall_timeout", stall_timeout)
        self._max_workers = max_workers or default_max_workers()
        if mp_context is None:
            methods = multiprocessing.get_all_start_methods()
            mp_context = "forkserver" if "forkserver" in methods else "spawn"
        self._context = (
            multiprocessing.get_context(mp_context) if isinstance(mp_context, str) else mp_context
        )
        if self._context.get_start_method() == "forkserver":
            _preload_in_forkserver(self._context)
        self._niceness = worker_niceness
        self._stall_timeout = float(stall_timeout)
        self._directory: str | None = None
        self._pool: Pool | None = None

    @property
    def max_workers(self) -> int:
        return self._max_workers

    @property
    def workers_replaced(self) -> int:
        """Worker processes started to take the place of one that ended."""
        return self._pool.replaced if self._pool is not None else 0

    def _ensure_pool(self) -> Pool:
        if self._pool is None:
            if self._directory is None:
                self._directory = private_directory()
            self._pool = Pool(
                self._max_workers,
                self._context,
                niceness=self._niceness,
                stall_timeout=self._stall_timeout,
                directory=self._directory,
            )
        return self._pool

    async def start(self) -> None:
        """Start the worker processes now, instead of on first use, and wait until every
        one is ready. Raises `aiomr.BrokenWorkerError` if they cannot start."""
        self._check_open()
        # Creating the directory and the pool thread touches the disk: off the loop.
        pool = self._pool if self._pool is not None else await asyncio.to_thread(self._ensure_pool)
        await pool.wait_ready()

    def worker_pids(self) -> list[int]:
        """Process ids of the live worker processes."""
        return self._pool.pids() if self._pool is not None else []

    def ship(self, fn: Callable[..., Any]) -> ShippedCode:
        self._check_open()
        if self._directory is None:
            self._directory = private_directory()
        return ship_by_file(fn, self._directory)

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> asyncio.Future[Any]:
        self._check_open()
        return self._ensure_pool().submit(fn, args)

    def kill_task(self, task: asyncio.Future[Any], *, ran_for: float) -> bool:
        """Have the worker running ``task`` (a future `submit` returned) killed once the task
        has run for ``ran_for`` seconds; False if this executor does not hold it (yet).

        For `task_timeout`: a hung task cannot be stopped inside its worker, so the worker
        goes and another takes its place; the task fails as a lost worker. The time counts
        from when the worker starts the task, not from when it was sent; the pool's own
        thread watches it, so a task that answers in time is never killed for being late.
        """
        if self._pool is None:
            return False
        return self._pool.limit(task, ran_for)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        pool, self._pool = self._pool, None
        try:
            if pool is not None:
                try:
                    await pool.close(terminate=True)
                except asyncio.CancelledError:
                    pool.kill_all()
                    raise
        finally:
            if self._directory is not None:
                shutil.rmtree(self._directory, ignore_errors=True)
                self._directory = None
