"""The executor interface: where map and reduce tasks run.

An executor has three duties, kept small so that other backends (a Dask cluster, a pool of
remote machines) can slot in:

* `Executor.ship` makes a job's code available to the workers, once per job, and returns
  a cheap stand-in callable that tasks carry instead of the code itself;
* `Executor.submit` starts one task and returns an `asyncio.Future` for its result;
* `Executor.aclose` releases the workers; it is idempotent.

Everything else an executor may offer is declared here too, with a default that is always
safe (as trio's ``Instrument`` declares every hook): aiomr never asks an executor whether it
has a feature, it reads the declaration. An executor that offers nothing more still runs
every job; what a job loses without each feature is in docs/concepts/executors.md.

* `Executor.start` (does nothing): `aiomr.Engine.start` starts the workers early;
* `Executor.workers_replaced` (``0``): `aiomr.JobStats.workers_replaced`;
* `Executor.seals_chunks` (``False``): large chunks pickled on a helper thread;
* `Executor.split_seconds` (``None``): the splits of file jobs sized by time;
* `Executor.can_kill_tasks` (``False``) with `Executor.kill_task`: ``task_timeout``;
* `Executor.open_folder` (``None``): partials folded where they are (Dask);
* `Executor.runs_coroutines` (``False``): coroutine tasks run on the caller's loop (inline);
* `Executor.same_machine` (``True``): the workers see the caller's files (not Dask);
* `Executor.in_process` (``False``): the workers are threads of the caller's process.
"""

from __future__ import annotations

import abc
import asyncio
import os
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from .._exceptions import ClosedResourceError
from .._retry import Verdict

if TYPE_CHECKING:
    from .._reducer import Folder

__all__ = ["Executor", "ShippedCode", "WorkerLost", "default_max_workers"]


class WorkerLost(BrokenProcessPool):
    """How an executor fails a task whose worker ended before the task did.

    It says what happened (``str(exc)``: which worker, how it ended, why it was killed when
    the executor killed it) and whose fault it was (`verdict`), so the retry rules can be
    fair: a task that was running when its worker crashed ``"failed"``; one whose worker was
    killed from outside (a SIGKILL the OOM killer did not send, a stopped process) was
    ``"killed"``; one that had not started is never failed at all, the executor runs it
    elsewhere. A subclass of `concurrent.futures.process.BrokenProcessPool`, which
    executors that cannot tell raise instead (all of those count as ``"failed"``).
    """

    def __init__(self, description: str, *, verdict: Verdict) -> None:
        super().__init__(description)
        self.description = description
        self.verdict: Verdict = verdict


