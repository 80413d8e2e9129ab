"""An `Aggregate`'s partial states beyond a memory budget: hash-partitioned runs on disk.

`SpillingMerge` is the reducer of a key-based columnar aggregation (`aiomr.aggregate`). It
merges partial states as `Aggregate.merge` does, in the workers (a split's batches) and on
the caller's fold thread (the splits); once the merged states hold more than the memory
budget, it regroups them and writes them to a **run**: one Arrow IPC file in the job's
directory whose record batch ``p`` holds the rows of partition ``p`` (by `hash_keys` of
the key columns). What it returns is then a `Spilled`: the states still in memory and the
runs written so far, by path only.

A run is referenced only by the value that wrote it, so the runs of a task that failed or
was retried are never read (they go with the job's directory): every row counts once.

`reduce_partition` is the second phase, one task per partition: it reads batch ``p`` of
every run (memory-mapped), merges them (spilling again, with the hash salted one level
further, if one partition's states outgrow the budget) and finishes them, returning the
table or writing it to a file: Parquet (a result written to ``output=``) or Arrow IPC (a
result streamed back to the caller, read memory-mapped).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from .aggregate import Aggregate, States
from .hashing import partition_of
from .imports import require

__all__ = ["PartFormat", "PartitionReducer", "SpillingMerge", "Spilled", "write_part", "write_run"]

PartFormat: TypeAlias = Literal["parquet", "arrow"]
"""How a partition's finished table is written: Parquet, or Arrow IPC (``part-N.arrow``)."""
STREAMED_BATCH_ROWS = 65_536
"""Rows per record batch of a part written as Arrow IPC: what a streamed result yields."""


@dataclass(frozen=True, slots=True)
class Spilled:
    """Partial states of which some were written to runs: those left in memory (or
    ``None``) and the paths of the runs, each holding every partition's rows."""

    states: States | None
    runs: tuple[str, ...]

    def __repr__(self) -> str:
        rows = 0 if self.states is None else self.states.table.num_rows
        return f"<aiomr.Aggregate states: {rows} rows in memory, {len(self.runs)} runs on disk>"


def _parts(value: States | Spilled) -> tuple[States | None, tuple[str, ...]]:
    if isinstance(value, Spilled):
        return value.states, value.runs
    if isinstance(value, States):
        return value, ()
    raise TypeError(f"an aggregation's mapper must give Aggregate states, got {value!r}")


