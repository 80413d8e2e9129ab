"""Read the records of a byte-range split in a worker: decode, cut into records, parse.

Every path names a bad record the same way, ``path:LINE (byte OFFSET)`` (see `_locate`):
the fast paths (`SplitReader.line_blocks`, `records`) raise `aiomr.RecordError` at the first
one; `located_lines` hands out every raw record with its place, for ``on_error="skip"``.
With a header, the first record of every file names the fields: a split that starts at the
top of a file reads it there, any other split reads the file's first record on its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from .._exceptions import RecordError
from ._decode import HeadedRecord, decode_error
from ._file_blocks import FileBlocks
from ._framing import Pending, first_record_end, located_records, split_records
from ._locate import SegmentLines, locate
from ._parse import Parser
from ._segments import BLOCK_SIZE, Segment, Split, open_segment, read_blocks

__all__ = ["SplitReader"]

Place = tuple[SegmentLines, int]
"""Where a record of `SplitReader.located_lines` is: its range, and its line there."""


class SplitReader:
    """Read the records of a split in a worker: decode, cut into records, parse."""

    def __init__(self, encoding: str | None, errors: str, parser: Parser | None) -> None:
        self.encoding = encoding
        self.errors = errors
        self.parser = parser
        self.quoted = parser is not None and parser.format == "csv"
        """Records are CSV records, which may span lines."""

    # -- the fast paths ------------------------------------------------------------------------

    def line_blocks(self, split: Split) -> Iterator[list[Any]]:
        """The split's records, one list per block of input (never an empty list)."""
        for segment in split.segments:
            yield from self._segment_records(segment)

    def records(self, split: Split) -> Iterator[Any]:
        """The split's records one by one.

        Chained in C: a generator's ``yield from`` costs some 35 ns more per record, a
        measurable share of a key-value job's time per line.
        """
        return itertools.chain.from_iterable(self.line_blocks(split))

    def _segment_records(self, segment: Segment) -> Iterator[list[Any]]:
        lines = SegmentLines(segment.path, segment.start)
        parse = self.parser
        at_top = parse is not None and parse.header and segment.start == 0
        if parse is not None and parse.header and segment.start and parse.names is None:
            parse = self.header_parser(segment)
        line = 0  # lines of the segment before the block
        for block, _, offset in read_blocks(Split(0, (segment,)), BLOCK_SIZE, self.quoted):
            body = block[:-1] if block.endswith(b"\n") else block
            text, bad = self._decoded(body, lines, line, offset)
            if bad is not None:  # the records before the bad one may hold an earlier error
                error, at = bad
                body = body[: at - 1]
                if not at:
                    raise error
                text, _ = self._decoded(body, lines, line, offset)
            records, starts = split_records(text, self.quoted)
            count = len(records) if starts is None else body.count(b"\n") + 1
            skip = 0
            if at_top:  # the file's header: checked, then left out
                at_top, skip = False, 1
                parse = self.bind_header(records[0], lines, offset)
                del records[0]
            if parse is not None:
                try:
                    records = parse.parse_many(records)
                except RecordError as exc:
                    index = (exc.index or 0) + skip
                    number = starts[index] if starts is not None else index
                    at = offset + _line_start(body, number)
                    raise locate(exc, lines.where(line + number, at)) from exc
            if bad is not None:
                if records:
                    yield records
                raise bad[0]
            line += count
            if records:
                yield records

    def decode(self, body: bytes, lines: SegmentLines, line: int, offset: int) -> Any:
        """Decode ``body`` (records from ``line`` of a range, at ``offset``); bytes as they
        are without an encoding. A byte that does not decode raises `aiomr.RecordError`."""
        text, bad = self._decoded(body, lines, line, offset)
        if bad is not None:
            raise bad[0]
        return text

    def _decoded(
        self, body: bytes, lines: SegmentLines, line: int, offset: int
    ) -> tuple[Any, tuple[RecordError, int] | None]:
        """``body`` decoded; or, if a byte does not decode, the error, named by the record
        that holds the byte (as when records are decoded one by one), and where in ``body``
        that record starts."""
        if self.encoding is None:
            return body, None
        try:
            return body.decode(self.encoding, self.errors), None
        except UnicodeDecodeError as exc:
            number, at, _ = [r for r in located_records(body, self.quoted) if r[1] <= exc.start][-1]
            where = lines.where(line + number, offset + at)
            error = locate(decode_error(exc, self.encoding), where)
            error.__cause__ = exc
            return None, (error, at)

    def bind_header(self, record: Any, lines: SegmentLines, offset: int) -> Parser:
        """The parser for a file whose header is ``record`` (line 0 of the range)."""
        assert self.parser is not None
        try:
            return self.parser.with_names(self.parser.read_header(record))
        except RecordError as exc:
            raise locate(exc, lines.where(0, offset)) from exc

    def header_parser(self, segment: Segment) -> Parser:
        """The parser for ``segment``'s file, bound to its header, read from the file's top."""
        with open_segment(segment) as f:
            pending = Pending(self.quoted)
            record = b""
            while data := f.read(BLOCK_SIZE):
                record = pending.push(data)
                if record:
                    break
            else:
                record = pending.drain()
        end = first_record_end(record, self.quoted)
        body = record[: end - 1] if end else record
        lines = SegmentLines(segment.path, 0)
        text = self.decode(body, lines, 0, 0)
        (first,), _ = split_records(text, self.quoted)
        return self.bind_header(first, lines, 0)

    # -- record by record, for on_error="skip" -------------------------------------------------

    def located_lines(self, split: Split) -> Iterator[tuple[Place, int, Any]]:
        """The split's raw records, each with its place and byte offset (to skip bad ones).

        Records of a file with a header come as `HeadedRecord` (the names, the bytes).
        """
        parser = self.parser
        has_header = parser is not None and parser.header
        # Records carry their file's names when only the file's header says them.
        headed = has_header and parser is not None and parser.names is None
        for segment in split.segments:
            lines = SegmentLines(segment.path, segment.start)
            names: tuple[Any, ...] | None = None
            if headed and segment.start:
                names = self.header_parser(segment).names
            at_top = has_header and segment.start == 0
            line = 0
            blocks = read_blocks(Split(0, (segment,)), BLOCK_SIZE, self.quoted)
            for block, _, offset in blocks:
                body = block[:-1] if block.endswith(b"\n") else block
                for number, at, raw in located_records(body, self.quoted):
                    if at_top:  # the file's header: checked, then left out
                        at_top = False
                        text = self.decode(raw, lines, line + number, offset + at)
                        names = self.bind_header(text, lines, offset + at).names
                        continue
                    place = (lines, line + number)
                    yield place, offset + at, HeadedRecord(names, raw) if names and headed else raw
                line += body.count(b"\n") + 1

    @staticmethod
    def where(place: Place, offset: int) -> str:
        """Name a record that `located_lines` gave: ``path:LINE (byte OFFSET)``."""
        lines, line = place
        return lines.where(line, offset)

    def decode_and_parse(self, raw: Any) -> Any:
        """Turn one raw record into a record: decode, then parse; raise on malformed input."""
        names = None
        if type(raw) is HeadedRecord:
            names, raw = raw
        text = raw
        if self.encoding is not None:
            try:
                text = raw.decode(self.encoding, self.errors)
            except UnicodeDecodeError as exc:
                raise decode_error(exc, self.encoding) from exc
        parser = self.parser
        if parser is None:
            return text
        if names is not None:
            parser = parser.with_names(names)
        return parser.parse_many([text])[0]

    # -- raw blocks ----------------------------------------------------------------------------

    def blocks(self, split: Split) -> FileBlocks:
        """The split's raw bytes, in blocks of whole lines, checked (see `FileBlocks`)."""
        return FileBlocks(self, split, skip=False)

    @staticmethod
    def records_in_block(block: bytes) -> int:
        """The lines in one of the raw blocks that `blocks` gives."""
        return block.count(b"\n") + (not block.endswith(b"\n"))


def _line_start(body: bytes, n: int) -> int:
    """The offset in ``body`` where its line ``n`` (from 0) starts."""
    position = 0
    for _ in range(n):
        position = body.index(b"\n", position) + 1
    return position