def default_max_workers() -> int:
    """Return the number of CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


class ShippedCode:
    """A job's code as the workers see it: call `fn` in tasks, `release` after.

    The default simply hands the callable through (threads and inline execution share the
    caller's memory); process-based executors store the pickled code once and hand out a
    small token instead.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def release(self) -> None:
        """Forget the shipped code; tasks still running may fail to load it."""


class Executor(abc.ABC):
    """Run map and reduce tasks; subclass it to add a backend.

    A subclass implements `max_workers`, `submit` and `aclose`; everything else has a
    default that is right for an executor that offers no more. Override a feature to
    declare it (see the module docstring and docs/concepts/executors.md).

    Executors are async context managers; `aclose` is idempotent and, for executors that
    own workers, leaves none running.
    """

    _closed: bool = False

    @property
    @abc.abstractmethod
    def max_workers(self) -> int:
        """How many tasks can run at the same time."""

    def ship(self, fn: Callable[..., Any]) -> ShippedCode:
        """Make ``fn`` available to the workers for one job.

        Raise `TypeError` when ``fn`` cannot travel to them (it cannot be pickled, say),
        before any task is submitted.
        """
        self._check_open()
        return ShippedCode(fn)

    @abc.abstractmethod
    def submit(self, fn: Callable[..., Any], /, *args: Any) -> asyncio.Future[Any]:
        """Start ``fn(*args)`` on a worker and return a future for its result.

        Cancelling the future cancels the task if it has not started; a task already running
        in another process or thread runs to its end and its result is dropped.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release the workers. Idempotent."""

    @property
    def name(self) -> str:
        """How errors name this executor: its class name unless it says otherwise."""
        return type(self).__name__

    @property
    def closed(self) -> bool:
        """Whether `aclose` has been called."""
        return self._closed

    # -- optional features: override to declare one ----------------------------------------

    async def start(self) -> None:
        """Start the workers now rather than on the first task (`aiomr.Engine.start`).

        The default does nothing: the executor starts whatever it needs on its first
        `submit`. Override it when starting takes a while (processes to boot, a cluster to
        connect to), and raise there if the workers cannot start.
        """
        return  # nothing to start: the first task starts what it needs

    @property
    def workers_replaced(self) -> int:
        """Workers started so far to take the place of one that ended.

        Each job reports how much it rose while the job ran, as
        `aiomr.JobStats.workers_replaced`. The default, ``0``, suits an executor whose
        workers never end (threads) or that cannot tell.
        """
        return 0

    @property
    def seals_chunks(self) -> bool:
        """Whether `submit` accepts a large chunk's records pickled in advance.

        When true, aiomr pickles a large chunk (2,000 records or more, or a megabyte of
        strings) on a helper thread and submits the bytes, sealed, in place of the list;
        the job's code unseals them where it runs. Declare it when `submit` would
        otherwise pickle the records on the event loop's thread. Default: ``False``,
        records are submitted as the list they are.
        """
        return False

    @property
    def split_seconds(self) -> float | None:
        """How long one split of a file job should run in a worker, in seconds.

        With a number, file splits start at 1 MiB and are then sized from the bytes per
        second the finished ones read, so that no task holds a worker much longer. Jobs
        read it from the executor they run on, which is an engine's view of its executor:
        there the engine's own ``split_seconds`` answers (`aiomr.Engine`), so an
        executor's value serves only code that runs jobs on it directly. Default:
        ``None``, splits are sized by bytes alone.
        """
        return None

    @property
    def can_kill_tasks(self) -> bool:
        """Whether `kill_task` can stop a running task, for `aiomr.RetryPolicy.task_timeout`.

        Default: ``False``, and a job with a ``task_timeout`` is refused with a
        `ValueError` before it starts. Declare it together with `kill_task`.
        """
        return False

    def kill_task(self, task: asyncio.Future[Any], *, ran_for: float) -> bool:
        """Stop the task whose future `submit` returned once it has run ``ran_for`` seconds.

        Called for tasks that were submitted ``task_timeout`` seconds ago and have not
        finished, only when `can_kill_tasks` is true. The time counts from when a worker
        started the task, which only the executor knows; stopping it fails its future
        (with `WorkerLost`, ``verdict="failed"``, to have it retried as a failed run).
        Return ``False`` when the executor does not hold the task yet (it still waits
        elsewhere): aiomr asks again shortly. The default stops nothing and returns
        ``False``.
        """
        return False

    def open_folder(
        self, reducer: Callable[[Any, Any], Any], *, initial: Any, ordered: bool
    ) -> Folder | None:
        """Return the folder of a map-reduce job's partials, or ``None`` to let aiomr fold.

        An executor that can combine partials where they are computed (Dask combines large
        ones on its workers) returns a folder of its own, a subclass of aiomr's private
        ``Folder``; the job calls the folder's ``bind`` with its shipped code before the
        first task. Default: ``None``, partials come back to the caller and are folded
        there, on a helper thread.
        """
        return None

    @property
    def runs_coroutines(self) -> bool:
        """Whether `submit` runs a task whose function returns a coroutine on the caller's
        event loop (awaiting it), rather than in a worker.

        A job with an ``async def`` mapper then runs its coroutines on the caller's loop,
        as tasks of its own, instead of on an event loop in each worker. Default:
        ``False``, the workers run a loop of their own for them.
        """
        return False

    @property
    def in_process(self) -> bool:
        """Whether every worker runs in the caller's process (threads, inline).

        An ``async def`` mapper's ``max_per_second`` is then paced once for the process;
        otherwise each of `max_workers` worker processes paces an equal share of it.
        Default: ``False``.
        """
        return False

    @property
    def same_machine(self) -> bool:
        """Whether the workers run on the caller's machine and see its files.

        A job with an ``async def`` mapper tells the workers that it has ended through a
        file, so that they cancel what is left of it and close its ``resources``: where
        they may not see the caller's files, ``resources`` are refused. Default: ``True``.
        """
        return True

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedResourceError(f"{type(self).__name__} is closed")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
