"""Parquet files and datasets read by the workers, one or more row groups per task.

The caller reads only metadata: it finds the files (paths, globs, directories of a dataset,
hive-partitioned or not), asks pyarrow which row groups the filter can match (partition
values and row group statistics), and groups the remaining row groups of each file into
splits of about ``split_size`` bytes on disk. Each task then gets one split's coordinates
(`aiomr._columnar.parquet_reader.ParquetSplit`) and its worker reads those row groups'
columns itself (`aiomr._columnar.parquet_reader.ParquetReader`). No row passes through the
caller.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .._columnar.imports import require
from .._columnar.parquet_reader import ParquetReader, ParquetSplit
from ._file_splits import auto_split_size
from ._paths import PathsLike, expand_paths
from ._segments import stamp_of
from ._split_source import SplitSource

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "ParquetSource",
    "check_columns_argument",
    "check_filter",
    "parquet",
]

DEFAULT_BATCH_SIZE = 65_536
"""Rows per record batch handed to a batch mapper, at most."""


def check_columns_argument(columns: Sequence[str] | None) -> list[str] | None:
    """The ``columns`` argument of a columnar source, checked: a list of names, or ``None``."""
    if columns is None:
        return None
    if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
        raise TypeError(f"columns must be a sequence of column names, got {columns!r}")
    return list(columns)


def check_filter(filter: Any) -> Any:
    """The ``filter`` argument of a columnar source, checked: an expression, or ``None``."""
    dataset = require("pyarrow.dataset", "a columnar source's filter")
    if filter is not None and not isinstance(filter, dataset.Expression):
        raise TypeError(
            "filter must be a pyarrow.compute.Expression, e.g. "
            f"pyarrow.compute.field('year') >= 2000, got {filter!r}"
        )
    return filter


@dataclass(frozen=True, slots=True)
class _Unit:
    """A row group, as the plan sees it."""

    path: str
    row_group: int
    first_row: int
    rows: int
    size: int
    fragment: Any
    schema: Any
    file_size: int
    stamp: tuple[int, int, int]


class ParquetPlan:
    """The row groups a Parquet source's splits will read, cut into splits on demand."""

    def __init__(self, units: list[_Unit]) -> None:
        self._units = units
        self._next = 0
        self._count = 0
        self.total: int | None = sum(unit.size for unit in units)
        """Bytes on disk of every row group to read."""

    def cut(self, size: int) -> ParquetSplit | None:
        """The next split: row groups of one file, in order, until about ``size`` bytes (at
        least one row group, however large); ``None`` at the end."""
        if self._next >= len(self._units):
            return None
        first = self._units[self._next]
        taken = [first]
        nbytes = first.size
        self._next += 1
        while self._next < len(self._units) and nbytes < size:
            unit = self._units[self._next]
            if unit.path != first.path or unit.fragment is not first.fragment:
                break
            taken.append(unit)
            nbytes += unit.size
            self._next += 1
        groups = tuple(unit.row_group for unit in taken)
        consecutive = groups == tuple(range(groups[0], groups[0] + len(groups)))
        split = ParquetSplit(
            index=self._count,
            path=first.path,
            row_groups=groups,
            first_row=first.first_row if consecutive else None,
            rows=sum(unit.rows for unit in taken),
            size=nbytes,
            fragment=first.fragment.subset(row_group_ids=list(groups)),
            schema=first.schema,
            file_size=first.file_size,
            stamp=first.stamp,
        )
        self._count += 1
        return split


