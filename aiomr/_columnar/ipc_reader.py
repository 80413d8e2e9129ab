"""One split of an Arrow IPC (Feather) source, and its reading in a worker.

A file in the IPC *file* format (Feather v2, ``.arrow``, ``.feather``) has a footer listing
its record batches, so a split is a range of them: the worker memory-maps the file and takes
those batches without copying (uncompressed files) or decompresses just them. A file in the
IPC *stream* format (``.arrows``) can only be read from the top: it is one split.

The source's columns and filter are applied in the worker, batch by batch; batches longer
than ``batch_size`` rows are handed over in slices (zero-copy).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .._worker.envelope import Skipped
from .batch_rows import BatchRows, check_unchanged, unreadable
from .imports import require

__all__ = ["IpcReader", "IpcSplit"]


@dataclass(frozen=True, slots=True)
class IpcSplit:
    """Some record batches of one Arrow IPC file, or a whole stream: what one task reads."""

    index: int
    """Position among the source's splits, from 0."""
    path: str
    first: int
    """The first record batch, from 0."""
    stop: int | None
    """One past the last record batch; ``None`` for a stream, read whole."""
    size: int
    """Bytes of the file these batches make up, about (batches are not measured when planned)."""
    file_size: int = -1
    stamp: tuple[int, int, int] | None = None

    def describe(self) -> str:
        """Name it for messages: ``split 3 (data.arrow record batches [4, 8))``."""
        if self.stop is None:
            return f"split {self.index} ({self.path}, a stream)"
        if self.stop - self.first == 1:
            return f"split {self.index} ({self.path} record batch {self.first})"
        return f"split {self.index} ({self.path} record batches [{self.first}, {self.stop}))"


class IpcReader(BatchRows):
    """Read an `IpcSplit`'s rows in a worker (see `aiomr.sources.SplitSource`)."""

    def batches(self, split: IpcSplit, skipped: list[Skipped] | None = None) -> Iterator[Any]:
        """The split's rows as ``pyarrow.RecordBatch`` es of 1 to ``batch_size`` rows; an
        error while reading is noted as the input's and names the split. Typed rows always
        parse: ``skipped`` (``on_error``) stays empty."""
        check_unchanged(split, "record batches")
        pa = require("pyarrow", "aiomr.sources.arrow")
        ipc = require("pyarrow.ipc", "aiomr.sources.arrow")
        try:
            with pa.memory_map(split.path) as source:
                if split.stop is None:
                    read: Iterator[Any] = iter(ipc.open_stream(source))
                else:
                    reader = ipc.open_file(source)
                    read = (reader.get_batch(i) for i in range(split.first, split.stop))
                for batch in read:
                    yield from self._shaped(batch)
        except (OSError, ValueError) as exc:  # pyarrow's IO and invalid-data errors
            raise unreadable(split, exc) from exc

    def _shaped(self, batch: Any) -> Iterator[Any]:
        """``batch`` with the source's columns and filter, in slices of ``batch_size``."""
        if self.filter is not None:
            pa = require("pyarrow", "aiomr.sources.arrow")
            table = pa.Table.from_batches([batch]).filter(self.filter)
            if self.columns is not None:
                table = table.select(self.columns)
            pieces = table.to_batches()
        else:
            pieces = [batch.select(self.columns) if self.columns is not None else batch]
        for piece in pieces:
            for start in range(0, piece.num_rows, self.batch_size):
                yield piece.slice(start, self.batch_size)

    def where(self, place: IpcSplit, offset: int) -> str:
        """Name a row: ``row 12 of split 3 (data.arrow record batches [4, 8))``."""
        filtered = "the filtered " if self.filter is not None else ""
        return f"row {offset} of {filtered}{place.describe()}"
