"""What every reader of a columnar split shares: its rows as dicts for the record and chunk
modes, its batches for the blocks mode, and the check that a file is still the one planned.

A reader (`ParquetReader`, `IpcReader`) defines ``batches(split)`` and ``where``; the rest
of the `aiomr.sources._split_source.SplitReading` protocol comes from `BatchRows`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any, Protocol

from .._exceptions import BrokenInputError
from .._worker.blame import note_input
from .._worker.envelope import Skipped
from ..sources._segments import stamp_of

__all__ = ["BatchRows", "PlannedFile", "check_unchanged", "unreadable"]


class PlannedFile(Protocol):
    """A split of one file, with the file as the plan saw it."""

    @property
    def path(self) -> str: ...

    @property
    def file_size(self) -> int: ...

    @property
    def stamp(self) -> tuple[int, int, int] | None: ...

    def describe(self) -> str: ...


def check_unchanged(split: PlannedFile, parts: str) -> None:
    """Raise `aiomr.BrokenInputError` (noted as the input's) if the split's file is not the
    version planned: its ``parts`` (row groups, record batches) may be others now."""
    if split.stamp is None:
        return
    try:
        stat = os.stat(split.path)
    except OSError as exc:
        broken = BrokenInputError(f"{split.describe()} cannot be read: {exc}")
        note_input(broken)
        raise broken from exc
    if (stat.st_size, stamp_of(stat)) != (split.file_size, split.stamp):
        broken = BrokenInputError(
            f"{split.path}: changed after the job planned its {parts} "
            f"({split.file_size} bytes then, {stat.st_size} now, or a new modification time "
            f"or file): its {parts} may no longer be those planned"
        )
        note_input(broken)
        raise broken


def unreadable(split: PlannedFile, exc: Exception) -> BrokenInputError:
    """The input's error for a split pyarrow could not read (an IO error, invalid data),
    naming the split; noted as the input's, not the job code's."""
    broken = BrokenInputError(f"{split.describe()} cannot be read: {type(exc).__name__}: {exc}")
    note_input(broken)
    return broken


class BatchRows:
    """A split's rows, from its record batches (``self.batches(split)``), with the source's
    columns, filter and batch size."""

    def __init__(self, columns: list[str] | None, filter: Any, batch_size: int) -> None:
        self.columns = columns
        self.filter = filter
        self.batch_size = batch_size

    def batches(self, split: Any, skipped: list[Skipped] | None = None) -> Iterator[Any]:
        """The split's rows as ``pyarrow.RecordBatch`` es. Typed rows always parse, so
        ``skipped`` (where ``on_error`` collects records left out) stays empty."""
        raise NotImplementedError

    def line_blocks(self, split: Any) -> Iterator[list[dict[str, Any]]]:
        """The split's rows as dicts (column name to value), a batch at a time."""
        for batch in self.batches(split):
            yield batch.to_pylist()

    def records(self, split: Any) -> Iterator[dict[str, Any]]:
        """The split's rows one by one, as dicts."""
        return itertools.chain.from_iterable(self.line_blocks(split))

    def blocks(self, split: Any) -> Iterator[Any]:
        """What a ``mode="blocks"`` mapper gets: the split's ``pyarrow.RecordBatch`` es."""
        return self.batches(split)

    @staticmethod
    def records_in_block(block: Any) -> int:
        """The rows of one record batch."""
        return int(block.num_rows)

    def located_lines(self, split: Any) -> Iterator[tuple[Any, int, Any]]:
        """Each row (a dict) with its split and its position there, from 0."""
        for offset, row in enumerate(self.records(split)):
            yield split, offset, row

    @staticmethod
    def decode_and_parse(raw: Any) -> Any:
        """Rows come parsed: the row as it is."""
        return raw
