"""Byte-range input splits: the caller sends coordinates, each worker reads its own range.

Cutting (`SplitCutter`, on a helper thread, one split at a time as the job asks for them):
every local uncompressed file is cut into ranges of about ``split_size`` bytes, each boundary
moved forward to just after the next newline (a read of a few kilobytes per boundary), so
every range holds whole lines and every line belongs to exactly one range. Files smaller than
``split_size`` are packed together, several per split, so a directory of small files does
not cost one task each. A compressed file cannot be cut: it is one split, decompressed by the
worker that reads it.

Reading (`read_blocks`, `read_lines`, in the worker): open, seek, read ``BLOCK_SIZE`` bytes at
a time, cut each block after its last newline. Blocks of 16-64 KiB keep the working set in
the CPU caches; larger blocks are measurably slower for the tight counting loops this path is
for.
"""

from __future__ import annotations

import codecs
import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .._exceptions import RecordError
from ._parse import Format, Parser, make_parser
from ._paths import PathsLike, expand_paths, is_compressed, open_binary
from ._split_source import SplitSource

__all__ = [
    "BLOCK_SIZE",
    "FileSource",
    "Segment",
    "Split",
    "SplitCutter",
    "files",
    "plan_splits",
]

BLOCK_SIZE = 64 * 1024
"""Bytes a worker reads at a time."""
_PROBE = 64 * 1024
"""Bytes read at a boundary to find the next newline (more if a line is longer)."""
AUTO_SPLITS_PER_WORKER = 4
"""With ``split_size=None``, aim for this many splits per worker: enough to balance uneven
ranges, few enough that per-split merging stays cheap."""
MIN_AUTO_SPLIT = 1 << 20
MAX_AUTO_SPLIT = 64 << 20


