"""`aiomr.aggregate`: an `Aggregate` over a batch source, in memory or beyond it.

```
 phase 1 (one task per split)             caller            phase 2 (one task per partition)
 batches ─► Aggregate.map ─► SpillingMerge ─► fold ─► runs? ─► partition p of every run ─►
            (states per batch)  (a run once over           merge, finish ─► table or Parquet
                                 the budget)
```

Phase 1 is a ``mode="batches"`` map-reduce job whose reducer is a `SpillingMerge`: states
merge in the workers and on the caller's fold thread, and whichever process holds more than
``memory_budget`` bytes of them writes them to a run, hash-partitioned by key. When no
process ever did, the answer is finished from the states in memory, as `Aggregate.finish`
does. Otherwise the caller writes what it holds to one more run and phase 2 reduces each
partition on a worker: every key's states meet in one partition, so each partition's
table is final, and the answer is their concatenation (or their Parquet files, with
``output``). The job's directory is removed when the job ends, however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import glob
import operator
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from .._keyed.phases import new_directory, remove_directory
from .._map_phase import run_map_reduce
from .._options import AggregateOptions, MapOptions
from .._stats import JobStats
from ..executors import Executor
from .aggregate import Aggregate, States
from .formats import converter
from .imports import check_installed, require
from .spill import (
    STREAMED_BATCH_ROWS,
    PartFormat,
    PartitionReducer,
    Spilled,
    SpillingMerge,
    write_part,
)

__all__ = [
    "DEFAULT_PARTITIONS",
    "ParquetParts",
    "check_output",
    "open_aggregate",
    "run_aggregate",
]

DEFAULT_PARTITIONS = 64
"""Partitions of the runs when none is given: each holds about 1/64 of the keys, so a job
spills up to 64 times its budget before a partition is reduced in two levels."""


@dataclass(frozen=True, slots=True)
class ParquetParts:
    """What `aiomr.aggregate` wrote with ``output=``: one Parquet file per partition with
    rows, in ``directory``; read them back with ``pyarrow.dataset.dataset(directory)`` or
    ``polars.scan_parquet(f"{directory}/*.parquet")``."""

    directory: str
    files: tuple[str, ...]
    rows: int


def check_output(output: str | os.PathLike[str] | None) -> str | None:
    """The output directory as a string; refuse one that holds a result already (blocking:
    run it on a thread)."""
    if output is None:
        return None
    directory = os.fspath(output)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(f"output={directory!r} is a file, not a directory")
    if glob.glob(os.path.join(glob.escape(directory), "part-*.parquet")):
        raise FileExistsError(
            f"output={directory!r} already holds part-*.parquet files of another result; "
            "remove them or write elsewhere"
        )
    os.makedirs(directory, exist_ok=True)
    return directory


async def run_aggregate(
    executor: Executor, source: Any, aggregate: Aggregate, options: AggregateOptions
) -> Any:
    """Run the aggregation (see the module docstring); a table, or `ParquetParts`."""
    convert = await _checked(aggregate, options)
    output = await asyncio.to_thread(check_output, options.output)
    sink = None if output is None else _Sink(output, "parquet")
    found = await _aggregated(executor, source, aggregate, options, sink)
    if output is None:
        tables = found.partitions if found.finished is None else [found.finished]
        return await asyncio.to_thread(_concatenated, tables, convert)
    counts = found.partitions
    if found.finished is not None:  # nothing spilled: the one part, written here
        counts = [await asyncio.to_thread(write_part, [found.finished], output, 0)]
    return await asyncio.to_thread(_parts_written, output, counts)


@contextlib.asynccontextmanager
async def open_aggregate(
    executor: Executor, source: Any, aggregate: Aggregate, options: AggregateOptions
) -> AsyncIterator[AsyncIterator[Any]]:
    """Run the aggregation, then stream its result's batches (see `aiomr.open_aggregate`):
    the partitions' tables are written by the workers as Arrow IPC files in a directory of
    the job, read back memory-mapped one batch at a time, and removed on leaving."""
    if options.output is not None:
        raise ValueError(
            "open_aggregate streams the result back; to write it to a directory, call "
            "aiomr.aggregate(..., output=...)"
        )
    convert = await _checked(aggregate, options)
    results = await new_directory(options.temp_dir)
    try:
        found = await _aggregated(executor, source, aggregate, options, _Sink(results, "arrow"))
        yield _streamed(found, results, convert)
    finally:
        await remove_directory(results)


@dataclass(frozen=True, slots=True)
class _Found:
    """What the phases found: the finished table when nothing spilled (it fits the budget),
    else per partition its table (no sink) or the rows it wrote (a sink)."""

    finished: Any | None
    partitions: list[Any]


@dataclass(frozen=True, slots=True)
class _Sink:
    """Where the partitions' finished tables are written, and how."""

    directory: str
    part_format: PartFormat


