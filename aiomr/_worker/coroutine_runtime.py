"""Where coroutine mappers run: an event loop per process, and each job's state on it.

::

    worker process (or the caller's thread pool)          the caller's event loop
    ─────────────────────────────────────────────         ────────────────────────
    CoroutineTask ──► Runtime.call ──► the runtime's loop  inline: CoroutineTask.here,
    (blocks its        (one loop thread per process,      a task of the caller's loop
     thread)           uvloop where installed)

A job's state in a process (`JobState`: the concurrency bound, the pacing, the per-worker
resource) lives as long as the job: the caller creates a marker file when the job starts and
removes it when the job ends, however it ends, and each runtime looks for the markers of its
jobs every `JANITOR_SECONDS`. A job whose marker is gone has its coroutines still in flight
cancelled (they see `asyncio.CancelledError`, their ``finally`` runs) and its resource closed,
once in each process that opened it. A worker process told to stop (SIGTERM: the pool
terminating it) does the same for every job before it exits. On the caller's own loop
(``executor="inline"``) the job ends its state itself (`end_here`).

What the coroutines do with a task's records is `aiomr._worker.coroutines`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .._retry import RetryPolicy
from . import startup

__all__ = [
    "DEFAULT_CONCURRENCY",
    "CoroutinePlan",
    "CoroutineTask",
    "JobState",
    "Runtime",
    "end_here",
    "stop_runtime",
]

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 64
"""Coroutines of one job in flight at once in each worker (or on the caller's loop, inline):
enough to hide a 20-100 ms round trip behind the others' at thousands of records per second,
few enough that a server sees a modest number of connections per worker."""
JANITOR_SECONDS = 0.1
"""How often a runtime looks for the end of its jobs: a cancelled job's coroutines are
cancelled, and its resources closed, this long after the job ended at most (plus the
closing)."""
_STOP_SECONDS = 3.0
"""How long a terminated worker gives its jobs' coroutines and resources to end, within the
pool's grace period before SIGKILL."""

ResourceFactory = Callable[[], contextlib.AbstractAsyncContextManager[Any]]


@dataclass(frozen=True, slots=True)
class CoroutinePlan:
    """How a job's coroutine mapper runs: travels to the workers with the job's code."""

    job: str
    """The job's identity, unique per run."""
    concurrency: int
    record_timeout: float | None
    per_second: float | None
    """Coroutines this process may start per second (its share of ``max_per_second``)."""
    retry: RetryPolicy | None
    resources: ResourceFactory | None
    alive: str | None
    """A file that exists while the job runs; ``None`` on the caller's loop."""


@dataclass(eq=False)
class JobState:
    """One job's coroutines in one process: created by its first task there."""

    plan: CoroutinePlan
    semaphore: asyncio.Semaphore
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    next_start: float = 0.0
    resource: Any = None
    _opened: contextlib.AbstractAsyncContextManager[Any] | None = None
    _opening: asyncio.Lock = field(default_factory=asyncio.Lock)
    ended: bool = False

    async def pace(self) -> None:
        """Wait for this process's next start under ``max_per_second``."""
        rate = self.plan.per_second
        if rate is None:
            return
        now = time.monotonic()
        start = max(now, self.next_start)
        self.next_start = start + 1.0 / rate
        if start > now:
            await asyncio.sleep(start - now)

    async def opened(self) -> Any:
        """The job's resource in this process, opened by the first record that needs it."""
        factory = self.plan.resources
        assert factory is not None
        async with self._opening:
            if self._opened is None:
                if self.ended:
                    raise asyncio.CancelledError
                manager = factory()
                self.resource = await manager.__aenter__()
                self._opened = manager
        return self.resource

    async def end(self) -> None:
        """Cancel what is in flight, wait for it, and close the resource (once)."""
        self.ended = True
        tasks = [task for task in self.tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        async with self._opening:
            manager, self._opened = self._opened, None
        if manager is not None:
            try:
                await manager.__aexit__(None, None, None)
            except Exception:
                log.exception("closing a resource of job %s failed", self.plan.job)


class Jobs:
    """The states of the jobs whose coroutines run on one loop."""

    def __init__(self) -> None:
        self.states: dict[str, JobState] = {}

    def state(self, plan: CoroutinePlan) -> JobState:
        found = self.states.get(plan.job)
        if found is None:
            found = JobState(plan, asyncio.Semaphore(plan.concurrency))
            self.states[plan.job] = found
        return found

    async def end(self, job: str) -> None:
        state = self.states.pop(job, None)
        if state is not None:
            await state.end()

    async def end_gone(self) -> None:
        """End the jobs whose marker file is gone."""
        for job, state in list(self.states.items()):
            alive = state.plan.alive
            # A stat of a local file, on the runtime's own loop (not the caller's).
            if alive is not None and not os.path.exists(alive):  # noqa: ASYNC240
                await self.end(job)

    async def end_all(self) -> None:
        await asyncio.gather(*(self.end(job) for job in list(self.states)))


class Runtime:
    """An event loop on a thread of its own, shared by the tasks of every job that runs
    coroutine mappers in this process; started by the first such task."""

    _instance: Runtime | None = None
    _lock = threading.Lock()

    @classmethod
    def get(cls) -> Runtime:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def __init__(self) -> None:
        from .._loop import loop_factory

        factory = loop_factory()
        self.loop = factory() if factory is not None else asyncio.new_event_loop()
        self.jobs = Jobs()
        ready = threading.Event()
        self.thread = threading.Thread(
            target=self._serve, args=(ready,), name="aiomr-coroutines", daemon=True
        )
        self.thread.start()
        ready.wait()
        if startup.in_worker_process and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._terminated)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        self.loop.create_task(self._janitor())
        self.loop.run_forever()

    async def _janitor(self) -> None:
        while True:
            await asyncio.sleep(JANITOR_SECONDS)
            try:
                await self.jobs.end_gone()
            except Exception:  # never let the janitor die: it closes every job's resources
                log.exception("ending a finished job's coroutines failed")

    def call(self, coroutine: Awaitable[Any]) -> Any:
        """Run ``coroutine`` on the runtime's loop; block this thread until it is done."""
        future = asyncio.run_coroutine_threadsafe(_awaited(coroutine), self.loop)
        try:
            return future.result()  # concurrent.futures.CancelledError once the job ended
        except BaseException:
            future.cancel()
            raise

    def stop(self) -> None:
        """End every job's coroutines and resources, waiting `_STOP_SECONDS` at most."""
        ending = asyncio.run_coroutine_threadsafe(self.jobs.end_all(), self.loop)
        with contextlib.suppress(Exception):
            ending.result(_STOP_SECONDS)

    def _terminated(self, signum: int, frame: object) -> None:
        """SIGTERM in a worker: end every job's coroutines and resources, then die of it."""
        self.stop()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def stop_runtime() -> None:
    """End the jobs of this process's runtime, if it has one: a worker about to exit."""
    runtime = Runtime._instance
    if runtime is not None:
        runtime.stop()


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


_HERE: dict[asyncio.AbstractEventLoop, Jobs] = {}
"""The jobs whose coroutines run on the caller's loops (``executor="inline"``)."""


def _jobs_here() -> Jobs:
    loop = asyncio.get_running_loop()
    jobs = _HERE.get(loop)
    if jobs is None:
        jobs = _HERE[loop] = Jobs()
    return jobs


async def end_here(job: str) -> None:
    """End a job whose coroutines ran on this loop (inline): cancel, close, forget."""
    loop = asyncio.get_running_loop()
    jobs = _HERE.get(loop)
    if jobs is not None:
        await jobs.end(job)
        if not jobs.states:
            del _HERE[loop]


async def _in_state(
    plan: CoroutinePlan, jobs: Jobs, work: Callable[[JobState], Awaitable[Any]]
) -> Any:
    """Run ``work`` as a task of the job's state, so that the job's end cancels it."""
    state = jobs.state(plan)
    if state.ended:
        raise asyncio.CancelledError
    task = asyncio.ensure_future(work(state))
    state.tasks.add(task)
    task.add_done_callback(state.tasks.discard)
    return await task


@dataclass(frozen=True, slots=True)
class CoroutineTask:
    """A task body that runs a job's coroutines: ``work(payload, state)`` on this process's
    runtime, the calling thread waiting (a worker), or with `here` on the caller's loop."""

    plan: CoroutinePlan
    work: Callable[[Any, JobState], Awaitable[Any]]

    def __call__(self, payload: Any, start: int) -> Any:
        runtime = Runtime.get()
        return runtime.call(_in_state(self.plan, runtime.jobs, self._bound(payload)))

    async def here(self, payload: Any, start: int) -> Any:
        """The same on the caller's loop (``executor="inline"``)."""
        return await _in_state(self.plan, _jobs_here(), self._bound(payload))

    def _bound(self, payload: Any) -> Callable[[JobState], Awaitable[Any]]:
        return functools.partial(self.work, payload)
