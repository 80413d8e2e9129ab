"""Name a record of a byte-range split: ``path:LINE (byte OFFSET)``.

A worker reading a split knows the byte offset of every record and counts the lines of its
own range as it goes, but not how many lines come before the range. Only when a record is
bad does it count them: one pass over the file's bytes before the range, in C
(`bytes.count`), done once per range however many bad records it holds.
"""

from __future__ import annotations

from .._exceptions import RecordError
from ._paths import is_compressed

__all__ = ["COUNT_BLOCK", "SegmentLines", "locate", "newlines_before"]

COUNT_BLOCK = 1 << 20
"""Bytes read at a time while counting the lines before a range."""


def newlines_before(path: str, offset: int) -> int:
    """Count the newlines in the first ``offset`` bytes of ``path`` (a plain file)."""
    count = 0
    with open(path, "rb") as f:
        left = offset
        while left > 0:
            data = f.read(min(COUNT_BLOCK, left))
            if not data:
                break
            count += data.count(b"\n")
            left -= len(data)
    return count


class SegmentLines:
    """Line numbers in one range of a file, the lines before it counted once, when needed."""

    __slots__ = ("_before", "path", "start")

    def __init__(self, path: str, start: int) -> None:
        self.path = path
        self.start = start
        self._before: int | None = None

    def before(self) -> int:
        """Lines of the file before the range."""
        if self._before is None:
            # Compressed files are read whole: their ranges start at 0.
            plain = self.start and not is_compressed(self.path)
            self._before = newlines_before(self.path, self.start) if plain else 0
        return self._before

    def where(self, line: int, offset: int) -> str:
        """Name the record on line ``line`` of the range (from 0) at byte ``offset``."""
        return f"{self.path}:{self.before() + line + 1} (byte {offset})"


def locate(error: RecordError, where: str) -> RecordError:
    """Return a `RecordError` whose message is ``error``'s, preceded by ``where``; raise it
    ``from error``."""
    return RecordError(f"{where}: {error}", location=where)
