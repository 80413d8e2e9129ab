"""Key-based jobs, worker side: the map and reduce task bodies.

These run in the workers. They live apart from the caller's side (`aiomr._keyed.phases`) so that a
worker unpickling them imports only what it runs (the shuffle, the split reader), never the
event loop, the dispatcher or the database drivers: a worker then starts in a fraction of
the time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .._types import BatchFormat
from .._worker.blame import reading, shift_record
from .._worker.bodies import RecordParser, close_reading, parse_records
from .._worker.envelope import Counted, Skipped
from .combine import Guard
from .shuffle import MapOutput, ReduceOutput, ReducePlan, map_keyed, reduce_partition

if TYPE_CHECKING:
    from ..sources._split_source import SplitReading

__all__ = ["CoroutineMapBody", "MapBody", "ReduceBody"]


class ReduceBody:
    """The reduce task body: reduce one partition of every map output file."""

    def __init__(self, plan: ReducePlan) -> None:
        self.plan = plan

    def __call__(self, sections: list[tuple[str, int]], partition: int) -> ReduceOutput:
        return reduce_partition(self.plan, sections, partition)


class MapBody:
    """The map task body of a key-based job; a class so its repr names the job's mapper.

    With a ``reader`` (a source the workers read: files, SQLite ranges) each task's one record
    is a split, read here; with a ``parser`` (lines streamed by the caller) the raw lines are
    decoded and parsed here. ``guarded``: leave bad records out instead of failing the task.
    """

    def __init__(
        self,
        plan: ReducePlan,
        *,
        reader: SplitReading | None = None,
        parser: RecordParser | None = None,
        guarded: bool = False,
        batches: Any = None,
        batch_format: BatchFormat = "arrow",
    ) -> None:
        self.plan = plan
        self.reader = reader
        self.parser = parser
        self.guarded = guarded
        self.batches = batches
        """With ``mode="batches"``: the source's batch reader; the mapper sees batches."""
        self.batch_format = batch_format

    def __call__(self, records: list[Any], start: int) -> Any:
        if self.batches is not None:
            return self._batches(records[0])
        if self.guarded:
            return self._skipping(records, start)
        if self.reader is not None:
            lines = self.reader.line_blocks(records[0])
            try:
                outputs, count = map_keyed(self.plan, reading(lines), 0)
            finally:
                close_reading(lines)
            return Counted(outputs, count)
        if self.parser is not None:
            records = parse_records(self.parser, records)
        return _map_chunk(self.plan, records, start)[0]

    def _batches(self, split: Any) -> Counted:
        """``mode="batches"``: the mapper yields pairs for each record batch of the split;
        rows that do not parse are left out under ``guarded`` (``on_error``)."""
        from .._columnar.formats import converter

        convert = converter(self.batch_format)
        skipped: list[Skipped] = []
        read = self.batches.batches(split, skipped) if self.guarded else self.batches.batches(split)
        rows = 0

        def converted() -> Iterator[Any]:
            nonlocal rows
            for batch in read:
                rows += int(batch.num_rows)
                yield convert(batch)

        try:
            # One batch per block: an error is then named by the batch's position.
            outputs, _ = map_keyed(self.plan, ([batch] for batch in converted()), 0)
        finally:
            close_reading(read)
        return Counted(outputs, rows + len(skipped), tuple(skipped))

    def _skipping(self, records: list[Any], start: int) -> Counted:
        """``on_error="skip"``/``"collect"``: map record by record, leaving bad ones out."""
        if self.reader is None:
            guard = Guard(self.parser)
            outputs, count = _map_chunk(self.plan, records, start, guard)
            return Counted(outputs, count, tuple(guard.skipped))
        reader = self.reader
        lines = list(reading(reader.located_lines(records[0])))

        def where(index: int, raw: Any) -> str:
            place, offset, _ = lines[index]
            return reader.where(place, offset)

        guard = Guard(reader.decode_and_parse, where)
        outputs, count = map_keyed(self.plan, ([line for _, _, line in lines],), 0, guard)
        return Counted(outputs, count, tuple(guard.skipped))

    def __repr__(self) -> str:
        return f"<map task of {self.plan.spec.mapper!r}>"


def _map_chunk(
    plan: ReducePlan, records: list[Any], start: int, guard: Guard | None = None
) -> tuple[list[MapOutput], int]:
    """`map_keyed` over a chunk's records, which it counts from ``start``, the chunk's
    position in the source; an error notes the record's index in the chunk
    (`aiomr._worker.blame`)."""
    try:
        return map_keyed(plan, (records,), start, guard)
    except Exception as exc:
        shift_record(exc, -start)
        raise


class _Replay:
    """A key-based job's mapper replaying what its coroutines gave, record after record:
    the pairs, or the exception, so that the job's code blames or skips the record as it
    would a plain mapper's."""

    def __init__(self, found: list[tuple[bool, Any]]) -> None:
        self._found = iter(found)

    def __call__(self, record: Any) -> Any:
        ok, value = next(self._found)
        if not ok:
            raise value
        return value


class CoroutineMapBody:
    """The map task body of a key-based job whose mapper is an ``async def`` function (or
    an async generator): every record's coroutine runs first, concurrently (``pairs``, a
    `CoroutineTask` of `aiomr._worker.coroutines.pairs_of_records`), then the chunk is
    combined and written as a plain mapper's would be, from their pairs. `here` is the same
    body on the caller's loop (inline)."""

    def __init__(self, plan: ReducePlan, pairs: Any, *, guarded: bool) -> None:
        self.plan = plan
        self.pairs = pairs
        self.guarded = guarded

    def __call__(self, records: list[Any], start: int) -> Any:
        return self._combined(self.pairs(records, start), records, start)

    async def here(self, records: list[Any], start: int) -> Any:
        return self._combined(await self.pairs.here(records, start), records, start)

    def _combined(self, found: list[tuple[bool, Any]], records: list[Any], start: int) -> Any:
        spec = dataclasses.replace(self.plan.spec, mapper=_Replay(found))
        plan = dataclasses.replace(self.plan, spec=spec)
        if self.guarded:
            guard = Guard(None)
            outputs, count = _map_chunk(plan, records, start, guard)
            return Counted(outputs, count, tuple(guard.skipped))
        return _map_chunk(plan, records, start)[0]
