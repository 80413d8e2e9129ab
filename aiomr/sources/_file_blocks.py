"""Raw blocks for ``mode="blocks"`` mappers, checked in the worker before the mapper sees them.

A ``mode="blocks"`` mapper reads bytes with its own tight loop, and a tight loop trusts its
input: a row with one field too few shifts every field after it. With
``files(..., format="tsv", fields=N)`` (or a header, which gives N) each block is checked
first, at C speed: deleting every byte but tabs and newlines (`bytes.translate`) must leave
exactly ``"\\t" * (N - 1) + "\\n"`` once per line, an exact test that costs a few percent of
the loops it protects and gives the block's line count on the way. Only a block that fails
is read line by line, to name its first bad line (`aiomr.RecordError`, ``path:LINE (byte
OFFSET)``) or, with ``on_error="skip"``/``"collect"``, to hand the mapper the runs of good
lines around the bad ones and report those as skipped.

A mapper that finds a bad line itself raises ``RecordError(message, offset=...)`` with the
line's offset in its block; `FileBlocks.locate` names it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

from .._exceptions import RecordError
from .._worker.envelope import Counted, Skipped, short_repr
from ._locate import SegmentLines, locate
from ._segments import BLOCK_SIZE, Segment, Split, read_blocks

if TYPE_CHECKING:
    from ._split_reader import SplitReader

__all__ = ["FieldCheck", "FileBlocks", "map_file_blocks"]

_ALL_BUT_SEPARATORS = bytes(b for b in range(256) if b not in (9, 10))


class FieldCheck:
    """Check that every line of a block has ``fields`` tab-separated fields."""

    __slots__ = ("_line", "fields")

    def __init__(self, fields: int) -> None:
        self.fields = fields
        self._line = b"\t" * (fields - 1) + b"\n"

    def lines(self, block: bytes) -> int:
        """The block's line count when every line has the fields, else -1 (C speed)."""
        separators = block.translate(None, _ALL_BUT_SEPARATORS)
        if not block.endswith(b"\n"):
            separators += b"\n"
        count = len(separators) // len(self._line)
        return count if separators == self._line * count else -1

    def bad_lines(self, block: bytes) -> Iterator[tuple[int, int, bytes, int]]:
        """Each line without the fields: ``(line in the block, offset, line, fields found)``."""
        position = 0
        body = block[:-1] if block.endswith(b"\n") else block
        for number, line in enumerate(body.split(b"\n")):
            found = line.count(b"\t") + 1
            if found != self.fields:
                yield number, position, line, found
            position += len(line) + 1


