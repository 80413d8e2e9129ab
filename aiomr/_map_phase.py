"""Wire the stages of one map-reduce job together.

::

    source ──► ChunkReader ──► dispatch ──────────► Executor.submit(code, records)
               (_chunker)      (_dispatch)            worker: execute(body, records)
                  ▲             at most                   body = fold_records | map_chunk
                  │             max_in_flight                        │
        ChunkSizer.observe ◄──── outstanding      one partial per chunk (Outcome | Failure)
        (task seconds)                 │                             │
                                       ▼                             │
                   result ◄──── Folder (helper thread) ◄─────────────┘
                                fold as completed, or in input order

The job's code (mapper, reducer, the task body) is shipped to the executor once, before the
first chunk; a failure to pickle it is reported before any record is read. Every stage is
closed in ``finally``: the shipped code is released, the source closed, outstanding tasks
cancelled, and the helper threads let go, on success, error and cancellation alike.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import cloudpickle

from ._badrecords import DeadLetterFile, OnError
from ._callables import MAPPER_HINT, check_function
from ._chunker import TARGET_TASK_SECONDS, AnySource, ChunkReader, ChunkSizer, check_source
from ._coroutine_jobs import COROUTINE_TASK_SECONDS, coroutine_job, smallest_chunk
from ._dispatch import dispatch
from ._exceptions import EmptySourceError
from ._options import MapOptions
from ._reducer import Folder
from ._retry import RetryPolicy
from ._sentinels import MISSING
from ._stats import JobStats
from ._types import BatchFormat, Mode
from ._worker.bodies import (
    fold_guarded,
    fold_parsed,
    fold_records,
    map_chunk,
    map_parsed_chunk,
)
from ._worker.coroutine_runtime import CoroutinePlan, CoroutineTask
from ._worker.coroutines import fold_mapped, fold_split_mapped, map_whole_chunk
from ._worker.run import execute, execute_async
from .executors import Executor, ShippedCode
from .sources._describe import describe

__all__ = [
    "check_callable",
    "check_job",
    "run_map_phase",
    "run_map_reduce",
]


log = logging.getLogger(__name__)


def check_callable(name: str, value: object) -> None:
    """Check a mapper or reducer of a map-reduce job (see `aiomr._callables`); a mapper may
    be an ``async def`` function."""
    mapper = name == "mapper"
    check_function(name, value, hint=MAPPER_HINT if mapper else "", coroutines=mapper)


def _body_for(
    source: object,
    mode: Mode,
    mapper: Callable[[Any], Any],
    reducer: Callable[[Any, Any], Any],
    on_error: OnError = "raise",
    batch_format: BatchFormat = "arrow",
    plan: CoroutinePlan | None = None,
    here: bool = False,
) -> Callable[[Any, int], Any]:
    """Choose the task body for how the source is read, the mode and ``on_error``; with a
    `CoroutinePlan`, one that runs the mapper's coroutines concurrently (on the caller's
    loop when ``here``)."""
    described = describe(source)
    split_source = described.worker_side()
    if plan is not None:
        return _coroutine_body(described, split_source, mode, mapper, reducer, on_error, plan, here)
    if split_source is not None:  # the workers read the records: the source knows how
        return split_source.task_body(mode, mapper, reducer, on_error, batch_format)
    if mode == "blocks":
        raise ValueError("mode='blocks' needs a file source: aiomr.sources.files(...)")
    if mode == "batches":
        raise ValueError(
            "mode='batches' needs a columnar source read by the workers, such as "
            "aiomr.sources.parquet(...)"
        )
    parser = described.parser
    if on_error != "raise":
        return functools.partial(fold_guarded, mapper, reducer, parser)
    if mode == "record":
        if parser is not None:
            return functools.partial(fold_parsed, parser, mapper, reducer)
        return functools.partial(fold_records, mapper, reducer)
    if parser is not None:
        return functools.partial(map_parsed_chunk, parser, mapper)
    return functools.partial(map_chunk, mapper)


def _coroutine_body(
    described: Any,
    split_source: Any,
    mode: Mode,
    mapper: Callable[..., Any],
    reducer: Callable[[Any, Any], Any],
    on_error: OnError,
    plan: CoroutinePlan,
    here: bool,
) -> Callable[[Any, int], Any]:
    """The task body of an ``async def`` mapper (`aiomr._worker.coroutines`): a
    `CoroutineTask`, or its coroutine function on the caller's loop when ``here``."""
    guarded = on_error != "raise"
    work: Callable[..., Any]
    if split_source is not None:  # lines of files the workers read, window by window
        if mode != "record" or split_source.reader is None:
            raise ValueError(
                f"an async def mapper over a source the workers read runs in mode='record' "
                f"over lines (aiomr.sources.files), not mode={mode!r}"
            )
        work = functools.partial(fold_split_mapped, split_source.reader, mapper, reducer, guarded)
    elif mode == "chunk":
        work = functools.partial(map_whole_chunk, mapper)
    elif mode == "record":
        work = functools.partial(fold_mapped, mapper, reducer, described.parser, guarded)
    else:
        raise ValueError(f"an async def mapper runs in mode='record' or 'chunk', not {mode!r}")
    task = CoroutineTask(plan, work)
    return task.here if here else task


