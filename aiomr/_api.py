"""``aiomr.map_reduce``: one job, one await, a pool owned by the call."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Literal, Unpack, cast, overload

from ._chunker import AnySource
from ._columnar.aggregate import Aggregate
from ._engine import Engine
from ._map_phase import check_job
from ._options import (
    AggregateKeywords,
    AggregateOptions,
    MapKeywords,
    MapOptions,
    StreamKeywords,
    StreamOptions,
    WindowKeywords,
    WindowOptions,
)
from ._stream import Snapshot
from ._types import Mode, R, V
from ._windows import Window
from .executors import ExecutorSpec
from .sources._source import Source
from .sources._split_source import SplitSource

__all__ = ["aggregate", "map_reduce", "open_aggregate", "open_stream", "open_windows"]


@overload
async def map_reduce(
    source: Iterable[R] | AsyncIterable[R] | Source,
    mapper: Callable[[R], Awaitable[V]] | Callable[[R, Any], Awaitable[V]],
    reducer: Callable[[V, V], V],
    *,
    mode: Literal["record"] = ...,
    executor: ExecutorSpec = ...,
    **options: Unpack[MapKeywords[V]],
) -> V: ...


@overload
async def map_reduce(
    source: Iterable[R] | AsyncIterable[R] | Source,
    mapper: Callable[[R], V],
    reducer: Callable[[V, V], V],
    *,
    mode: Literal["record"] = ...,
    executor: ExecutorSpec = ...,
    **options: Unpack[MapKeywords[V]],
) -> V: ...


@overload
async def map_reduce(
    source: SplitSource,
    mapper: Callable[[Any], V],
    reducer: Callable[[V, V], V],
    *,
    mode: Literal["blocks", "batches"],
    executor: ExecutorSpec = ...,
    **options: Unpack[MapKeywords[V]],
) -> V: ...


@overload
async def map_reduce(
    source: Iterable[R] | AsyncIterable[R] | Source,
    mapper: Callable[[list[R]], V],
    reducer: Callable[[V, V], V],
    *,
    mode: Literal["chunk"],
    executor: ExecutorSpec = ...,
    **options: Unpack[MapKeywords[V]],
) -> V: ...


async def map_reduce(
    source: AnySource,
    mapper: Callable[..., Any],
    reducer: Callable[[Any, Any], Any],
    *,
    mode: Mode = "record",
    executor: ExecutorSpec = "process",
    **options: Unpack[MapKeywords[Any]],
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
            (``"chunk"`` mode). Lambdas and closures work with the process pool. An ``async
            def`` function runs concurrently on an event loop in each worker (``concurrency``
            coroutines at once; see [coroutine mappers](concepts/coroutines.md)); a generator
            function is refused with a `TypeError` (a generator is not a value).
        reducer: ``(value, value) -> value``. It must be associative, and commutative unless
            ``ordered=True``; values and the result share one type.
        mode: ``"record"`` or ``"chunk"``, as above; ``"blocks"`` hands a file source's
            raw blocks to the mapper (`aiomr.sources.files`); ``"batches"`` hands it a
            columnar source's record batches one at a time (`aiomr.sources.parquet`), in
            the ``batch_format`` option's type, and folds its partials in the worker.
        executor: ``"process"`` (default), ``"thread"``, ``"inline"``, an
            `aiomr.executors.Executor`, or a `concurrent.futures.Executor`.
        **options: the job's options, `aiomr.MapKeywords`: ``initial`` (the result of an
            empty source), ``ordered``, ``chunk_size``, ``max_in_flight``, ``max_workers``
            (workers to start; defaults to the CPU count), ``retry``, ``on_error``,
            ``dead_letter``, ``stats``; with an ``async def`` mapper, ``concurrency``,
            ``record_timeout``, ``max_per_second`` and ``resources``.

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
    checked = MapOptions.of("map_reduce", {**options, "mode": mode})
    check_job(source, mapper=mapper, reducer=reducer)
    async with Engine(executor, max_workers=checked.max_workers, split_seconds=None) as engine:
        # One call for every mode: the overloads only tell the types of each apart.
        return await engine.map_reduce(
            source, mapper, reducer, mode=cast(Literal["record"], mode), **options
        )


async def aggregate(
    source: SplitSource,
    aggregate: Aggregate,
    *,
    executor: ExecutorSpec = "process",
    **options: Unpack[AggregateKeywords],
) -> Any:
    """Aggregate a batch source's columns by key, in memory or beyond it.

    ```python
    import pyarrow as pa
    import pyarrow.parquet as pq

    import aiomr
    from aiomr.sources import parquet


    async def main() -> None:
        sales = pa.table({"shop": ["a", "b", "a", "c"], "amount": [5, 7, 1, 2]})
        pq.write_table(sales, "sales.parquet")
        per_shop = aiomr.Aggregate(by="shop", total=("amount", "sum"), sales=("amount", "count"))
        table = await aiomr.aggregate(parquet("sales.parquet"), per_shop)
        print(table.sort_by("shop").to_pylist())
        # [{'shop': 'a', 'total': 6, 'sales': 2}, {'shop': 'b', 'total': 7, 'sales': 1},
        #  {'shop': 'c', 'total': 2, 'sales': 1}]


    if __name__ == "__main__":
        aiomr.run(main())
    ```

    The workers read the source's batches and group each by key (`aiomr.Aggregate.map`);
    partial states merge in the workers and on a thread of the caller. A process whose
    states outgrow ``memory_budget`` writes them to disk, hash-partitioned by key; then a
    second phase reduces each partition on a worker, so no process ever holds more than
    about the budget of states (the result aside: with ``output=`` it is written as
    Parquet by the workers and never held at all).

    Args:
        source: a source of record batches: `aiomr.sources.parquet`, or
            `aiomr.sources.files` with ``format="tsv"``, ``"csv"`` or ``"jsonl"``.
        aggregate: the key columns and aggregations, an `aiomr.Aggregate`.
        executor: as for `aiomr.map_reduce`; with Dask, ``temp_dir`` must be a directory
            every worker sees.
        **options: `aiomr.AggregateKeywords`: ``memory_budget`` (bytes of states per
            process, default 256 MiB), ``partitions``, ``temp_dir``, ``output``,
            ``result_format``, and the options of every job (``max_workers``,
            ``chunk_size``, ``retry``, ``on_error``, ``stats``...).

    Returns:
        A ``pyarrow.Table`` (a Polars or pandas DataFrame with ``result_format``): the key
        columns and one column per aggregation, one row per key, in no particular order;
        with ``output=``, an `aiomr.ParquetParts` naming the files written.

    Raises:
        aiomr.EmptySourceError: the source has no rows.

    Cancellation: cancelling the call stops the job as `aiomr.map_reduce` does, and removes
    its files on disk; Parquet files already written to ``output`` stay.
    """
    checked = AggregateOptions.of("aggregate", options)
    async with Engine(executor, max_workers=checked.max_workers, split_seconds=None) as engine:
        return await engine.aggregate(source, aggregate, **options)


@contextlib.asynccontextmanager
async def open_aggregate(
    source: SplitSource,
    aggregate: Aggregate,
    *,
    executor: ExecutorSpec = "process",
    **options: Unpack[AggregateKeywords],
) -> AsyncIterator[AsyncIterator[Any]]:
    """Run `aiomr.aggregate` and stream its result as record batches, for results larger
    than memory.

    ```python
    import pyarrow as pa
    import pyarrow.parquet as pq

    import aiomr
    from aiomr.sources import parquet


    async def main() -> None:
        visits = pa.table({"user": [i % 300_000 for i in range(900_000)], "ms": range(900_000)})
        pq.write_table(visits, "visits.parquet", row_group_size=100_000)
        per_user = aiomr.Aggregate(by="user", visits=("ms", "count"), slowest=("ms", "max"))
        rows = 0
        async with aiomr.open_aggregate(
            parquet("visits.parquet"), per_user, memory_budget=4 * 1024 * 1024
        ) as batches:
            async for batch in batches:  # a pyarrow.RecordBatch of up to 65,536 rows
                rows += batch.num_rows
        print(rows)  # 300000


    if __name__ == "__main__":
        aiomr.run(main())
    ```

    Entering runs the whole job, as `aiomr.aggregate` does; the batches then stream. When
    the states outgrew the budget, each partition's finished table is written by a worker
    to an Arrow IPC file in a directory of the job (under ``temp_dir``), and the batches
    are read back memory-mapped, one at a time, on a helper thread: the caller never holds
    the result, only the batch in hand. When nothing spilled, the result fits the budget
    and is held in memory, cut into batches. Each batch is a ``pyarrow.RecordBatch``, or a
    Polars or pandas DataFrame with ``result_format``; keys come in no particular order.

    Args:
        source: as for `aiomr.aggregate`.
        aggregate: the key columns and aggregations, an `aiomr.Aggregate`.
        executor: as for `aiomr.aggregate`.
        **options: those of `aiomr.aggregate` but ``output`` (refused: it writes the
            result where this streams it).

    Cancellation: cancelling while entering stops the job as `aiomr.aggregate` does;
    leaving early (``break``) is safe. Leaving removes the result's files and, when the
    call started them, the workers.
    """
    checked = AggregateOptions.of("open_aggregate", options)
    async with (
        Engine(executor, max_workers=checked.max_workers, split_seconds=None) as engine,
        engine.open_aggregate(source, aggregate, **options) as batches,
    ):
        yield batches


@contextlib.asynccontextmanager
async def open_stream(
    source: Iterable[R] | AsyncIterable[R] | Source,
    mapper: Callable[[R], V],
    reducer: Callable[[V, V], V],
    *,
    mode: Literal["record", "batches"] = "record",
    executor: ExecutorSpec = "process",
    **options: Unpack[StreamKeywords[V]],
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

    A batch job is watched the same way (``mode="batches"`` over a columnar source, with
    ``batch_format``): with `aiomr.Aggregate`'s ``map`` and ``merge``, ``view=agg.finish``
    shows the table of the keys so far.

    Args:
        mode: ``"record"`` (the default) or ``"batches"``, as for `aiomr.map_reduce`.
        executor: where the job runs, as for `aiomr.map_reduce`.
        **options: `aiomr.StreamKeywords`: ``every_seconds`` (seconds between snapshots,
            1.0 by default; ``None`` to pace by partials only), ``every_partials``
            (partials folded between snapshots), ``view`` (what of the running value to
            show), and the options of `aiomr.map_reduce` (record mode).

    Cancellation: leaving the ``async with`` before the final snapshot cancels the job (its
    source is closed, its workers stopped). An error of the job is raised by the iteration,
    as itself; if the loop was left before it came, leaving the ``async with`` raises it.
    """
    checked = StreamOptions.of("open_stream", {**options, "mode": mode})
    check_job(source, mapper=mapper, reducer=reducer)
    async with (
        Engine(executor, max_workers=checked.max_workers, split_seconds=None) as engine,
        engine.open_stream(source, mapper, reducer, mode=mode, **options) as snapshots,
    ):
        yield snapshots


@contextlib.asynccontextmanager
async def open_windows(
    source: Iterable[R] | AsyncIterable[R],
    mapper: Callable[[R], V],
    reducer: Callable[[V, V], V],
    *,
    size: float,
    executor: ExecutorSpec = "process",
    **options: Unpack[WindowKeywords[V]],
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
        executor: where the panes' jobs run, as for `aiomr.map_reduce`.
        **options: `aiomr.WindowKeywords`: ``slide`` (records or seconds between the starts
            of two windows), ``by`` (``"count"`` or ``"time"``), ``initial`` (the value of a
            window without records; without it such windows are left out), and the options
            of `aiomr.map_reduce` (record mode) but ``stats``, which apply to every pane's
            job. The source is read by a task of its own, at most 10,000 records ahead.

    Cancellation: leaving the ``async with`` (or cancelling the loop over the windows)
    stops reading the source and cancels the pane being reduced.
    """
    checked = WindowOptions.of("open_windows", {**options, "size": size})
    check_job(source, mapper=mapper, reducer=reducer)
    async with (
        Engine(executor, max_workers=checked.max_workers, split_seconds=None) as engine,
        engine.open_windows(source, mapper, reducer, size=size, **options) as results,
    ):
        yield results