class ParquetSource(SplitSource):
    """Parquet files read by the workers, row groups per task (see `parquet`)."""

    record_noun = ("row", "the Parquet files")

    def __init__(
        self,
        paths: PathsLike,
        *,
        columns: Sequence[str] | None,
        filter: Any,
        partitioning: Literal["hive"] | None,
        batch_size: int,
        split_size: int | None,
        dictionary_columns: Sequence[str] | None = None,
    ) -> None:
        require("pyarrow.dataset", "aiomr.sources.parquet")
        columns = check_columns_argument(columns)
        check_filter(filter)
        if partitioning not in ("hive", None):
            raise ValueError(f"partitioning must be 'hive' or None, got {partitioning!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if split_size is not None and split_size < 1:
            raise ValueError("split_size must be >= 1")
        self.paths_arg = paths
        self.columns = columns
        self.filter = filter
        self.partitioning = partitioning
        self.split_size = split_size
        if dictionary_columns is not None and (
            isinstance(dictionary_columns, str)
            or not all(isinstance(c, str) for c in dictionary_columns)
        ):
            raise TypeError(
                f"dictionary_columns must be a sequence of column names, got {dictionary_columns!r}"
            )
        self.dictionary_columns = list(dictionary_columns or [])
        self.reader: ParquetReader = ParquetReader(columns, filter, batch_size)

    def cutter(self, workers: int) -> tuple[ParquetPlan, int]:
        """Read the files' metadata and plan the row groups to read (blocking); return the
        plan and the split size for ``workers`` workers."""
        units: list[_Unit] = []
        for dataset in self._datasets():
            self._check_columns(dataset)
            units.extend(self._row_groups(dataset))
        plan = ParquetPlan(units)
        size = self.split_size
        if size is None:
            size = auto_split_size(plan.total or 0, workers)
        return plan, size

    def batch_reader(self) -> ParquetReader:
        """The reader itself: it reads row groups as record batches."""
        return self.reader

    def _datasets(self) -> list[Any]:
        """One pyarrow dataset per directory given, one for the files and globs given."""
        dataset = require("pyarrow.dataset", "aiomr.sources.parquet")
        items = (
            [self.paths_arg]
            if isinstance(self.paths_arg, str | os.PathLike)
            else list(self.paths_arg)
        )
        found: list[Any] = []
        files: list[str] = []
        for item in items:
            # Absolute paths: a worker may not share the caller's working directory.
            if isinstance(item, str | os.PathLike) and os.path.isdir(item):
                root = os.path.abspath(item)
                found.append(
                    dataset.dataset(root, format=self._format(), partitioning=self.partitioning)
                )
            else:
                files.extend(os.path.abspath(path) for path in expand_paths([item]))
        if files:
            found.append(dataset.dataset(files, format=self._format()))
        return found

    def _format(self) -> Any:
        """The Parquet format, with the dictionary columns read as dictionaries."""
        dataset = require("pyarrow.dataset", "aiomr.sources.parquet")
        options = dataset.ParquetReadOptions(dictionary_columns=self.dictionary_columns or [])
        return dataset.ParquetFileFormat(read_options=options)

    def _check_columns(self, dataset: Any) -> None:
        if self.columns is None:
            return
        names = dataset.schema.names
        missing = [column for column in self.columns if column not in names]
        if missing:
            raise ValueError(
                f"aiomr.sources.parquet: no column {missing[0]!r} in the files; "
                f"they have {', '.join(names)}"
            )

    def _row_groups(self, dataset: Any) -> list[_Unit]:
        """The row groups of every file of ``dataset`` that the filter may match."""
        units: list[_Unit] = []
        schema = dataset.schema
        for fragment in dataset.get_fragments(filter=self.filter):
            try:
                fragment.ensure_complete_metadata()
                metadata = fragment.metadata
                kept = [
                    info.id
                    for piece in fragment.split_by_row_group(self.filter, schema=schema)
                    for info in piece.row_groups
                ]
            except Exception as exc:
                exc.add_note(f"aiomr: reading the metadata of {fragment.path}")
                raise
            stat = os.stat(fragment.path)
            starts = [0]
            for number in range(metadata.num_row_groups):
                starts.append(starts[-1] + metadata.row_group(number).num_rows)
            for number in kept:
                group = metadata.row_group(number)
                size = sum(
                    group.column(column).total_compressed_size
                    for column in range(group.num_columns)
                )
                units.append(
                    _Unit(
                        fragment.path,
                        number,
                        starts[number],
                        group.num_rows,
                        size,
                        fragment,
                        schema,
                        stat.st_size,
                        stamp_of(stat),
                    )
                )
        return units


def parquet(
    paths: PathsLike,
    *,
    columns: Sequence[str] | None = None,
    filter: Any = None,
    partitioning: Literal["hive"] | None = "hive",
    batch_size: int = DEFAULT_BATCH_SIZE,
    split_size: int | None = None,
    dictionary_columns: Sequence[str] | None = None,
) -> ParquetSource:
    """Read Parquet files in the workers, some row groups per task.

    ```python
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    import aiomr
    from aiomr.sources import parquet


    def total(batch: pa.RecordBatch) -> int:
        return pc.sum(batch["count"]).as_py() or 0


    async def main() -> None:
        table = pa.table({"word": ["a", "b", "a"], "count": [1, 2, 3]})
        pq.write_table(table, "counts.parquet")
        source = parquet("counts.parquet", columns=["count"])
        print(await aiomr.map_reduce(source, total, lambda a, b: a + b, mode="batches"))  # 6


    if __name__ == "__main__":
        aiomr.run(main())
    ```

    The caller reads only the files' metadata and plans the splits; each worker reads its
    row groups itself, only the columns asked for, and hands the mapper their rows: as
    dicts (``mode="record"``, ``mode="chunk"``), or as record batches
    (``mode="batches"``, in the job's ``batch_format``: Arrow, Polars or pandas).

    Args:
        paths: a file, a glob (``data/*.parquet``, ``**`` recurses), a directory (a
            dataset: every file below it, hive partition columns included), or an iterable
            of these.
        columns: the columns to read (others are never read from disk); ``None``: all,
            partition columns included.
        filter: a ``pyarrow.compute.Expression`` rows must match, e.g.
            ``pc.field("year") >= 2000``. Row groups and partitions that cannot match are
            never read (statistics and partition values), and the rest are filtered as
            they are read.
        partitioning: ``"hive"`` (default): a directory's ``key=value`` folders give
            columns; ``None``: folders are only folders.
        batch_size: rows per record batch, at most.
        split_size: bytes on disk (compressed) per task, whole row groups of one file;
            ``None``: sized for the workers.
        dictionary_columns: string columns to hand over dictionary-encoded, as the file
            stores them (``pyarrow.DictionaryArray``), rather than decoded value by value:
            grouping by such a column hashes small integers (`aiomr.Aggregate` does).

    Requires pyarrow (``pip install 'aiomr[arrow]'``); without it this raises `ImportError`
    with that hint.
    """
    return ParquetSource(
        paths,
        columns=columns,
        filter=filter,
        partitioning=partitioning,
        batch_size=batch_size,
        split_size=split_size,
        dictionary_columns=dictionary_columns,
    )
