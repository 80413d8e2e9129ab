"""Run tasks in worker processes through ``loop.run_in_executor`` on a process pool.

Shipping code once per job
--------------------------
The stdlib pool pickles the callable with every task, by reference: lambdas, closures and
functions defined in ``__main__`` fail, and a large closure is copied once per task. Here
`ProcessExecutor.ship` pickles a job's code once with cloudpickle (by value where
needed) into a file in a private directory (``/dev/shm`` when present, so it never touches a
disk), and every task carries a `aiomr._worker.ShippedCall` instead: a token and a path, a few dozen
bytes. Each worker unpickles the code on its first task of the job and caches it
(`aiomr._worker.load_shipped`).

Start method
------------
Workers start with ``forkserver`` where it exists: forking the caller itself is unsafe once it
runs threads (the event loop's default executor, drivers' threads), and ``spawn`` re-imports
the caller's ``__main__`` for every worker. Workers are started in a helper thread by
`ProcessExecutor.start`, so the event loop never waits for a process to boot.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import multiprocessing
import multiprocessing.context
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any, NamedTuple

from .._codepickle import dumps_code
from .._exceptions import BrokenWorkerError
from .._worker import ShippedCall, initialize_worker, ping
from ._base import Executor, ShippedCode, default_max_workers

__all__ = ["ProcessExecutor"]

_JOIN_SECONDS = 5.0
"""How long a terminated worker may take to exit before it is killed."""


def _settled(pool: Any) -> Any:
    """Return ``pool`` once a broken pool has finished reading how its workers ended.

    A worker's exit status is read once from a pipe, by whichever thread asks first; a
    second reader at the same moment finds the pipe empty and multiprocessing then records
    status 255, "unknown", for good. A broken pool's own thread reads every status while it
    stops the workers, so wait for it (briefly: its workers are dead or terminated) before
    asking.
    """
    thread = getattr(pool, "_executor_manager_thread", None)
    if getattr(pool, "_broken", False) and thread is not None and thread.is_alive():
        thread.join(_JOIN_SECONDS)
    return pool


def _oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed since boot (``None``: unknown)."""
    try:
        with open("/proc/vmstat", "rb") as f:
            for line in f:
                if line.startswith(b"oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


class _Ended(NamedTuple):
    """What is known of a pool that broke: who to blame, who was killed, and how."""

    culprits: frozenset[tuple[str, int]] | None
    killed: frozenset[tuple[str, int]]
    description: str


class _FileShippedCode(ShippedCode):
    def __init__(self, token: str, path: str) -> None:
        super().__init__(ShippedCall(token, path))
        self._path = path

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)


log = logging.getLogger(__name__)

_GENERATIONS_KEPT = 64
"""Broken pools whose deaths are remembered, for failed tasks not yet looked at."""

_CODE_PREFIX = "aiomr-code-"


def _code_directory() -> str:
    """Create the directory a pool's shipped code lives in (in memory where possible).

    Its name carries the caller's process id: a caller killed outright (SIGKILL, the OOM
    killer) cannot remove it, so each new one removes those of callers no longer alive.
    """
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    _remove_orphans(base or tempfile.gettempdir())
    return tempfile.mkdtemp(prefix=f"{_CODE_PREFIX}{os.getpid()}-", dir=base)