async def _checked(aggregate: Aggregate, options: AggregateOptions) -> Callable[[Any], Any]:
    """Check what fails before any work; the converter of the result's format."""
    if not isinstance(aggregate, Aggregate):
        raise TypeError(f"aggregate must be an aiomr.Aggregate, got {aggregate!r}")
    check_installed("numpy", "aiomr.aggregate")  # the workers hash keys with it
    # The library of the result's format is imported now: a missing one fails before any
    # work, and the import is not left for the end of a long job.
    return await asyncio.to_thread(converter, options.result_format)


async def _aggregated(
    executor: Executor,
    source: Any,
    aggregate: Aggregate,
    options: AggregateOptions,
    sink: _Sink | None,
) -> _Found:
    """Run both phases (the second only if anything spilled, its partitions written to
    ``sink`` when given)."""
    partitions = options.partitions or DEFAULT_PARTITIONS
    directory = await new_directory(options.temp_dir)
    try:
        merge = SpillingMerge(aggregate, options.memory_budget, directory, partitions)
        stats = options.stats if options.stats is not None else JobStats()
        map_options = dataclasses.replace(options.map_options(), ordered=aggregate.ordered)
        value = await run_map_reduce(executor, source, aggregate.map, merge, map_options, stats)
        if isinstance(value, States):
            return _Found(await asyncio.to_thread(aggregate.finish, value), [])
        assert isinstance(value, Spilled)
        runs = value.runs
        if value.states is not None:
            runs += (await asyncio.to_thread(merge.spill, value.states),)
        stats.spills = len(runs)
        reduce = PartitionReducer(
            aggregate,
            runs,
            options.memory_budget,
            directory,
            partitions,
            None if sink is None else sink.directory,
            "parquet" if sink is None else sink.part_format,
        )
        reduce_options = MapOptions(chunk_size=1, retry=options.retry, initial=[])
        found = await run_map_reduce(
            executor, range(partitions), reduce, operator.add, reduce_options, None
        )
        return _Found(None, found)
    finally:
        await remove_directory(directory)


def _concatenated(tables: list[Any], convert: Callable[[Any], Any]) -> Any:
    # Column types promoted where partitions differ (a PartitionApply answer whose key
    # column was all nulls in one partition has the null type there).
    pa = require("pyarrow", "aiomr.aggregate")
    return convert(pa.concat_tables(tables, promote_options="default"))


def _parts(directory: str, part_format: PartFormat) -> list[str]:
    pattern = os.path.join(glob.escape(directory), f"part-*.{part_format}")
    return sorted(glob.glob(pattern))


def _parts_written(output: str, counts: list[int]) -> ParquetParts:
    return ParquetParts(output, tuple(_parts(output, "parquet")), sum(counts))


async def _streamed(
    found: _Found, directory: str, convert: Callable[[Any], Any]
) -> AsyncIterator[Any]:
    """The result's record batches, converted: from the table in memory when nothing was
    spilled, else from the parts in ``directory``, one memory-mapped batch at a time."""
    if found.finished is not None:
        for batch in found.finished.to_batches(max_chunksize=STREAMED_BATCH_ROWS):
            if batch.num_rows:
                yield await asyncio.to_thread(convert, batch)
        return
    for path in await asyncio.to_thread(_parts, directory, "arrow"):
        reader = await asyncio.to_thread(_Part, path)
        try:
            for index in range(reader.num_record_batches):
                batch = await asyncio.to_thread(_converted, reader, index, convert)
                if batch is not None:
                    yield batch
        finally:
            reader.close()


class _Part:
    """An Arrow IPC file of the result, memory-mapped."""

    def __init__(self, path: str) -> None:
        pa = require("pyarrow", "aiomr.open_aggregate")
        self.source = pa.memory_map(path)
        self.reader = require("pyarrow.ipc", "aiomr.open_aggregate").open_file(self.source)
        self.num_record_batches: int = self.reader.num_record_batches

    def close(self) -> None:
        self.source.close()


def _converted(part: _Part, index: int, convert: Callable[[Any], Any]) -> Any:
    batch = part.reader.get_batch(index)
    return convert(batch) if batch.num_rows else None
