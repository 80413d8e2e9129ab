"""Task bodies: what a map task does with its chunk or split, in a worker.

A body takes the task's payload (a chunk of records the caller sent, or the coordinates of a
split the worker reads itself) and the position of its first record in the source, and
returns the task's partial, or a `Counted` when it counts what it read itself. It runs inside
`aiomr._worker.run.execute`, which times it and captures what it raises; a body that fails at
a record notes which (`aiomr._worker.blame`). Each job picks one body by mode (``record``,
``chunk``, ``blocks``), by ``on_error``, and by whether its source is read in the workers;
the job's code is bound to it with `functools.partial`.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

from .._exceptions import RecordError
from .._types import BatchFormat
from .blame import note_input, note_record, reading
from .envelope import EMPTY, Counted, Skipped

__all__ = [
    "RecordParser",
    "close_reading",
    "fold_guarded",
    "fold_parsed",
    "fold_records",
    "fold_split_batches",
    "fold_split_chunks",
    "fold_split_guarded",
    "fold_split_records",
    "guarded_fold",
    "map_chunk",
    "map_parsed_chunk",
    "map_split_blocks",
    "parse_records",
]


def guarded_fold(
    mapper: Callable[[Any], Any],
    reducer: Callable[[Any, Any], Any],
    parser: Callable[[Any], Any] | None,
    records: Iterable[Any],
    where: Callable[[int, Any], str] | None = None,
) -> Counted:
    """Record mode with ``on_error`` other than ``"raise"``: skip the records that fail.

    A record whose parsing or mapping raises is left out and reported (index, a short repr,
    the error); the reducer's own errors still fail the task, as they are not about one
    record. Slower than `fold_records` by a ``try`` per record.
    """
    acc: Any = EMPTY
    skipped: list[Skipped] = []
    count = 0
    for index, raw in enumerate(records):
        count += 1
        try:
            value = mapper(parser(raw) if parser is not None else raw)
        except Exception as exc:
            skipped.append(Skipped.of(index, raw, exc, where))
            continue
        try:
            acc = value if acc is EMPTY else reducer(acc, value)
        except Exception as exc:
            note_record(exc, index)
            raise
    return Counted(acc, count, tuple(skipped))


class _Tally:
    """Count the records behind the items an iterator yields, at one generator frame's cost.

    ``weight`` says how many records one item stands for (a block of lines, raw bytes);
    without it each item is one record, counted by ``enumerate`` (no call per item).
    """

    def __init__(self, weight: Callable[[Any], int] | None = None) -> None:
        self.n = 0
        self._weight = weight

    def wrap(self, items: Iterable[Any]) -> Iterator[Any]:
        weight = self._weight
        try:
            if weight is None:
                for self.n, item in enumerate(items, 1):
                    yield item
                return
            for item in items:
                self.n += weight(item)
                yield item
        except Exception as exc:  # reading the input failed: the error names its place
            note_input(exc)
            raise


def _fold_values(
    values: Iterator[Any], reducer: Callable[[Any, Any], Any], tally: _Tally
) -> Counted:
    """Fold mapped values into one partial; `EMPTY` when the split held no record."""
    first = next(values, EMPTY)
    if first is EMPTY:
        return Counted(EMPTY, 0)
    return Counted(functools.reduce(reducer, values, first), tally.n)


class RecordParser(Protocol):
    """What turns the raw records a source sends into records (`aiomr.sources.lines`)."""

    def __call__(self, raw: Any, /) -> Any:
        """Parse one record; raise `RecordError` if it is malformed."""
        ...

    def parse_many(self, raws: list[Any], /) -> list[Any]:
        """Parse a chunk; a malformed record raises `RecordError` carrying its ``index``."""
        ...


def parse_records(parser: RecordParser, records: list[Any]) -> list[Any]:
    """Parse every record of a chunk; a malformed one raises `RecordError` noting its index
    (`aiomr._worker.blame`), so the caller can name its file and line."""
    try:
        return parser.parse_many(records)
    except RecordError as exc:
        if exc.index is not None:
            note_record(exc, exc.index)
        raise


def fold_parsed(
    parser: RecordParser,
    mapper: Callable[[Any], Any],
    reducer: Callable[[Any, Any], Any],
    records: list[Any],
    start: int,
) -> Any:
    """Record mode over lines the caller streamed: parse here, in the worker, then fold."""
    return fold_records(mapper, reducer, parse_records(parser, records), start)


def map_parsed_chunk(
    parser: RecordParser, mapper: Callable[[list[Any]], Any], records: list[Any], start: int
) -> Any:
    """Chunk mode over streamed lines: parse here, then map the whole chunk."""
    return mapper(parse_records(parser, records))


def fold_split_records(
    reader: Any,
    mapper: Callable[[Any], Any],
    reducer: Callable[[Any, Any], Any],
    splits: list[Any],
    start: int,
) -> Counted:
    """Record mode over a byte-range split: read, decode, parse and fold it here.

    The records are the reader's blocks chained in C; the blocks' generator is closed in
    ``finally``, so a split whose mapper fails leaves no file or cursor open behind it.
    """
    tally = _Tally()
    blocks = reader.line_blocks(splits[0])
    try:
        records = itertools.chain.from_iterable(blocks)
        return _fold_values(map(mapper, tally.wrap(records)), reducer, tally)
    except Exception as exc:  # at the last record handed out, unless reading failed
        note_record(exc, tally.n - 1)
        raise
    finally:
        close_reading(blocks)


def fold_split_chunks(
    reader: Any,
    mapper: Callable[[list[Any]], Any],
    reducer: Callable[[Any, Any], Any],
    splits: list[Any],
    start: int,
) -> Counted:
    """Chunk mode over a split: the mapper sees one block's records at a time."""
    tally = _Tally(len)
    blocks = reader.line_blocks(splits[0])
    try:
        return _fold_values(map(mapper, tally.wrap(blocks)), reducer, tally)
    finally:
        close_reading(blocks)


