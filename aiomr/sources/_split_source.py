"""What a source that the workers read themselves provides: splits, a plan, a reader.

`SplitSource` is the base of `aiomr.sources.files` (`FileSource`) and of the database
range sources (`sqlite_ranges`, `postgres_ranges`): the caller plans the splits and sends
each one's coordinates, and every worker reads its split's records with the source's
reader. The protocols say what the job needs of each part; `SplitSource.worker_side` is how
such a source tells a job so (see `aiomr.sources._source`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from .._types import BatchFormat
from ._source import Source

__all__ = ["AnySplit", "SplitPlan", "SplitReading", "SplitSource"]


class AnySplit(Protocol):
    """One split of a `SplitSource`: what a task reads (a `Split` for files)."""

    @property
    def index(self) -> int:
        """Position among the source's splits, from 0."""
        ...

    @property
    def size(self) -> int:
        """Bytes it covers on disk, or 0 when that is not known."""
        ...

    def describe(self) -> str:
        """Name it for messages: ``split 3 (notes.txt bytes [0, 1048576))``."""
        ...


class SplitPlan(Protocol):
    """The splits of a `SplitSource` as they are cut (a `SplitCutter` for files)."""

    @property
    def total(self) -> int | None:
        """Bytes all splits cover together, or ``None`` when that is not known."""
        ...

    def cut(self, size: int) -> AnySplit | None:
        """The next split, of about ``size`` bytes where the source can choose; ``None`` at
        the end."""
        ...


class SplitReading(Protocol):
    """What reads a split's records in a worker (`SplitReader` for files)."""

    def line_blocks(self, split: Any) -> Iterator[list[Any]]:
        """The split's records, a list at a time."""
        ...

    def records(self, split: Any) -> Iterator[Any]:
        """The split's records one by one."""
        ...

    def blocks(self, split: Any) -> Iterator[Any]:
        """What ``mode="blocks"`` mappers get: raw bytes for files, lists of rows for tables."""
        ...

    def records_in_block(self, block: Any) -> int:
        """The records in one item of `blocks`."""
        ...

    def located_lines(self, split: Any) -> Iterator[tuple[Any, int, Any]]:
        """The split's raw records with a place and an offset there (to skip bad ones)."""
        ...

    def where(self, place: Any, offset: int) -> str:
        """Name a record that `located_lines` gave, for messages about it."""
        ...

    def decode_and_parse(self, raw: Any) -> Any:
        """Turn one raw record of `located_lines` into a record; raise if it is malformed."""
        ...


class SplitSource(Source):
    """A source the workers read themselves, one split per task (`files`, `sqlite_ranges`).

    The caller plans the splits and sends each one's coordinates (byte ranges of files,
    ranges of a column); the workers read the records with the source's ``reader``.
    Subclasses set ``reader`` and ``split_size`` and plan the splits in `cutter`.
    """

    reader: SplitReading
    """Picklable; reads a split's records in a worker."""
    split_size: int | None = None
    """Bytes per split, or ``None`` to let the job size them."""

    def batch_reader(self) -> Any:
        """What reads a split as record batches in a worker (a picklable object with a
        ``batches(split)`` method), for ``mode="batches"`` mappers; ``None`` (the default)
        when the source has no columns. Called in the caller; must not block.

        With ``on_error="skip"`` or ``"collect"`` the job calls ``batches(split, skipped)``
        instead: records that do not parse are left out and described in the list
        ``skipped`` (as `aiomr._worker.envelope.Skipped`); a reader of typed rows takes the
        argument and leaves it empty. Without ``on_error`` only ``batches(split)`` is
        called, so a reader that never skips needs nothing more."""
        return None

    def worker_side(self) -> SplitSource:
        """Return the source itself: its records are read by the workers, split by split."""
        return self

    def cutter(self, workers: int) -> tuple[SplitPlan, int]:
        """Plan the splits (blocking); return them and the largest split size in bytes for
        ``workers`` workers."""
        raise NotImplementedError

    def task_body(
        self,
        mode: str,
        mapper: Callable[[Any], Any],
        reducer: Callable[[Any, Any], Any],
        on_error: str,
        batch_format: BatchFormat = "arrow",
    ) -> Callable[[Any, int], Any]:
        """The body of the job's map tasks: reads a split in a worker and maps it.

        ``on_error`` other than ``"raise"`` reads records one by one and skips bad ones; in
        ``mode="blocks"`` only a source whose reader can check its blocks can do that.
        ``mode="batches"`` needs a source with a `batch_reader`, and hands the mapper each
        record batch in ``batch_format``; there ``on_error`` leaves out the records the
        reader cannot parse (a reader of typed files finds none).
        """
        from .._worker import bodies

        reader = self.reader
        if mode == "batches":
            batches = self.batch_reader()
            if batches is None:
                raise ValueError(
                    "mode='batches' needs a columnar source: aiomr.sources.parquet(...), or "
                    "aiomr.sources.files(..., format='tsv', 'csv' or 'jsonl'); "
                    f"this {type(self).__qualname__} gives records without columns"
                )
            skip_bad = on_error != "raise"
            return functools.partial(
                bodies.fold_split_batches, batches, mapper, reducer, batch_format, skip_bad
            )
        if on_error != "raise":
            if mode == "blocks":
                raise ValueError(
                    f"on_error={on_error!r} with mode='blocks' needs a source that checks "
                    "every line of a block before the mapper sees it: "
                    "aiomr.sources.files(..., format='tsv', fields=N)"
                )
            return functools.partial(bodies.fold_split_guarded, reader, mapper, reducer)
        if mode == "record":
            return functools.partial(bodies.fold_split_records, reader, mapper, reducer)
        if mode == "chunk":
            return functools.partial(bodies.fold_split_chunks, reader, mapper, reducer)
        return functools.partial(bodies.map_split_blocks, reader, mapper)
