"""One split of a Parquet source, and its reading in a worker.

A split is some row groups of one file. The caller sends it as a `ParquetSplit`: the path,
the row group numbers, and a pyarrow fragment viewing just them (a fragment pickles as its
path, its row groups and its partition values, never as data). The worker scans the
fragment with the source's columns and filter: pyarrow reads only those columns' pages,
skips the row groups whose statistics rule the filter out, and yields record batches of at
most ``batch_size`` rows, on the worker's one thread (the job's parallelism is its workers).

Errors while reading (a damaged file, a file changed since it was planned) are the input's,
not the job code's: `aiomr.BrokenInputError`, naming the file and row groups.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .._worker.envelope import Skipped
from .batch_rows import BatchRows, check_unchanged, unreadable

__all__ = ["ParquetReader", "ParquetSplit"]


def _ranges(numbers: Sequence[int]) -> str:
    """``[0, 3)`` for 0, 1, 2; ``[0, 2), 5`` for 0, 1, 5: half-open runs, single numbers."""
    parts = []
    for _, run in itertools.groupby(enumerate(numbers), lambda item: item[1] - item[0]):
        values = [number for _, number in run]
        parts.append(str(values[0]) if len(values) == 1 else f"[{values[0]}, {values[-1] + 1})")
    return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class ParquetSplit:
    """Some row groups of one Parquet file: what one task of a Parquet source reads."""

    index: int
    """Position among the source's splits, from 0."""
    path: str
    row_groups: tuple[int, ...]
    """The row groups' numbers in the file, from 0, ascending."""
    first_row: int | None
    """The file's row number of the first row of the first row group, when the row groups
    are consecutive (rows of a filtered scan are named relative to the split otherwise)."""
    rows: int
    """Rows in these row groups, before any filter."""
    size: int
    """Bytes on disk of these row groups' column chunks (compressed)."""
    fragment: Any
    """A ``pyarrow.dataset.ParquetFileFragment`` viewing exactly these row groups."""
    schema: Any
    """The dataset's schema: the file's columns and any hive partition columns."""
    file_size: int = -1
    stamp: tuple[int, int, int] | None = None
    """The file as planned: its size and `aiomr.sources._segments.stamp_of` (the row group
    numbers mean nothing in another version of the file)."""

    def describe(self) -> str:
        """Name it for messages: ``split 3 (data.parquet row groups [4, 6))``."""
        groups = self.row_groups
        named = f"row group {groups[0]}" if len(groups) == 1 else f"row groups {_ranges(groups)}"
        return f"split {self.index} ({self.path} {named})"


class ParquetReader(BatchRows):
    """Read a `ParquetSplit`'s rows in a worker (see `aiomr.sources.SplitSource`).

    ``columns`` and ``filter`` (a ``pyarrow.compute.Expression``) are the source's; they
    travel once per job with the reader.
    """

    def batches(self, split: ParquetSplit, skipped: list[Skipped] | None = None) -> Iterator[Any]:
        """The split's rows as ``pyarrow.RecordBatch`` es of 1 to ``batch_size`` rows; an
        error while reading is noted as the input's and names the split. Typed rows always
        parse: ``skipped`` (``on_error``) stays empty."""
        check_unchanged(split, "row groups")
        try:
            scan = split.fragment.to_batches(
                schema=split.schema,
                columns=self.columns,
                filter=self.filter,
                batch_size=self.batch_size,
                use_threads=False,
            )
            for batch in scan:
                if batch.num_rows:  # a mapper never sees an empty batch
                    yield batch
        except (OSError, ValueError) as exc:  # pyarrow's IO and invalid-data errors
            raise unreadable(split, exc) from exc

    def where(self, place: ParquetSplit, offset: int) -> str:
        """Name a row: ``data.parquet: row 1234`` (its row in the file) when the file's rows
        are known; with a filter, ``row 12 of the filtered split 3 (...)``."""
        if self.filter is None and place.first_row is not None:
            return f"{place.path}: row {place.first_row + offset}"
        return f"row {offset} of the filtered {place.describe()}"
