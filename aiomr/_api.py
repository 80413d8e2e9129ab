"""``aiomr.map_reduce``: one job, one await, a pool owned by the call."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import Any, Literal, overload

from ._badrecords import OnError
from ._chunker import AnySource, check_source
from ._engine import Engine
from ._job import JobOptions, check_callable
from ._retry import RetryPolicy
from ._sentinels import MISSING
from ._stats import JobStats
from ._stream import Snapshot, StreamOptions
from ._types import Mode, R, V
from ._windows import Window, WindowSpec
from .executors import ExecutorSpec
from .sources._split_source import SplitSource

__all__ = ["map_reduce", "open_stream", "open_windows"]


@overload
async def map_reduce(
    source: Iterable[R] | AsyncIterable[R] | SplitSource,
    mapper: Callable[[R], V],
    reducer: Callable[[V, V], V],
    *,
    initial: V = ...,
    mode: Literal["record"] = ...,
    ordered: bool = ...,
    chunk_size: int | None = ...,
    max_in_flight: int | None = ...,
    retry: RetryPolicy | None = ...,
    on_error: OnError = ...,
    dead_letter: str | os.PathLike[str] | None = ...,
    executor: ExecutorSpec = ...,
    max_workers: int | None = ...,
    stats: JobStats | None = ...,
) -> V: ...


@overload
async def map_reduce(
    source: SplitSource,
    mapper: Callable[[Iterator[bytes]], V],
    reducer: Callable[[V, V], V],
    *,
    initial: V = ...,
    mode: Literal["blocks"],
    ordered: bool = ...,
    chunk_size: int | None = ...,
    max_in_flight: int | None = ...,
    retry: RetryPolicy | None = ...,
    on_error: OnError = ...,
    dead_letter: str | os.PathLike[str] | None = ...,
    executor: ExecutorSpec = ...,
    max_workers: int | None = ...,
    stats: JobStats | None = ...,
) -> V: ...


@overload
async def map_reduce(
    source: Iterable[R] | AsyncIterable[R] | SplitSource,
    mapper: Callable[[list[R]], V],
    reducer: Callable[[V, V], V],
    *,
    initial: V = ...,
    mode: Literal["chunk"],
    ordered: bool = ...,
    chunk_size: int | None = ...,
    max_in_flight: int | None = ...,
    retry: RetryPolicy | None = ...,
    on_error: OnError = ...,
    dead_letter: str | os.PathLike[str] | None = ...,
    executor: ExecutorSpec = ...,
    max_workers: int | None = ...,
    stats: JobStats | None = ...,
) -> V: ...


async def map_reduce(
    source: AnySource,
    mapper: Callable[[Any], Any],
    reducer: Callable[[Any, Any], Any],
    *,
    initial: Any = MISSING,
    mode: Mode = "record",
    ordered: bool = False,
    chunk_size: int | None = None,
    max_in_flight: int | None = None,
    retry: RetryPolicy | None = None,
    on_error: OnError = "raise",
    dead_letter: str | os.PathLike[str] | None = None,
    executor: ExecutorSpec = "process",
    max_workers: int | None = None,
    stats: JobStats | None = None,
) -> Any:
    """Map every record of ``source`` and reduce the values to one result.

    Example:

        import asyncio, operator, aiomr

        async def main() -> None:
            total = await aiomr.map_reduce(range(1, 11), lambda x: x * x, operator.add)
            print(total)  # 385

        if __name__ == "__main__":
            aiomr.run(main())

    Records travel to the workers in chunks. In ``mode="record"`` (the default) each worker maps
    every record of its chunk and folds the values with ``reducer``, so one partial per chunk
    comes back; in ``mode="chunk"`` the mapper receives the whole chunk (a list) and returns the
    partial itself. The caller folds the partials with ``reducer`` as they arrive.

    Args:
        source: any iterable or async iterable (async generators, async database cursors).
            It is pulled lazily, never read ahead of the in-flight window, and closed when the
            job ends.
        mapper: ``record -> value`` (``"record"`` mode) or ``list[record] -> partial``
            (``"chunk"`` mode). Lambdas and closures work with the process pool. A plain
            function: ``async def`` functions and generator functions are refused with a
            `TypeError` (workers run no event loop, and a generator is not a value).
        reducer: ``(value, value) -> value``. It must be associative, and commutative unless
            ``ordered=True``; values and the result share one type.
        initial: folded in once, first; the result of an empty source. Without it an empty
            source raises `aiomr.EmptySourceError`.
        mode: ``"record"`` or ``"chunk"``, as above.
        ordered: fold partials in input order instead of as they complete, for reducers
            that are associative but not commutative (string concatenation, list append).
        chunk_size: records per chunk; ``None`` adapts it from measured task times.
        max_in_flight: chunks outstanding at most (running, or done and not yet folded);
            defaults to twice the worker count.
        retry: when to run a failed chunk again; by default a chunk whose worker process
            died runs again, up to 3 runs in all (`aiomr.RetryPolicy`).
        on_error: ``"raise"`` (the default) fails the job on the first record whose parsing
            or mapping raises; ``"skip"`` leaves such records out, counts them in
            ``stats.records_skipped`` and keeps a sample in ``stats.bad_sample``;
            ``"collect"`` also keeps every one in ``stats.bad_records``. Record mode only.
        dead_letter: a JSON Lines file to append every skipped record to (location, record,
            error).
        executor: ``"process"`` (default), ``"thread"``, ``"inline"``, an
            `aiomr.executors.Executor`, or a `concurrent.futures.Executor`.
        max_workers: workers for an executor created by name; defaults to the CPU count.
        stats: a `aiomr.JobStats` to fill live with the job's figures.

    Returns:
        The reduction of all mapped values (``initial`` folded in first when given).

    Raises:
        Exception: whatever the mapper or reducer raised, as itself, with the worker's
            traceback as ``__cause__`` and a note naming the failing chunk.
        TypeError, ValueError: for bad arguments, before any record is read.

    Cancellation: cancelling the call (or an ``asyncio.timeout`` around it) closes the source,
    cancels outstanding chunks and stops the worker processes this call started.
    """
    # Check every argument before starting worker processes.
    options = JobOptions(
        initial, mode, ordered, chunk_size, max_in_flight, retry, on_error, dead_letter
    )
    check_callable("mapper", mapper)
    check_callable("reducer", reducer)
    check_source(source)
    async with Engine(executor, max_workers=max_workers, split_seconds=None) as engine:
        return await engine._map_reduce(source, mapper, reducer, options, stats)


@contextlib.asynccontextmanager
async def open_stream(
    source: Iterable[R] | AsyncIterable[R] | SplitSource,
    mapper: Callable[[R], V],
    reducer: Callable[[V, V], V],
    *,
    every_seconds: float | None = 1.0,
    every_partials: int | None = None,
    view: Callable[[V], Any] | None = None,
    initial: V = MISSING,
    ordered: bool = False,
    chunk_size: int | None = None,
    max_in_flight: int | None = None,
    retry: RetryPolicy | None = None,
    on_error: OnError = "raise",
    dead_letter: str | os.PathLike[str] | None = None,
    executor: ExecutorSpec = "process",
    max_workers: int | None = None,
    stats: JobStats | None = None,
) -> AsyncIterator[AsyncIterator[Snapshot[Any]]]:
    """Run a map-reduce job and watch its running result as partials are folded in.

    A live top 20 of a word count, refreshed every half second:

        import collections, aiomr

        def count(line: str) -> collections.Counter[str]:
            return collections.Counter(line.split())

        def merge(a: collections.Counter[str], b: collections.Counter[str]):
            a.update(b)
            return a

        async def main() -> None:
            lines = aiomr.sources.lines("logs/*.log")
            top20 = lambda counts: counts.most_common(20)
            async with aiomr.open_stream(
                lines, count, merge, every_seconds=0.5, view=top20
            ) as snapshots:
                async for snapshot in snapshots:
                    print(snapshot.partials, snapshot.value[:3], snapshot.final)

    Entering starts the job in a task of its own; iterating yields `aiomr.Snapshot` values:
    ``view(running value)`` every ``every_seconds`` seconds and/or every ``every_partials``
    partials folded (whichever comes first), then one with ``final=True`` holding the
    job's result (``view(result)`` when a view is given), which equals what
    `aiomr.map_reduce` returns for the same arguments.

    Snapshots are taken when the loop asks for the next one, on the thread that folds the
    partials, between two folds: the job never waits for the watcher, and a slow watcher
    simply sees fewer snapshots. ``view`` runs on that thread too; keep it quick (a top
    20, a copy). Without one each snapshot is a shallow copy (`copy.copy`) of the running
    value, safe for reducers that update a dict or a counter in place.

    Args:
        every_seconds: seconds between snapshots; ``None`` to pace by partials only.
        every_partials: partials folded between snapshots; ``None`` to pace by time only.
        view: what of the running value to show: ``running value -> snapshot value``.

    The other arguments are those of `aiomr.map_reduce` (record mode).

    Cancellation: leaving the ``async with`` before the final snapshot cancels the job (its
    source is closed, its workers stopped). An error of the job is raised by the iteration,
    as itself; if the loop was left before it came, leaving the ``async with`` raises it.
    """
    options = JobOptions(
        initial, "record", ordered, chunk_size, max_in_flight, retry, on_error, dead_letter
    )
    StreamOptions(every_seconds, every_partials, view)
    check_callable("mapper", mapper)
    check_callable("reducer", reducer)
    check_source(source)
    async with (
        Engine(executor, max_workers=max_workers, split_seconds=None) as engine,
        engine.open_stream(
            source,
            mapper,
            reducer,
            every_seconds=every_seconds,
            every_partials=every_partials,
            view=view,
            initial=options.initial,
            ordered=ordered,
            chunk_size=chunk_size,
            max_in_flight=max_in_flight,
            retry=retry,
            on_error=on_error,
            dead_letter=dead_letter,
            stats=stats,
        ) as snapshots,
    ):
        yield snapshots


@contextlib.asynccontextmanager
async def open_windows(
    source: Iterable[R] | AsyncIterable[R],
    mapper: Callable[[R], V],
    reducer: Callable[[V, V], V],
    *,
    size: float,
    slide: float | None = None,
    by: Literal["count", "time"] = "count",
    initial: V = MISSING,
    chunk_size: int | None = None,
    max_in_flight: int | None = None,
    retry: RetryPolicy | None = None,
    on_error: OnError = "raise",
    dead_letter: str | os.PathLike[str] | None = None,
    executor: ExecutorSpec = "process",
    max_workers: int | None = None,
) -> AsyncIterator[AsyncIterator[Window[Any]]]:
    """Map and reduce an endless source window by window: one result per window.

    Hashtag counts per minute of a stream of posts, over the last five minutes:

        import collections, aiomr

        def tags(post: str) -> collections.Counter[str]:
            return collections.Counter(w for w in post.split() if w.startswith("#"))

        def merge(a: collections.Counter[str], b: collections.Counter[str]):
            a.update(b)
            return a

        async def main(posts) -> None:
            async with aiomr.open_windows(
                posts, tags, merge, by="time", size=300, slide=60
            ) as windows:
                async for window in windows:
                    print(window.end, window.records, window.value.most_common(5))

    Windows are ``size`` records (``by="count"``) or seconds of arrival time (``by="time"``)
    long and start every ``slide`` (default: ``size``, tumbling windows that do not
    overlap); ``size`` must be a whole multiple of ``slide``. Each slide-long pane is
    mapped and reduced once, on the workers, as a job of its own; each window folds the
    results of its panes with ``reducer`` (on a helper thread), so a record is mapped once
    however many windows it falls in. A window is yielded when it closes: a time window
    when its time is up, whether records came or not; the last, partial window when a
    finite source ends. Windows without records are yielded only when ``initial`` is given
    (with it as their value).

    ``reducer`` folds pane results into a copy (`copy.copy`) of the first pane's: it may
    update its first argument in place, never its second.

    Args:
        size: records or seconds per window.
        slide: records or seconds between the starts of two windows.
        by: ``"count"`` or ``"time"``.
        initial: the value of a window without records; without it such windows are left
            out.

    The other arguments are those of `aiomr.map_reduce` (record mode), and apply to every
    pane's job. The source is read by a task of its own, at most 10,000 records ahead.

    Cancellation: leaving the ``async with`` (or cancelling the loop over the windows)
    stops reading the source and cancels the pane being reduced.
    """
    spec = WindowSpec(size, slide if slide is not None else size, by)
    JobOptions(MISSING, "record", False, chunk_size, max_in_flight, retry, on_error, dead_letter)
    check_callable("mapper", mapper)
    check_callable("reducer", reducer)
    check_source(source)
    async with (
        Engine(executor, max_workers=max_workers, split_seconds=None) as engine,
        engine.open_windows(
            source,
            mapper,
            reducer,
            size=spec.size,
            slide=spec.slide,
            by=by,
            initial=initial,
            chunk_size=chunk_size,
            max_in_flight=max_in_flight,
            retry=retry,
            on_error=on_error,
            dead_letter=dead_letter,
        ) as results,
    ):
        yield results
