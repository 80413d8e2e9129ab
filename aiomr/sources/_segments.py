"""Byte ranges of files and how a worker reads one: checked, in blocks of whole records.

A `Segment` records the file's size, modification time and identity when the job planned
it. Reading it (`read_blocks`) checks them first and refuses, with `aiomr.BrokenInputError`,
a file that is now smaller (truncated), another file under the same name (replaced), or the
same size with a new modification time (rewritten in place). A file that grew is read up to
its planned size only: appending, the usual way a file grows, leaves the planned bytes as
they were. A read that ends before the planned end (the file shrank while being read) is
an error too, never a short answer; so is compressed data that ends early or is corrupt.

Blocks of about ``block_size`` bytes are cut after their last record end (see
`aiomr.sources._framing`); a record longer than a block is collected piece by piece and
joined once.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import lzma
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from .._exceptions import BrokenInputError
from ._framing import Pending
from ._paths import COMPRESSED, is_compressed

__all__ = [
    "BLOCK_SIZE",
    "Bounded",
    "Segment",
    "Split",
    "corrupt_error",
    "is_corrupt_data",
    "open_segment",
    "read_blocks",
    "stamp_of",
]

BLOCK_SIZE = 64 * 1024
"""Bytes a worker reads at a time. Blocks of 16-64 KiB keep the working set in the CPU
caches; larger blocks are measurably slower for the tight counting loops this path is for."""


def stamp_of(stat: os.stat_result) -> tuple[int, int, int]:
    """What identifies a file's version cheaply: modification time, inode and device."""
    return (stat.st_mtime_ns, stat.st_ino, stat.st_dev)


@dataclass(frozen=True, slots=True)
class Segment:
    """Bytes ``[start, end)`` of one file; ``end`` is ``-1`` for "to the end" (compressed).

    ``size`` and ``stamp`` describe the file when the job planned the segment (``-1`` and
    ``None`` when unknown: nothing is checked then).
    """

    path: str
    start: int
    end: int
    size: int = -1
    stamp: tuple[int, int, int] | None = None

    def describe(self) -> str:
        """Name the range, half-open: ``notes.txt bytes [0, 1048576)``."""
        return f"{self.path} bytes [{self.start}, {'end' if self.end < 0 else self.end})"


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
            elif segment.size >= 0:
                total += segment.size
            else:
                total += os.path.getsize(segment.path)
        return total

    def describe(self) -> str:
        """Name the split's ranges for messages."""
        parts = [segment.describe() for segment in self.segments[:3]]
        more = f" and {len(self.segments) - 3} more" if len(self.segments) > 3 else ""
        return f"split {self.index} ({', '.join(parts)}{more})"


class Bounded(io.RawIOBase):
    """The first ``limit`` bytes of a file: what a decompressor may read of a grown file."""

    def __init__(self, raw: IO[bytes], limit: int) -> None:
        self._raw = raw
        self._left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._left <= 0:
            return 0
        got = self._raw.readinto(view[: min(len(view), self._left)])  # type: ignore[attr-defined]
        self._left -= got or 0
        return got or 0


def _check(segment: Segment, stat: os.stat_result) -> None:
    if segment.size < 0:
        return
    path = segment.path
    if segment.stamp is not None and stamp_of(stat)[1:] != segment.stamp[1:]:
        raise BrokenInputError(f"{path}: replaced by another file after the job planned its splits")
    if stat.st_size < segment.size:
        raise BrokenInputError(
            f"{path}: expected {segment.size} bytes as planned, found {stat.st_size}: "
            "the file shrank after the job planned its splits"
        )
    if (
        stat.st_size == segment.size
        and segment.stamp is not None
        and stat.st_mtime_ns != segment.stamp[0]
    ):
        raise BrokenInputError(
            f"{path}: modified after the job planned its splits (same size, "
            f"{segment.size} bytes, but a new modification time)"
        )


@contextlib.contextmanager
def open_segment(segment: Segment) -> Iterator[IO[bytes]]:
    """Open ``segment``'s file for reading its bytes (decompressed), after checking it."""
    with open(segment.path, "rb") as raw:
        stat = os.fstat(raw.fileno())
        _check(segment, stat)
        if not is_compressed(segment.path):
            yield raw
            return
        limit = segment.size if segment.size >= 0 else stat.st_size
        opener = COMPRESSED[os.path.splitext(segment.path)[1].lower()]
        with opener(Bounded(raw, limit), "rb") as stream:
            yield stream


def is_corrupt_data(exc: BaseException) -> bool:
    """Whether ``exc``, raised reading a compressed file, says its data is cut or corrupt."""
    if isinstance(exc, EOFError | zlib.error | lzma.LZMAError | gzip.BadGzipFile):
        return True
    return isinstance(exc, OSError) and exc.errno is None  # bz2: "Invalid data stream"


def corrupt_error(path: str, position: int, exc: BaseException) -> BrokenInputError:
    """The error for compressed data of ``path`` that failed after ``position`` bytes out."""
    return BrokenInputError(
        f"{path}: the compressed data is cut short or corrupt after {position} bytes of "
        f"decompressed output: {type(exc).__name__}: {exc}"
    )


def read_blocks(
    split: Split, block_size: int = BLOCK_SIZE, quoted: bool = False
) -> Iterator[tuple[bytes, Segment, int]]:
    """Yield ``(block, segment, offset)``: blocks of whole records and where each starts.

    ``quoted``: records are CSV records, which may hold newlines (see `_framing`). Offsets
    count decompressed bytes in compressed files.
    """
    for segment in split.segments:
        yield from _segment_blocks(segment, block_size, quoted)


def _segment_blocks(
    segment: Segment, block_size: int, quoted: bool
) -> Iterator[tuple[bytes, Segment, int]]:
    with open_segment(segment) as f:
        if segment.start:
            f.seek(segment.start)
        pending = Pending(quoted)
        position = segment.start  # where the next block handed out starts
        remaining = segment.end - segment.start if segment.end >= 0 else -1
        while remaining != 0:
            want = block_size if remaining < 0 else min(block_size, remaining)
            try:
                data = f.read(want)
            except Exception as exc:
                if is_corrupt_data(exc):
                    raise corrupt_error(segment.path, position + pending.size, exc) from exc
                raise
            if not data:
                if remaining > 0:
                    reached = position + pending.size
                    expected = segment.size if segment.size >= 0 else segment.end
                    raise BrokenInputError(
                        f"{segment.path}: expected {expected} bytes as planned, found "
                        f"{reached}: the file ended inside {segment.describe()}; it shrank "
                        "while the job read it"
                    )
                break
            if remaining > 0:
                remaining -= len(data)
            block = pending.push(data)
            if block:
                yield block, segment, position
                position += len(block)
        rest = pending.drain()
        if rest:
            yield rest, segment, position