def auto_split_size(total: int, workers: int) -> int:
    """Bytes per split for ``total`` bytes on ``workers`` workers, when none is given.

    At least `AUTO_SPLITS_PER_WORKER` splits per worker, none over `MAX_AUTO_SPLIT`, and a
    multiple of ``workers`` splits of equal size: with 15 splits on 2 workers, one worker
    would sit idle through the last round, and a short last split wastes the same way.
    """
    workers = max(1, workers)
    count = max(workers * AUTO_SPLITS_PER_WORKER, -(-total // MAX_AUTO_SPLIT))
    count = -(-count // workers) * workers
    return max(MIN_AUTO_SPLIT, -(-total // count))


@dataclass(frozen=True, slots=True)
class Segment:
    """Bytes ``[start, end)`` of one file; ``end`` is ``-1`` for "to the end" (compressed)."""

    path: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Split:
    """The unit of work of a file source: one or more segments, read by one worker."""

    index: int
    segments: tuple[Segment, ...]

    @property
    def size(self) -> int:
        """Bytes on disk this split covers (compressed files count their file size)."""
        total = 0
        for segment in self.segments:
            if segment.end >= 0:
                total += segment.end - segment.start
            else:
                total += os.path.getsize(segment.path)
        return total

    def describe(self) -> str:
        """Name the split's ranges for messages."""
        parts = []
        for s in self.segments[:3]:
            end = "end" if s.end < 0 else str(s.end)
            parts.append(f"{s.path} bytes {s.start}..{end}")
        more = f" and {len(self.segments) - 3} more" if len(self.segments) > 3 else ""
        return f"split {self.index} ({', '.join(parts)}{more})"


def _next_line_start(f: Any, position: int, size: int) -> int:
    """Return the offset just after the first newline at or after ``position``."""
    f.seek(position)
    while position < size:
        data = f.read(_PROBE)
        if not data:
            break
        cut = data.find(b"\n")
        if cut >= 0:
            return int(position + cut + 1)
        position += len(data)
    return size


class SplitCutter:
    """Cut ``paths`` into line-aligned splits one at a time, each of the size asked then.

    `cut` is blocking (it reads a few kilobytes at a boundary): call it on a helper thread.
    Cutting lazily lets a job size each split by what the earlier ones took (see
    `aiomr._chunker.ChunkSizer.split_bytes`); with one size throughout it cuts exactly what
    `plan_splits` plans.
    """

    def __init__(self, paths: list[str]) -> None:
        self._paths = paths
        self._sizes = [os.path.getsize(path) for path in paths]
        self._file = 0
        self._offset = 0
        self._count = 0
        self.total = sum(self._sizes)
        """Bytes on disk the splits will cover (compressed files count their file size)."""

    def cut(self, split_size: int) -> Split | None:
        """Return the next split of about ``split_size`` bytes, or ``None`` at the end.

        Files smaller than ``split_size`` are packed together while they fit; a larger file
        is cut into ranges of ``split_size``, each ending just after a newline; a compressed
        file is a split of its own.
        """
        packed: list[Segment] = []
        packed_bytes = 0
        while self._file < len(self._paths):
            path, size = self._paths[self._file], self._sizes[self._file]
            if self._offset == 0:  # at the start of a file: pack it, or cut it
                if is_compressed(path):
                    if packed:
                        break
                    self._file += 1
                    return self._split((Segment(path, 0, -1),))
                if size == 0:
                    self._file += 1
                    continue
                if size < split_size:
                    if packed and packed_bytes + size > split_size:
                        break
                    packed.append(Segment(path, 0, size))
                    packed_bytes += size
                    self._file += 1
                    continue
                if packed:
                    break
            start = self._offset
            if size - start <= split_size:
                end = size
            else:
                with open(path, "rb") as f:
                    end = _next_line_start(f, start + split_size - 1, size)
            self._offset = end
            if end >= size:
                self._file, self._offset = self._file + 1, 0
            return self._split((Segment(path, start, end),))
        return self._split(tuple(packed)) if packed else None

    def _split(self, segments: tuple[Segment, ...]) -> Split:
        split = Split(self._count, segments)
        self._count += 1
        return split


def plan_splits(paths: list[str], split_size: int) -> list[Split]:
    """Cut ``paths`` into line-aligned splits of about ``split_size`` bytes (blocking)."""
    cutter = SplitCutter(paths)
    return list(iter(lambda: cutter.cut(split_size), None))


def read_blocks(split: Split, block_size: int = BLOCK_SIZE) -> Iterator[tuple[bytes, Segment, int]]:
    """Yield ``(block, segment, offset)``: blocks of whole lines and where each starts."""
    for segment in split.segments:
        with open_binary(segment.path) as f:
            if segment.start:
                f.seek(segment.start)
            position = segment.start
            remaining = segment.end - segment.start if segment.end >= 0 else -1
            rest = b""
            while remaining != 0:
                want = block_size if remaining < 0 else min(block_size, remaining)
                data = f.read(want)
                if not data:
                    break
                if remaining > 0:
                    remaining -= len(data)
                data = rest + data
                cut = data.rfind(b"\n") + 1
                if cut == 0:
                    rest = data
                    continue
                rest = data[cut:]
                yield data[:cut], segment, position
                position += cut
            if rest:
                yield rest, segment, position


class FileSource(SplitSource):
    """Files read by the workers themselves, in line-aligned byte ranges (see `files`)."""

    def __init__(
        self,
        paths: PathsLike,
        *,
        split_size: int | None,
        encoding: str | None,
        errors: str,
        parser: Parser | None,
    ) -> None:
        if split_size is not None and split_size < 1:
            raise ValueError("split_size must be >= 1")
        if encoding is not None:
            codecs.lookup(encoding)
        self.paths_arg = paths
        self.split_size = split_size
        self.reader = SplitReader(encoding, errors, parser)

    def cutter(self, workers: int) -> tuple[SplitCutter, int]:
        """Expand the paths (blocking); return a cutter for them and the split size to use
        for ``workers`` workers: ``split_size``, or `auto_split_size` of the total."""
        cutter = SplitCutter(expand_paths(self.paths_arg))
        size = self.split_size
        if size is None:
            size = auto_split_size(cutter.total, workers)
        return cutter, size


class SplitReader:
    """Read the records of a split in a worker: decode, split lines, parse."""

    def __init__(self, encoding: str | None, errors: str, parser: Parser | None) -> None:
        self.encoding = encoding
        self.errors = errors
        self.parser = parser

    def blocks(self, split: Split) -> Iterator[bytes]:
        """The split's raw bytes, in blocks that end at a line boundary."""
        for block, _, _ in read_blocks(split):
            yield block

    def line_blocks(self, split: Split) -> Iterator[list[Any]]:
        """The split's records, one list per block."""
        decode = self.encoding
        parse = self.parser
        for block, segment, offset in read_blocks(split):
            body = block[:-1] if block.endswith(b"\n") else block
            if body.endswith(b"\r"):  # a CRLF line whose "\n" was just cut off
                body = body[:-1]
            if decode is None:
                yield (body.replace(b"\r\n", b"\n") if b"\r" in body else body).split(b"\n")
                continue
            try:
                text = body.decode(decode, self.errors)
            except UnicodeDecodeError as exc:
                line_start = body.rfind(b"\n", 0, exc.start) + 1
                raise RecordError(
                    f"{segment.path}: line at byte offset {offset + line_start}: cannot decode "
                    f"as {decode}: {exc.reason} (byte {exc.object[exc.start : exc.start + 1]!r})"
                ) from exc
            if "\r" in text:
                text = text.replace("\r\n", "\n")
            records: list[Any] = text.split("\n")
            if parse is not None:
                records = self._parse(records, body, segment, offset)
            yield records

    def _parse(self, lines: list[str], body: bytes, segment: Segment, offset: int) -> list[Any]:
        parse = self.parser
        assert parse is not None
        out = []
        for i, line in enumerate(lines):
            try:
                out.append(parse(line))
            except RecordError as exc:
                position = offset + _nth_line_start(body, i)
                raise RecordError(f"{segment.path}: line at byte offset {position}: {exc}") from exc
        return out

    def located_lines(self, split: Split) -> Iterator[tuple[str, int, bytes]]:
        """The split's raw lines, each with its file and byte offset (for skipping bad ones)."""
        for block, segment, offset in read_blocks(split):
            position = offset
            for line in block.split(b"\n"):
                if position - offset >= len(block):
                    break
                yield segment.path, position, line.removesuffix(b"\r")
                position += len(line) + 1

    @staticmethod
    def where(path: str, offset: int) -> str:
        """Name a line that `located_lines` gave, for messages about it."""
        return f"{path}: line at byte offset {offset}"

    @staticmethod
    def records_in_block(block: bytes) -> int:
        """The lines in one of the raw blocks that `blocks` gives."""
        return block.count(b"\n") + (not block.endswith(b"\n"))

    def decode_and_parse(self, line: bytes) -> Any:
        """Turn one raw line into a record: decode, then parse; raise on malformed input."""
        if self.encoding is None:
            return line
        text = line.decode(self.encoding, self.errors)
        return self.parser(text) if self.parser is not None else text

    def records(self, split: Split) -> Iterator[Any]:
        """The split's records one by one.

        Chained in C: a generator's ``yield from`` costs some 35 ns more per record, a
        measurable share of a key-value job's time per line.
        """
        return itertools.chain.from_iterable(self.line_blocks(split))


def _nth_line_start(body: bytes, n: int) -> int:
    position = 0
    for _ in range(n):
        position = body.index(b"\n", position) + 1
    return position


def files(
    paths: PathsLike,
    *,
    split_size: int | None = None,
    encoding: str | None = "utf-8",
    errors: str = "strict",
    format: Format | None = None,
    fields: int | None = None,
    convert: Callable[[Any], Any] | None = None,
) -> FileSource:
    """Read local files as line records, each worker reading its own byte ranges.

    The fast path for files on a disk the workers can see: the caller only cuts the files
    into line-aligned ranges and sends their coordinates; workers open, read, decode and
    parse. The caller's memory and CPU stay flat whatever the input size.

    ```python
    import operator, aiomr

    def words(line: str):
        for word in line.split():
            yield word, 1

    async def main() -> None:
        counts = await aiomr.map_reduce_by_key(aiomr.sources.files("books/"), words, operator.add)
    ```

    With ``mode="record"`` (the default) the mapper sees one line (or parsed row) at a time;
    with ``mode="chunk"`` a list of them (one block, about 64 KiB of input); with
    ``mode="blocks"`` (`aiomr.map_reduce` only) an iterator over the split's raw ``bytes``
    blocks, each ending at a line boundary, for hand-tuned loops.

    Args:
        paths: paths, globs or directories, as for `aiomr.sources.lines`.
        split_size: bytes per split; ``None`` aims at four splits per worker (between 1 and
            64 MiB), a multiple of the workers in all, of even size, and on a shared
            `aiomr.Engine` at most what its ``split_seconds`` reads. Smaller files are
            packed several per split; compressed files (gzip, bzip2, xz) are one split
            each, decompressed by the worker.
        encoding: decode lines with it; ``None`` gives ``bytes``.
        errors: as for `bytes.decode`; ``"strict"`` raises `aiomr.RecordError` naming the
            file and the byte offset of the line.
        format: ``"tsv"``, ``"csv"`` or ``"jsonl"`` to parse each line in the workers,
            as for `aiomr.sources.lines`.
        fields: for TSV and CSV, the number of fields every row must have.
        convert: applied to each parsed row in the workers.
    """
    parser = make_parser(format, fields, convert)
    if parser is not None and encoding is None:
        raise ValueError("format= parses text: give an encoding")
    return FileSource(paths, split_size=split_size, encoding=encoding, errors=errors, parser=parser)