def ship_named(executor: Executor, fn: Callable[..., Any], parts: dict[str, object]) -> ShippedCode:
    """Ship ``fn``; if it cannot travel, say which of the user's ``parts`` is to blame."""
    try:
        return executor.ship(fn)
    except TypeError as exc:
        for name, part in parts.items():
            try:
                cloudpickle.dumps(part)
            except Exception as err:
                raise TypeError(
                    f"{name} {part!r} cannot be pickled for worker processes: {err}"
                ) from err
        raise exc from None


def default_max_in_flight(executor: Executor) -> int:
    """Two chunks per worker: one running, one queued, so no worker waits for the caller."""
    return 2 * executor.max_workers


async def run_map_phase(
    executor: Executor,
    source: AnySource,
    body: Callable[[Any, int], Any],
    folder: Folder,
    *,
    chunk_size: int | None,
    max_in_flight: int | None,
    stats: JobStats,
    parts: dict[str, object] | None = None,
    retry: RetryPolicy | None = None,
    on_error: OnError = "raise",
    dead_letter: DeadLetterFile | None = None,
    coroutines: CoroutinePlan | None = None,
) -> Any:
    """Run ``body`` over every chunk of ``source`` and fold the partials; return the result.

    The building block of every job: plain map-reduce folds values, key-based jobs fold the
    descriptions of the files their map tasks wrote. ``parts`` names the user callables in
    ``body``, so an error about code that cannot be shipped names the culprit. With
    ``coroutines``, ``body`` runs an ``async def`` mapper's coroutines: on the caller's loop
    when the executor runs coroutines itself (``body`` is then a coroutine function).
    """
    sizer = ChunkSizer(
        chunk_size,
        split_seconds=executor.split_seconds,
        target_seconds=TARGET_TASK_SECONDS if coroutines is None else COROUTINE_TASK_SECONDS,
        smallest=smallest_chunk(coroutines),
    )
    reader: ChunkReader[Any] = ChunkReader(source, sizer, executor.max_workers)
    here = coroutines is not None and executor.runs_coroutines
    run = functools.partial(execute_async if here else execute, body)
    code = ship_named(executor, run, parts or {})
    folder.bind(code)  # a folder the executor made may keep this job's partials remote
    if stats.started_at is None:
        stats.started_at = time.monotonic()
    window = max_in_flight or default_max_in_flight(executor)
    try:
        await dispatch(
            reader,
            executor,
            code,
            folder,
            sizer,
            stats,
            max_in_flight=window,
            retry=retry,
            on_error=on_error,
            dead_letter=dead_letter,
        )
        result = await folder.drain()
        stats.partials_folded = folder.folded
        if stats.records_skipped:
            log.warning(
                "skipped %d bad records of %d (on_error=%r); the first: %s",
                stats.records_skipped,
                stats.records,
                on_error,
                stats.bad_sample[0] if stats.bad_sample else "?",
            )
        return result
    finally:
        code.release()
        try:
            await reader.aclose()
        finally:
            await folder.aclose()


async def run_map_reduce(
    executor: Executor,
    source: AnySource,
    mapper: Callable[[Any], Any],
    reducer: Callable[[Any, Any], Any],
    options: MapOptions,
    stats: JobStats | None,
    folder: Folder | None = None,
) -> Any:
    """Run one job on ``executor`` and return its result (see `aiomr.map_reduce`).

    ``folder``: where partials are folded, when the caller wants to watch the running value.
    """
    check_callable("mapper", mapper)
    check_callable("reducer", reducer)
    stats = stats if stats is not None else JobStats()
    if folder is None:
        # An executor that can combine partials where they are (Dask) makes its own folder.
        folder = executor.open_folder(reducer, initial=options.initial, ordered=options.ordered)
    if folder is None:
        folder = Folder(reducer, initial=options.initial, ordered=options.ordered)
    dead_letter = DeadLetterFile(options.dead_letter) if options.dead_letter else None
    try:
        async with coroutine_job(mapper, options, executor) as plan:
            body = _body_for(
                source,
                options.mode,
                mapper,
                reducer,
                options.on_error,
                options.batch_format,
                plan,
                executor.runs_coroutines,
            )
            result = await run_map_phase(
                executor,
                source,
                body,
                folder,
                chunk_size=options.chunk_size,
                max_in_flight=options.max_in_flight,
                stats=stats,
                parts={"mapper": mapper, "reducer": reducer},
                retry=options.retry,
                on_error=options.on_error,
                dead_letter=dead_letter,
                coroutines=plan,
            )
    finally:
        stats.finished_at = time.monotonic()
        if dead_letter is not None:
            await dead_letter.aclose()
    if result is MISSING:
        raise EmptySourceError("the source yielded no records and no initial value was given")
    return result


def check_job(source: object, **functions: object) -> None:
    """Check a job's source and functions (``mapper=``, ``reducer=``) before any work starts."""
    for name, function in functions.items():
        check_callable(name, function)
    check_source(source)