@runtime_checkable
class FinishesSplits(Protocol):
    """A batch job's reducer that turns a split's folded value into what leaves the worker
    (`aiomr.aggregate`'s writes the states of a split that outgrew its budget to disk, so
    that only their paths travel to the caller)."""

    def finish_split(self, value: Any) -> Any: ...


def fold_split_batches(
    reader: Any,
    mapper: Callable[[Any], Any],
    reducer: Callable[[Any, Any], Any],
    batch_format: BatchFormat,
    skip_bad: bool,
    splits: list[Any],
    start: int,
) -> Counted:
    """Batches mode over a columnar split: the mapper sees one record batch at a time, in
    ``batch_format``, and its partials are folded here.

    A failing mapper is named with the rows of the batch it was given (half-open, counted
    from the split's first row), after the rows that went before. With ``skip_bad``
    (``on_error="skip"`` or ``"collect"``), records the reader cannot parse are left out of
    the batches and reported; the mapper's own errors still fail the task, as a batch's
    rows stand or fall together.
    """
    from .._columnar.formats import converter

    convert = converter(batch_format)
    skipped: list[Skipped] | None = [] if skip_bad else None
    batches = reader.batches(splits[0], skipped) if skip_bad else reader.batches(splits[0])
    rows = 0
    acc: Any = EMPTY
    try:
        for batch in batches:
            size = int(batch.num_rows)
            try:
                value = mapper(convert(batch))
                acc = value if acc is EMPTY else reducer(acc, value)
            except Exception as exc:
                exc.add_note(
                    f"aiomr: in the batch of rows [{rows}, {rows + size}) of {splits[0].describe()}"
                )
                raise
            rows += size
    finally:
        close_reading(batches)
    if acc is not EMPTY and isinstance(reducer, FinishesSplits):
        acc = reducer.finish_split(acc)
    found = tuple(skipped or ())
    return Counted(acc, rows + len(found), found)


def map_split_blocks(
    reader: Any, mapper: Callable[[Iterator[bytes]], Any], splits: list[Any], start: int
) -> Any:
    """Blocks mode: the mapper consumes the split's raw blocks itself.

    Lines are counted for the job's statistics with one ``bytes.count`` per block (C speed,
    about 1% of a tight counting loop).
    """
    tally = _Tally(reader.records_in_block)
    blocks = reader.blocks(splits[0])
    try:
        value = mapper(tally.wrap(blocks))
    finally:
        close_reading(blocks)
    return Counted(value, tally.n)


def close_reading(items: object) -> None:
    """Close what a task read its input from (a generator holding a file or a database
    cursor), if it can be closed.

    An exception keeps the frames it passed through, and with them a half-read generator,
    for as long as the exception lives: in the caller, for threads and inline execution,
    that may be long. Closing in ``finally`` releases the input when the task ends.
    """
    close = getattr(items, "close", None)
    if close is not None:
        close()


def fold_records(
    mapper: Callable[[Any], Any],
    reducer: Callable[[Any, Any], Any],
    records: list[Any],
    start: int,
) -> Any:
    """Map every record of a chunk and fold the values into one partial, in order.

    Nothing is counted per record: on failure, what the list's iterator has left says which
    record the mapper or the reducer was on (the last one handed out).
    """
    rest = iter(records)
    try:
        return functools.reduce(reducer, map(mapper, rest))
    except Exception as exc:
        note_record(exc, len(records) - operator.length_hint(rest) - 1)
        raise


def map_chunk(mapper: Callable[[list[Any]], Any], records: list[Any], start: int) -> Any:
    """Chunk mode: the mapper turns the whole chunk into one partial."""
    return mapper(records)


def fold_guarded(
    mapper: Callable[[Any], Any],
    reducer: Callable[[Any, Any], Any],
    parser: Callable[[Any], Any] | None,
    records: list[Any],
    start: int,
) -> Counted:
    """Record mode over records the caller sent, skipping bad ones."""
    return guarded_fold(mapper, reducer, parser, records)


def fold_split_guarded(
    reader: Any,
    mapper: Callable[[Any], Any],
    reducer: Callable[[Any, Any], Any],
    splits: list[Any],
    start: int,
) -> Counted:
    """Record mode over a split, skipping bad records; the reader says where each one is."""
    lines = list(reading(reader.located_lines(splits[0])))

    def where(index: int, raw: Any) -> str:
        place, offset, _ = lines[index]
        return str(reader.where(place, offset))

    return guarded_fold(
        mapper, reducer, reader.decode_and_parse, (line for _, _, line in lines), where
    )
