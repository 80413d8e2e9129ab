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
import dataclasses
import glob
import operator
import os
from collections.abc import Callable
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
from .spill import PartitionReducer, Spilled, SpillingMerge, write_parquet_part

__all__ = ["DEFAULT_PARTITIONS", "ParquetParts", "check_output", "run_aggregate"]

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
    if not isinstance(aggregate, Aggregate):
        raise TypeError(f"aggregate must be an aiomr.Aggregate, got {aggregate!r}")
    check_installed("numpy", "aiomr.aggregate")  # the workers hash keys with it
    # The library of the result's format is imported now: a missing one fails before any
    # work, and the import is not left for the end of a long job.
    convert = await asyncio.to_thread(converter, options.result_format)
    output = await asyncio.to_thread(check_output, options.output)
    partitions = options.partitions or DEFAULT_PARTITIONS
    directory = await new_directory(options.temp_dir)
    try:
        merge = SpillingMerge(aggregate, options.memory_budget, directory, partitions)
        stats = options.stats if options.stats is not None else JobStats()
        map_options = dataclasses.replace(options.map_options(), ordered=aggregate.ordered)
        value = await run_map_reduce(executor, source, aggregate.map, merge, map_options, stats)
        if isinstance(value, States):
            return await asyncio.to_thread(_finished, aggregate, value, output, convert)
        assert isinstance(value, Spilled)
        runs = value.runs
        if value.states is not None:
            runs += (await asyncio.to_thread(merge.spill, value.states),)
        stats.spills = len(runs)
        reduce = PartitionReducer(
            aggregate, runs, options.memory_budget, directory, partitions, output
        )
        reduce_options = MapOptions(chunk_size=1, retry=options.retry, initial=[])
        found = await run_map_reduce(
            executor, range(partitions), reduce, operator.add, reduce_options, None
        )
        if output is None:
            return await asyncio.to_thread(_concatenated, found, convert)
        return await asyncio.to_thread(_parts_written, output, found)
    finally:
        await remove_directory(directory)


def _finished(
    aggregate: Aggregate, states: States, output: str | None, convert: Callable[[Any], Any]
) -> Any:
    table = aggregate.finish(states)
    if output is None:
        return convert(table)
    written = write_parquet_part([table], output, 0)
    return _parts_written(output, [written])


def _concatenated(tables: list[Any], convert: Callable[[Any], Any]) -> Any:
    # Column types promoted where partitions differ (a PartitionApply answer whose key
    # column was all nulls in one partition has the null type there).
    pa = require("pyarrow", "aiomr.aggregate")
    return convert(pa.concat_tables(tables, promote_options="default"))


def _parts_written(output: str, counts: list[int]) -> ParquetParts:
    files = tuple(sorted(glob.glob(os.path.join(glob.escape(output), "part-*.parquet"))))
    return ParquetParts(output, files, sum(counts))
