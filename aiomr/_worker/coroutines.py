"""Coroutine mappers: ``async def`` map functions run concurrently wherever a task runs.

::

    worker process (or the caller's thread pool)          the caller's event loop
    ─────────────────────────────────────────────         ────────────────────────
    task body ──► Runtime.call ──► the runtime's loop      inline: the task body is a
    (blocks its    (one loop thread per process,          coroutine, run as a task of
     thread)       uvloop where installed)                the caller's loop
                     │
                     └─► map_concurrently: up to ``concurrency`` records' coroutines at once
                         per job and process, each paced (``max_per_second``), timed
                         (``record_timeout``) and retried (``retry.retry_on``) on its own

A job's state in a process (`JobState`: the concurrency bound, the pacing, the per-worker
resource) lives as long as the job: the caller creates a marker file when the job starts and
removes it when the job ends, however it ends, and each runtime looks for the markers of its
jobs every `JANITOR_SECONDS`. A job whose marker is gone has its coroutines still in flight
cancelled (they see `asyncio.CancelledError`, their ``finally`` runs) and its resource closed,
once in each process that opened it. A worker process told to stop (SIGTERM: the pool
terminating it) does the same for every job before it exits. On the caller's own loop
(``executor="inline"``) the job ends its state itself.

Values are folded in record order once a chunk's coroutines are done, so a chunk's partial is
the same whatever order they finished in.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
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
from .blame import note_record
from .envelope import EMPTY, Counted, Skipped

__all__ = [
    "DEFAULT_CONCURRENCY",
    "CoroutinePlan",
    "Runtime",
    "end_here",
    "stop_runtime",
    "fold_concurrently",
    "fold_concurrently_here",
    "fold_split_concurrently",
    "fold_split_concurrently_here",
    "map_chunk_concurrently",
    "map_chunk_concurrently_here",
    "pairs_concurrently",
    "pairs_concurrently_here",
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


# -- one record, one chunk ------------------------------------------------------------------


async def _mapped(state: JobState, mapper: Callable[..., Any], record: Any, index: int) -> Any:
    """``await mapper(record)`` (with the job's resource), paced, timed and retried."""
    plan = state.plan
    retry = plan.retry
    attempt = 1
    while True:
        await state.pace()
        try:
            async with asyncio.timeout(plan.record_timeout):
                if plan.resources is not None:
                    return await mapper(record, await state.opened())
                return await mapper(record)
        except TimeoutError as exc:
            error: Exception = exc
            if plan.record_timeout is not None and not exc.args:
                error = TimeoutError(
                    f"record {index} of the chunk took longer than "
                    f"record_timeout={plan.record_timeout} s"
                )
        except Exception as exc:
            error = exc
        if retry is not None and isinstance(error, retry.retry_on):
            if attempt < retry.max_attempts:
                await asyncio.sleep(retry.delay(attempt))
                attempt += 1
                continue
            error.add_note(
                f"aiomr: the record's coroutine failed {attempt} times "
                f"(max_attempts={retry.max_attempts}); giving up on it"
            )
            error.aiomr_retried = True  # type: ignore[attr-defined]
        raise error


async def map_concurrently(
    state: JobState, mapper: Callable[..., Any], records: list[Any], *, stop_at_error: bool
) -> list[tuple[bool, Any]]:
    """Every record's ``(True, value)`` or ``(False, exception)``, in record order.

    Up to ``concurrency`` coroutines of the job run at once in this process (the bound is
    the job's, shared by its tasks here). With ``stop_at_error``, the first failure stops
    the rest: no more start, those in flight are cancelled, and they come back as
    ``(False, None)`` (not reached).
    """
    results: list[tuple[bool, Any]] = [(False, None)] * len(records)
    children: set[asyncio.Task[None]] = set()
    failed = False

    async def run(index: int, record: Any) -> None:
        nonlocal failed
        try:
            results[index] = (True, await _mapped(state, mapper, record, index))
        except Exception as exc:
            results[index] = (False, exc)
            if stop_at_error and not failed:
                failed = True
                for other in list(children):
                    if other is not asyncio.current_task():
                        other.cancel()

    def done(child: asyncio.Task[None]) -> None:
        children.discard(child)
        state.semaphore.release()  # here, not in run: a task cancelled unstarted runs no code

    try:
        for index, record in enumerate(records):
            await state.semaphore.acquire()
            if failed:
                state.semaphore.release()
                break
            child = asyncio.create_task(run(index, record))
            children.add(child)
            child.add_done_callback(done)
        if children:
            await asyncio.wait(list(children))
    finally:
        pending = list(children)
        for child in pending:
            child.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    return results


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


async def _fold(
    mapper: Callable[..., Any],
    reducer: Callable[[Any, Any], Any],
    parser: Callable[[Any], Any] | None,
    guarded: bool,
    records: list[Any],
    state: JobState,
) -> Any:
    """A chunk's records mapped concurrently and folded in record order: the partial, or
    with ``guarded`` a `Counted` that leaves out the records that failed."""
    skipped: list[Skipped] = []
    if parser is not None:
        parsed: list[Any] = []
        positions: list[int] = []
        for index, raw in enumerate(records):
            try:
                parsed.append(parser(raw))
                positions.append(index)
            except Exception as exc:
                if not guarded:
                    note_record(exc, index)
                    raise
                skipped.append(Skipped.of(index, raw, exc, None))
    else:
        parsed, positions = records, list(range(len(records)))
    found = await map_concurrently(state, mapper, parsed, stop_at_error=not guarded)
    acc: Any = EMPTY
    for (ok, value), index in zip(found, positions, strict=True):
        if not ok:
            if not guarded:
                if value is None:  # stopped by an earlier failure: not reached
                    continue
                note_record(value, index)
                raise value
            skipped.append(Skipped.of(index, records[index], value, None))
            continue
        try:
            acc = value if acc is EMPTY else reducer(acc, value)
        except Exception as exc:
            note_record(exc, index)
            raise
    if not guarded:
        return acc
    skipped.sort(key=lambda bad: bad.position)
    return Counted(acc, len(records), tuple(skipped))


async def _whole_chunk(mapper: Callable[..., Any], records: list[Any], state: JobState) -> Any:
    """Chunk mode: one coroutine for the whole chunk, paced, timed and retried as one."""
    return await _mapped(state, mapper, records, 0)


def fold_concurrently(
    plan: CoroutinePlan,
    mapper: Callable[..., Any],
    reducer: Callable[[Any, Any], Any],
    parser: Callable[[Any], Any] | None,
    guarded: bool,
    records: list[Any],
    start: int,
) -> Any:
    """Record mode in a worker: the chunk's coroutines run on this process's runtime."""
    runtime = Runtime.get()
    work = functools.partial(_fold, mapper, reducer, parser, guarded, records)
    return runtime.call(_in_state(plan, runtime.jobs, work))


async def fold_concurrently_here(
    plan: CoroutinePlan,
    mapper: Callable[..., Any],
    reducer: Callable[[Any, Any], Any],
    parser: Callable[[Any], Any] | None,
    guarded: bool,
    records: list[Any],
    start: int,
) -> Any:
    """Record mode on the caller's loop (inline)."""
    work = functools.partial(_fold, mapper, reducer, parser, guarded, records)
    return await _in_state(plan, _jobs_here(), work)


def map_chunk_concurrently(
    plan: CoroutinePlan, mapper: Callable[..., Any], records: list[Any], start: int
) -> Any:
    """Chunk mode in a worker."""
    runtime = Runtime.get()
    work = functools.partial(_whole_chunk, mapper, records)
    return runtime.call(_in_state(plan, runtime.jobs, work))


async def map_chunk_concurrently_here(
    plan: CoroutinePlan, mapper: Callable[..., Any], records: list[Any], start: int
) -> Any:
    """Chunk mode on the caller's loop (inline)."""
    return await _in_state(plan, _jobs_here(), functools.partial(_whole_chunk, mapper, records))


# -- key-based jobs: each record's pairs ---------------------------------------------------


class _Collected:
    """An async generator mapper as a coroutine function: the pairs it yields, as a list."""

    def __init__(self, mapper: Callable[..., Any]) -> None:
        self.mapper = mapper

    async def __call__(self, *args: Any) -> list[Any]:
        return [pair async for pair in self.mapper(*args)]


async def _pairs(
    mapper: Callable[..., Any],
    parser: Callable[[Any], Any] | None,
    records: list[Any],
    state: JobState,
) -> list[tuple[bool, Any]]:
    """Each record's pairs (a list) or its exception, in record order; every record runs,
    so each failure is that record's own (a key-based job then blames or skips it)."""
    from .._callables import kind_of

    call = _Collected(mapper) if kind_of(mapper) == "async generator" else mapper
    found: list[tuple[bool, Any]] = [(False, None)] * len(records)
    inputs, positions = [], []
    for index, raw in enumerate(records):
        try:
            inputs.append(parser(raw) if parser is not None else raw)
            positions.append(index)
        except Exception as exc:
            found[index] = (False, exc)
    mapped = await map_concurrently(state, call, inputs, stop_at_error=False)
    for index, (ok, value) in zip(positions, mapped, strict=True):
        found[index] = (True, list(value)) if ok else (False, value)
    return found


def pairs_concurrently(
    plan: CoroutinePlan,
    mapper: Callable[..., Any],
    parser: Callable[[Any], Any] | None,
    records: list[Any],
) -> list[tuple[bool, Any]]:
    """A key-based job's records mapped in a worker, on this process's runtime."""
    runtime = Runtime.get()
    work = functools.partial(_pairs, mapper, parser, records)
    found: list[tuple[bool, Any]] = runtime.call(_in_state(plan, runtime.jobs, work))
    return found


async def pairs_concurrently_here(
    plan: CoroutinePlan,
    mapper: Callable[..., Any],
    parser: Callable[[Any], Any] | None,
    records: list[Any],
) -> list[tuple[bool, Any]]:
    """A key-based job's records mapped on the caller's loop (inline)."""
    found: list[tuple[bool, Any]] = await _in_state(
        plan, _jobs_here(), functools.partial(_pairs, mapper, parser, records)
    )
    return found


# -- splits the workers read (files) ---------------------------------------------------------

WINDOW_PER_CONCURRENCY = 32
"""A split is mapped in windows of this many times ``concurrency`` records, read one after
the other: the split never sits in memory whole, and each window's last round trip (when
fewer coroutines are left than ``concurrency``) costs about 1/32 of its time."""


def _window_size(plan: CoroutinePlan) -> int:
    return WINDOW_PER_CONCURRENCY * plan.concurrency


def _located_skips(reader: Any, lines: list[Any], found: Counted) -> Counted:
    """``found`` with each skipped record located in its file (``path:line``)."""
    value, count, skipped, read = found
    located = tuple(
        bad._replace(where=str(reader.where(lines[bad.position][0], lines[bad.position][1])))
        for bad in skipped
    )
    return Counted(value, count, located, read)


def _folded(acc: Any, value: Any, reducer: Callable[[Any, Any], Any]) -> Any:
    if value is EMPTY:
        return acc
    return value if acc is EMPTY else reducer(acc, value)


def fold_split_concurrently(
    plan: CoroutinePlan,
    reader: Any,
    mapper: Callable[..., Any],
    reducer: Callable[[Any, Any], Any],
    guarded: bool,
    splits: list[Any],
    start: int,
) -> Counted:
    """Record mode over a split a worker reads: window after window of its records mapped
    concurrently on this process's runtime, the windows' partials folded in order."""
    from .blame import reading, shift_record
    from .bodies import close_reading

    runtime = Runtime.get()

    def run(records: list[Any], parser: Callable[[Any], Any] | None, skip: bool) -> Any:
        work = functools.partial(_fold, mapper, reducer, parser, skip, records)
        return runtime.call(_in_state(plan, runtime.jobs, work))

    if guarded:
        lines = list(reading(reader.located_lines(splits[0])))
        found = run([line for _, _, line in lines], reader.decode_and_parse, True)
        return _located_skips(reader, lines, found)
    blocks = reader.line_blocks(splits[0])
    records = reading(itertools.chain.from_iterable(blocks))
    acc: Any = EMPTY
    count = 0
    try:
        while window := list(itertools.islice(records, _window_size(plan))):
            try:
                acc = _folded(acc, run(window, None, False), reducer)
            except Exception as exc:
                shift_record(exc, count)  # from the window's first record to the split's
                raise
            count += len(window)
    finally:
        close_reading(blocks)
    return Counted(acc, count)


async def fold_split_concurrently_here(
    plan: CoroutinePlan,
    reader: Any,
    mapper: Callable[..., Any],
    reducer: Callable[[Any, Any], Any],
    guarded: bool,
    splits: list[Any],
    start: int,
) -> Counted:
    """`fold_split_concurrently` on the caller's loop (inline): the file is read on a
    helper thread, a window at a time, never on the loop."""
    from .blame import reading, shift_record
    from .bodies import close_reading

    jobs = _jobs_here()
    if guarded:
        lines = await asyncio.to_thread(lambda: list(reading(reader.located_lines(splits[0]))))
        work = functools.partial(
            _fold, mapper, reducer, reader.decode_and_parse, True, [line for _, _, line in lines]
        )
        return _located_skips(reader, lines, await _in_state(plan, jobs, work))
    blocks = reader.line_blocks(splits[0])
    records = reading(itertools.chain.from_iterable(blocks))
    size = _window_size(plan)
    acc: Any = EMPTY
    count = 0
    try:
        while window := await asyncio.to_thread(lambda: list(itertools.islice(records, size))):
            try:
                work = functools.partial(_fold, mapper, reducer, None, False, window)
                acc = _folded(acc, await _in_state(plan, jobs, work), reducer)
            except Exception as exc:
                shift_record(exc, count)
                raise
            count += len(window)
    finally:
        await asyncio.to_thread(close_reading, blocks)
    return Counted(acc, count)