def _remove_orphans(base: str) -> None:
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        owner = name.removeprefix(_CODE_PREFIX).split("-", 1)[0]
        if not name.startswith(_CODE_PREFIX) or not owner.isdigit():
            continue
        try:
            os.kill(int(owner), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
        except OSError:  # alive, but another user's
            continue


def ship_by_file(fn: Callable[..., Any], directory: str) -> ShippedCode:
    """Pickle ``fn`` once into ``directory`` and return a token-carrying stand-in."""
    try:
        data = dumps_code(fn)
    except Exception as exc:
        raise TypeError(f"{_describe(fn)} cannot be pickled for worker processes: {exc}") from exc
    token = uuid.uuid4().hex
    path = os.path.join(directory, f"{token}.pkl")
    with open(path, "wb") as f:
        f.write(data)
    return _FileShippedCode(token, path)


def _describe(fn: Callable[..., Any]) -> str:
    inner = getattr(fn, "func", None)
    args = getattr(fn, "args", ())
    if inner is not None and args:
        parts = ", ".join(repr(a) for a in args if callable(a))
        return f"the job's code ({parts})" if parts else "the job's code"
    return repr(fn)


_FORKSERVER_PRELOAD = ("aiomr._worker", "cloudpickle")
"""Modules every worker needs: imported once by the forkserver, inherited by each worker."""


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


_WARM_ROUNDS = 100
"""Rounds of pings `ProcessExecutor.start` sends at most, waiting for every worker to answer."""


class ProcessExecutor(Executor):
    """Run tasks in a pool of worker processes (the default executor).

    Args:
        max_workers: worker processes; defaults to the number of CPUs.
        mp_context: a `multiprocessing` start method name or context; defaults to
            ``"forkserver"`` where available, else ``"spawn"``.
        worker_niceness: added to the workers' scheduling niceness (default 5) so the
            caller's event loop and the pool's helper threads win the CPU when both want it:
            with workers at the caller's priority, a helper thread descheduled while holding
            the GIL stalls the loop for several milliseconds (docs/benchmarks.md).
        pool: an existing `concurrent.futures.ProcessPoolExecutor` to use instead of
            starting one; it is not shut down by `aclose`.

    Cancellation: `aclose` with tasks still running terminates the workers (SIGTERM,
    then SIGKILL after a grace period) and waits for them, so no process outlives it.
    """

    seals_chunks = True
    """Large chunks of records may come sealed (pickled by the caller on a helper thread,
    `aiomr._worker.seal_records`); the task's ``execute`` unseals them in the worker."""

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        mp_context: str | multiprocessing.context.BaseContext | None = None,
        worker_niceness: int = 5,
        pool: concurrent.futures.ProcessPoolExecutor | None = None,
    ) -> None:
        if max_workers is not None and max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        if pool is not None:
            self._max_workers = int(getattr(pool, "_max_workers", max_workers or 1))
        else:
            self._max_workers = max_workers or default_max_workers()
        if mp_context is None:
            methods = multiprocessing.get_all_start_methods()
            mp_context = "forkserver" if "forkserver" in methods else "spawn"
        self._context = (
            multiprocessing.get_context(mp_context) if isinstance(mp_context, str) else mp_context
        )
        if pool is None and self._context.get_start_method() == "forkserver":
            _preload_in_forkserver(self._context)
        self._niceness = worker_niceness
        self._pool = pool
        self._owns_pool = pool is None
        self._directory: str | None = None
        self._running: set[concurrent.futures.Future[Any]] = set()
        # Each pool replaced after a worker died is one generation. A failed task is judged
        # against the deaths in the pool it ran on, never against later or earlier ones.
        self._generation = 0
        self._generation_of: weakref.WeakKeyDictionary[asyncio.Future[Any], int] = (
            weakref.WeakKeyDictionary()
        )
        self._ended: dict[int, _Ended] = {}
        # Told apart from a crash: a worker SIGKILLed while the OOM killer did nothing, and
        # not by `kill_task` (whose victims are remembered here).
        self._oom_kills_before: int | None = None
        self._killed_by_timeout: set[int] = set()
        self.workers_replaced = 0
        """Worker processes started again after the pool broke (a worker died)."""

    @property
    def max_workers(self) -> int:
        return self._max_workers

    def _ensure_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is not None and self._owns_pool and getattr(self._pool, "_broken", False):
            # A worker died and the stdlib pool refuses all further work: replace it, so
            # one lost worker does not break every later job of an Engine.
            # Remember who died, for failures of its tasks the caller has not looked at yet.
            broken, self._pool = self._pool, None
            description = self._describe(broken)
            culprits = self._culprits(broken)
            self._ended[self._generation] = _Ended(
                frozenset(culprits) if culprits is not None else None,
                frozenset(self._killed(broken)),
                description,
            )
            self._killed_by_timeout.clear()
            for old in [g for g in self._ended if g < self._generation - _GENERATIONS_KEPT]:
                del self._ended[old]
            self._generation += 1
            processes = list((getattr(broken, "_processes", None) or {}).values())
            self.workers_replaced += len(processes) or self._max_workers
            log.warning(
                "a worker process died (%s); starting a new pool of %d workers",
                description or "how it ended is unknown",
                self._max_workers,
            )
            broken.shutdown(wait=False, cancel_futures=True)
            threading.Thread(target=_reap, args=(broken, processes), daemon=True).start()
        if self._pool is None:
            self._oom_kills_before = _oom_kills()
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self._max_workers,
                mp_context=self._context,
                initializer=initialize_worker,
                initargs=(self._niceness, os.getpid()),
            )
        return self._pool

    def _warm(self) -> None:
        pool = self._ensure_pool()
        answered: set[int] = set()
        try:
            # Until every worker has answered, one may still be importing modules and
            # running its initializer: the first job would wait for it.
            for _ in range(_WARM_ROUNDS):
                futures = [pool.submit(ping, 0.005) for _ in range(self._max_workers)]
                answered.update(future.result() for future in futures)
                if len(answered) >= self._max_workers:
                    break
        except BrokenProcessPool as exc:
            raise BrokenWorkerError(
                "worker processes could not start; when the program is a script, its "
                "top-level code must sit under `if __name__ == '__main__':` because workers "
                f"import the main module ({exc})"
            ) from exc

    async def start(self) -> None:
        """Start the worker processes now, in a helper thread, instead of on first use."""
        self._check_open()
        await asyncio.to_thread(self._warm)

    def lost_tasks(self, future: asyncio.Future[Any] | None = None) -> set[tuple[str, int]] | None:
        """The ``(code token, start)`` of the tasks whose worker died by itself, in the pool
        that ran ``future`` (by default the current pool); ``None`` when that cannot be told.

        Workers the pool terminated after the first death (SIGTERM) are bystanders and are
        left out; so the chunk that killed its worker can be told from those that merely
        shared its pool. Deaths in other pools never count: a chunk blamed once is not
        blamed again for a later death it had no part in.
        """
        ended = self._ended_for(future)
        if ended is not None:
            return None if ended.culprits is None else set(ended.culprits)
        return self._culprits(self._pool)

    def _ended_for(self, future: asyncio.Future[Any] | None) -> _Ended | None:
        """What is known of the broken pool that ran ``future``; None while it still runs."""
        return self._ended.get(self._generation_of.get(future, -1)) if future else None

    def killed_tasks(self, future: asyncio.Future[Any] | None = None) -> set[tuple[str, int]]:
        """The tasks among `lost_tasks` whose worker was SIGKILLed from outside: not by the
        OOM killer (the kernel counted no OOM kill while the pool ran), not by `kill_task`.

        Something else ended those workers (an operator, a supervisor, a test); the task
        running there did nothing wrong. A worker whose end multiprocessing could not learn
        (it then reports status 255) is not counted here: its task stays to blame.
        """
        ended = self._ended_for(future)
        if ended is not None:
            return set(ended.killed)
        return self._killed(self._pool)

    def _killed(self, pool: Any) -> set[tuple[str, int]]:
        before = self._oom_kills_before
        if before is None or _oom_kills() != before:
            return set()  # the OOM killer may have acted: the tasks are to blame
        processes = getattr(_settled(pool), "_processes", None) or {}
        killed = set()
        for process in list(processes.values()):
            if process.exitcode != -signal.SIGKILL:
                continue
            if process.pid in self._killed_by_timeout:
                continue
            task = self._task_of(process.pid)
            if task is not None:
                killed.add(task)
        return killed

    def _task_of(self, pid: int | None) -> tuple[str, int] | None:
        """The task worker ``pid`` was running when it ended, from its marker file."""
        if self._directory is None or pid is None:
            return None
        try:
            with open(os.path.join(self._directory, f"running-{pid}")) as f:
                token, start = f.read().split()
            return token, int(start)
        except (OSError, ValueError):
            return None

    def _culprits(self, pool: Any) -> set[tuple[str, int]] | None:
        """The tasks running in the workers of ``pool`` that died by themselves; an empty set
        when those workers ran none (killed while idle or starting); ``None`` when no such
        death can be seen (yet), and so nobody can be cleared."""
        processes = getattr(_settled(pool), "_processes", None) or {}
        found: set[tuple[str, int]] | None = None
        for process in list(processes.values()):
            code = process.exitcode
            if code is None or code == 0 or code == -signal.SIGTERM or self._directory is None:
                continue
            found = found if found is not None else set()
            task = self._task_of(process.pid)
            if task is not None:
                found.add(task)
        return found

    def kill_task(self, token: str, start: int, *, ran_for: float = 0.0) -> bool:
        """SIGKILL the worker running the task ``(token, start)`` if it has run for at least
        ``ran_for`` seconds; False if no worker runs it (yet) or it started later.

        For `task_timeout`: a hung task cannot be cancelled inside its worker, so the worker
        goes; the pool is then replaced and the tasks in flight run again. A task waiting in
        the pool's queue has not started, so its time does not count: the worker writes its
        marker when the task starts, and the marker's age is how long it has run.
        """
        if self._directory is None:
            return False
        processes = getattr(self._pool, "_processes", None) or {}
        for process in list(processes.values()):
            marker = os.path.join(self._directory, f"running-{process.pid}")
            try:
                with open(marker) as f:
                    found = f.read().split()
                    started = os.fstat(f.fileno()).st_mtime
            except OSError:
                continue
            if found != [token, str(start)] or process.pid is None or not process.is_alive():
                continue
            if time.time() - started < ran_for:
                return False
            self._killed_by_timeout.add(process.pid)
            os.kill(process.pid, signal.SIGKILL)
            return True
        return False

    def describe_lost_workers(self, future: asyncio.Future[Any] | None = None) -> str:
        """Say how the workers of the pool that ran ``future`` (by default the current one)
        ended: exit codes and signals.

        Workers the pool itself terminated (SIGTERM) after the first death are left out
        when another cause is known.
        """
        ended = self._ended_for(future)
        return ended.description if ended is not None else self._describe(self._pool)

    def _describe(self, pool: Any) -> str:
        processes = getattr(_settled(pool), "_processes", None) or {}
        causes: list[str] = []
        bystanders: list[str] = []
        for process in list(processes.values()):
            code = process.exitcode
            if code is None or code == 0:
                continue
            if code < 0:
                try:
                    name = signal.Signals(-code).name
                except ValueError:
                    name = f"signal {-code}"
                end = f"worker {process.pid} killed by {name}"
                (bystanders if code == -signal.SIGTERM else causes).append(end)
            else:
                causes.append(f"worker {process.pid} exited with status {code}")
        return "; ".join(causes or bystanders)

    def worker_pids(self) -> list[int]:
        """Process ids of the live worker processes."""
        processes = getattr(self._pool, "_processes", None) or {}
        return [p.pid for p in processes.values() if p.pid is not None and p.is_alive()]

    def ship(self, fn: Callable[..., Any]) -> ShippedCode:
        self._check_open()
        if self._directory is None:
            self._directory = _code_directory()
        return ship_by_file(fn, self._directory)

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> asyncio.Future[Any]:
        self._check_open()
        try:
            task = self._ensure_pool().submit(fn, *args)
        except BrokenProcessPool:
            # A worker died after _ensure_pool looked: the pool is marked broken now, so
            # this call replaces it.
            task = self._ensure_pool().submit(fn, *args)
        # Track the pool's own future: it stays pending while a worker runs the task, even
        # after the asyncio future wrapping it is cancelled, so aclose() knows to terminate.
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        future = asyncio.wrap_future(task)
        self._generation_of[future] = self._generation
        return future

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        pool, self._pool = self._pool, None
        try:
            if pool is not None and self._owns_pool:
                # The pool's private process table is the only handle on its workers
                # before Python 3.14's terminate_workers().
                processes = list(getattr(pool, "_processes", {}).values())
                busy = any(not task.done() for task in list(self._running))
                pool.shutdown(wait=False, cancel_futures=True)
                if busy:
                    for process in processes:
                        if process.is_alive():
                            process.terminate()
                await asyncio.shield(asyncio.to_thread(_reap, pool, processes))
        finally:
            if self._directory is not None:
                shutil.rmtree(self._directory, ignore_errors=True)
                self._directory = None


def _reap(
    pool: concurrent.futures.ProcessPoolExecutor, processes: list[multiprocessing.Process]
) -> None:
    for process in processes:
        process.join(_JOIN_SECONDS)
        if process.is_alive():
            process.kill()
            process.join()
    pool.shutdown(wait=True)