class FileBlocks:
    """The raw blocks of a split, for a ``mode="blocks"`` mapper: an iterator of ``bytes``.

    Every block ends at a line end (the last one of a file may lack its newline). When the
    source has ``format="tsv"``, every line has been checked (see the module docstring).
    """

    def __init__(self, reader: SplitReader, split: Split, *, skip: bool) -> None:
        self._reader = reader
        self._split = split
        self._skip = skip
        parser = reader.parser
        self.tsv_fields: int | None = parser.fields if parser is not None else None
        """When set, every line of every block has exactly this many tab-separated fields."""
        self.records = 0
        """Lines handed out so far."""
        self.skipped: list[Skipped] = []
        """Lines left out as bad (with ``skip``)."""
        self.exhausted = False
        """Whether every block of the split was handed out."""
        self.bytes_read = 0
        """Bytes of input read so far (decompressed, for compressed files)."""
        self._where: tuple[SegmentLines, int, int] | None = None
        self._last = b""
        self._blocks = self._generate()

    def __iter__(self) -> FileBlocks:
        return self

    def __next__(self) -> bytes:
        return next(self._blocks)

    def close(self) -> None:
        """Close the file being read, if any; hand out nothing more. Idempotent."""
        self._blocks.close()

    def locate(self, offset: int) -> str | None:
        """Name the line at byte ``offset`` of the last block handed out (``None`` before
        the first)."""
        if self._where is None:
            return None
        lines, line, start = self._where
        block = self._last
        number = block.count(b"\n", 0, offset)
        at = block.rfind(b"\n", 0, offset) + 1
        return lines.where(line + number, start + at)

    def _generate(self) -> Generator[bytes, None, None]:
        for segment in self._split.segments:
            yield from self._segment_blocks(segment)
        self.exhausted = True

    def _segment_blocks(self, segment: Segment) -> Iterator[bytes]:
        reader = self._reader
        parser = reader.parser
        lines = SegmentLines(segment.path, segment.start)
        fields = self.tsv_fields
        at_top = parser is not None and parser.header and segment.start == 0
        if parser is not None and parser.header and segment.start and fields is None:
            fields = reader.header_parser(segment).fields
        check = FieldCheck(fields) if fields is not None else None
        line = 0
        for block, _, offset in read_blocks(Split(0, (segment,)), BLOCK_SIZE):
            self.bytes_read += len(block)
            if at_top:  # the file's header: checked, then cut off
                at_top = False
                end = block.find(b"\n") + 1 or len(block)
                header = block[:end].removesuffix(b"\n").removesuffix(b"\r")
                text = reader.decode(header, lines, 0, offset)
                fields = reader.bind_header(text, lines, offset).fields
                check = FieldCheck(fields) if fields is not None else None
                block, offset, line = block[end:], offset + end, 1
                if not block:
                    continue
            count = check.lines(block) if check is not None else self._count(block)
            if count >= 0:
                self._where, self._last = (lines, line, offset), block
                self.records += count
                yield block
            else:
                assert check is not None
                yield from self._good_runs(block, check, lines, line, offset)
                count = self._count(block)
            line += count

    @staticmethod
    def _count(block: bytes) -> int:
        return block.count(b"\n") + (not block.endswith(b"\n"))

    def _good_runs(
        self, block: bytes, check: FieldCheck, lines: SegmentLines, line: int, offset: int
    ) -> Iterator[bytes]:
        """A block with bad lines: raise at the first, or hand out the runs between them."""
        start = 0  # offset in the block where the current run of good lines starts
        first = 0  # its line in the block
        for number, at, raw, found in check.bad_lines(block):
            error = RecordError(f"expected {check.fields} fields, found {found}")
            where = lines.where(line + number, offset + at)
            if not self._skip:
                raise locate(error, where)
            if at > start:
                yield from self._run(block[start:at], lines, line + first, offset + start)
            self.skipped.append(
                Skipped(self.records, short_repr(raw), f"RecordError: {error}", where)
            )
            start = block.find(b"\n", at) + 1 or len(block)
            first = number + 1
        if start < len(block):
            yield from self._run(block[start:], lines, line + first, offset + start)

    def _run(self, run: bytes, lines: SegmentLines, line: int, offset: int) -> Iterator[bytes]:
        self._where, self._last = (lines, line, offset), run
        self.records += self._count(run)
        yield run


def map_file_blocks(
    reader: SplitReader,
    mapper: Callable[[FileBlocks], Any],
    skip: bool,
    splits: list[Split],
    start: int,
) -> Counted:
    """Blocks mode over a file split: the mapper reads its checked raw blocks.

    A `RecordError` the mapper raises with an ``offset`` is named by file, line and byte.
    ``skip``: lines without the fields are left out and reported, not raised.
    """
    blocks = FileBlocks(reader, splits[0], skip=skip)
    try:
        value = mapper(blocks)
    except RecordError as exc:
        where = None if exc.offset is None or exc.location else blocks.locate(exc.offset)
        if where is None:
            raise
        raise locate(exc, where) from exc
    finally:
        blocks.close()  # now, not when the error's traceback lets go of the mapper's frame
    skipped = tuple(blocks.skipped)
    read = None if blocks.exhausted else blocks.bytes_read
    return Counted(value, blocks.records + len(skipped), skipped, read)