def write_run(states: States, keys: list[str], partitions: int, level: int, directory: str) -> str:
    """Write ``states`` (grouped) to a new run in ``directory``: record batch ``p`` holds the
    rows of partition ``p``. Return its path."""
    np = require("numpy", "a key-based columnar aggregation")
    pa = require("pyarrow", "a key-based columnar aggregation")
    ipc = require("pyarrow.ipc", "a key-based columnar aggregation")
    table = states.table
    which = partition_of(table, keys, partitions, level)
    counts = np.bincount(which, minlength=partitions).tolist()
    ordered = table.take(pa.array(np.argsort(which, kind="stable")))
    del which
    path = os.path.join(directory, f"run-{level}-{os.getpid()}-{uuid.uuid4().hex}.arrow")
    with pa.OSFile(path, "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        start = 0
        for count in counts:
            # One batch per partition, made contiguous a partition at a time: no second
            # copy of the whole table.
            part = ordered.slice(start, count).combine_chunks().to_batches()
            writer.write_batch(
                part[0] if part else pa.RecordBatch.from_pylist([], schema=table.schema)
            )
            start += count
    return path


def release_memory() -> None:
    """Hand the memory pyarrow's allocator keeps for reuse back to the system."""
    pa = require("pyarrow", "a key-based columnar aggregation")
    pa.default_memory_pool().release_unused()


class SpillingMerge:
    """Merge `Aggregate` states as `Aggregate.merge`, writing them to a run once they hold
    more than ``budget`` bytes (see the module docstring)."""

    def __init__(
        self, aggregate: Aggregate, budget: int, directory: str, partitions: int, level: int = 0
    ) -> None:
        self.aggregate = aggregate
        self.budget = budget
        self.directory = directory
        self.partitions = partitions
        self.level = level

    def __call__(self, left: States | Spilled, right: States | Spilled) -> States | Spilled:
        left_states, left_runs = _parts(left)
        right_states, right_runs = _parts(right)
        if left_states is not None and right_runs and self.aggregate.ordered:
            # In input order, what is in memory comes after its own runs: the left states
            # go to disk before the right runs, so runs and states stay in order.
            left_runs, left_states = (*left_runs, self.spill(left_states)), None
        runs = left_runs + right_runs
        if left_states is None or right_states is None:
            states = left_states or right_states
        else:
            states = self.aggregate.merge(left_states, right_states)
        if states is not None and states.table.nbytes > self.budget:
            if self.aggregate.regroup_pays:
                # Regrouping takes several times the states' size for a moment: worth it
                # only where keys repeat (then the states may shrink back under budget).
                states = self.aggregate.regrouped(states)
            if states.table.nbytes > self.budget // 2:  # else merge on: it shrank well
                runs += (self.spill(states),)
                states = None
        return Spilled(states, runs) if runs else _checked(states)

    def finish_split(self, value: States | Spilled) -> States | Spilled:
        """What a split's value becomes before it leaves the worker: once the split has
        written a run, or holds more than a quarter of the budget, its states go to disk
        too, so the caller receives paths, or states small enough to merge by the dozen,
        never another budget's worth per split."""
        states, runs = _parts(value)
        if states is not None and (runs or states.table.nbytes > self.budget // 4):
            return Spilled(None, (*runs, self.spill(states)))
        return value

    def spill(self, states: States) -> str:
        """Write ``states`` to a new run, as they are (keys may repeat in a run: the
        partition's reduction merges them); return its path. The memory the process's
        allocator kept for the work is handed back."""
        path = write_run(states, self.aggregate.keys, self.partitions, self.level, self.directory)
        release_memory()
        return path


def _checked(states: States | None) -> States:
    assert states is not None  # two values without runs hold states
    return states


def _partition_batches(runs: tuple[str, ...], partition: int) -> Iterator[Any]:
    """Batch ``partition`` of each run, memory-mapped."""
    pa = require("pyarrow", "a key-based columnar aggregation")
    ipc = require("pyarrow.ipc", "a key-based columnar aggregation")
    for path in runs:
        with pa.memory_map(path) as source:
            batch = ipc.open_file(source).get_batch(partition)
        if batch.num_rows:
            yield batch


class PartitionReducer:
    """The task of one partition: its rows from every run merged and finished; the table,
    or, with ``output``, the rows written there as a file in ``part_format`` (then their
    count)."""

    def __init__(
        self,
        aggregate: Aggregate,
        runs: tuple[str, ...],
        budget: int,
        directory: str,
        partitions: int,
        output: str | None,
        part_format: PartFormat = "parquet",
    ) -> None:
        self.aggregate = aggregate
        self.runs = runs
        self.budget = budget
        self.directory = directory
        self.partitions = partitions
        self.output = output
        self.part_format: PartFormat = part_format

    def __call__(self, partition: int) -> list[Any]:
        """``[table]`` (none for a partition without rows), or ``[rows written]``."""
        tables = self._reduced(self.runs, partition, 0)
        if self.output is not None:
            return [write_part(tables, self.output, partition, self.part_format)]
        pa = require("pyarrow", "a key-based columnar aggregation")
        return [pa.concat_tables(tables, promote_options="default")] if tables else []

    def _reduced(self, runs: tuple[str, ...], partition: int, level: int) -> list[Any]:
        """The finished tables of ``partition`` of ``runs`` (partitioned at ``level``).

        States over the budget are partitioned again, the hash salted one level further,
        and each part reduced in turn; where that split nothing (every row went to one part:
        one key, or one partition), the part is merged in memory: no further level could
        do better. Every level holds fewer rows than the one above it, so this ends.
        """
        merge = SpillingMerge(
            self.aggregate, self.budget, self.directory, self.partitions, level + 1
        )
        value = _folded(_partition_states(runs, partition), merge)
        if value is None:
            return []
        states, deeper = _parts(value)
        if not deeper:
            return [self.aggregate.finish(_checked(states))]
        if states is not None:
            deeper += (merge.spill(states),)
        tables: list[Any] = []
        filled = [sub for sub, rows in enumerate(_rows_per_partition(deeper)) if rows]
        if len(filled) == 1:
            in_memory = _folded(_partition_states(deeper, filled[0]), self.aggregate.merge)
            assert isinstance(in_memory, States)  # the part has rows; plain merges give states
            tables.append(self.aggregate.finish(in_memory))
        else:
            for sub in filled:
                tables.extend(self._reduced(deeper, sub, level + 1))
        for path in deeper:  # read: not needed any more, and the budget is of disk too
            os.unlink(path)
        return tables


def _folded(
    values: Iterator[States], merge: Callable[[Any, States], Any]
) -> States | Spilled | None:
    """``values`` merged in order with ``merge``; ``None`` when there are none."""
    value: States | Spilled | None = None
    for read in values:
        value = read if value is None else merge(value, read)
    return value


def _partition_states(runs: tuple[str, ...], partition: int) -> Iterator[States]:
    pa = require("pyarrow", "a key-based columnar aggregation")
    for batch in _partition_batches(runs, partition):
        # A run may hold a key more than once (states are written as merged, not
        # regrouped): not grouped, so merging and finishing regroup them.
        yield States(pa.Table.from_batches([batch]), 0)


def _rows_per_partition(runs: tuple[str, ...]) -> list[int]:
    """Rows of each partition over ``runs`` (from the files' batches, memory-mapped)."""
    pa = require("pyarrow", "a key-based columnar aggregation")
    ipc = require("pyarrow.ipc", "a key-based columnar aggregation")
    totals: list[int] = []
    for path in runs:
        with pa.memory_map(path) as source:
            reader = ipc.open_file(source)
            rows = [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
        totals = [a + b for a, b in zip(totals, rows, strict=True)] if totals else rows
    return totals


def write_part(
    tables: list[Any], output: str, partition: int, part_format: PartFormat = "parquet"
) -> int:
    """Write ``tables`` as ``part-PARTITION.parquet`` (or ``.arrow``) in ``output``, complete
    or not at all (written beside, then renamed); return the rows written."""
    pa = require("pyarrow", "writing an aggregation's result")
    path = os.path.join(output, f"part-{partition:05d}.{part_format}")
    partial = f"{path}.{os.getpid()}.{uuid.uuid4().hex}.part"
    if not tables:
        return 0
    # One schema for the file: types promoted where the pieces differ (see `_reduced`).
    table = pa.concat_tables(tables, promote_options="default")
    try:
        if part_format == "parquet":
            require("pyarrow.parquet", "writing an aggregation to Parquet").write_table(
                table, partial
            )
        else:
            ipc = require("pyarrow.ipc", "streaming an aggregation's result")
            with ipc.new_file(partial, table.schema) as writer:
                writer.write_table(table, max_chunksize=STREAMED_BATCH_ROWS)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return int(table.num_rows)
