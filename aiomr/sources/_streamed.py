"""One file streamed through the caller by `aiomr.sources.lines`: read, cut, maybe decoded.

Every method here blocks (reads, decompresses, cuts) and runs on a helper thread, one call
per block of ``block_size`` bytes; the event loop only hands out what it returns.
"""

from __future__ import annotations

import os
from typing import IO, Any, NamedTuple

from .._exceptions import BrokenInputError, RecordError
from ._decode import decode_error, decode_gently
from ._framing import Pending, located_records, split_records
from ._paths import COMPRESSED, is_compressed
from ._segments import Bounded, corrupt_error, is_corrupt_data

__all__ = ["LONG_RECORD", "StreamedFile"]

LONG_RECORD = 1 << 20
"""Bytes past which a pending record is assembled without holding the GIL where it can be
(see `_File._long_record`)."""


class _Block(NamedTuple):
    """What one read of a file gave: the records it completed, and their lines."""

    records: list[Any]
    """Raw ``bytes``, or ``str`` when decoded on the way."""
    starts: list[int] | None
    """The line (from 0) where each record starts, when some record spans several lines."""
    lines: int
    size: int
    """Bytes of the records."""
    at_end: bool


class StreamedFile:
    """One open file, read on helper threads up to the size it had when opened."""

    def __init__(self, path: str, quoted: bool, encoding: tuple[str, str] | None) -> None:
        self.path = path
        self.raw: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed by close()
        try:
            self.size = os.fstat(self.raw.fileno()).st_size
            self.compressed = is_compressed(path)
            self.stream: IO[bytes] = self.raw
            if self.compressed:
                opener = COMPRESSED[os.path.splitext(path)[1].lower()]
                self.stream = opener(Bounded(self.raw, self.size), "rb")
        except BaseException:
            self.raw.close()
            raise
        self.left = self.size  # bytes of a plain file still to read
        self.position = 0  # bytes read (decompressed)
        self.pending = Pending(quoted)
        self.quoted = quoted
        self.encoding = encoding
        """``(encoding, errors)`` to decode records here, or ``None`` to keep them raw."""
        self.error: RecordError | None = None
        """A record that did not decode, to raise at the next read."""

    def read_records(self, size: int) -> _Block:
        """Read a block and cut the records it completes (blocking)."""
        if self.error is not None:  # found cutting the last block: raise it now, in order
            error, self.error = self.error, None
            raise error
        want = size if self.compressed else min(size, self.left)
        try:
            data = self.stream.read(want) if want else b""
        except Exception as exc:
            if self.compressed and is_corrupt_data(exc):
                raise corrupt_error(self.path, self.position, exc) from exc
            raise
        self.position += len(data)
        if not self.compressed:
            if want and not data:
                raise BrokenInputError(
                    f"{self.path}: expected {self.size} bytes (its size when opened), found "
                    f"{self.position}: it shrank while being read"
                )
            self.left -= len(data)
        if not data and self.pending.size >= LONG_RECORD and not self.compressed:
            record, lines = self._long_record(b"", 0)  # the last line, without a newline
            decoded = self._decode_long(record)
            return _Block([decoded], None if lines == 1 else [0], lines, len(record), True)
        if not data:
            body = self.pending.drain()
            if not body:
                return _Block([], None, 0, 0, True)
            last, first_lines, count = self._cut(body)
            return _Block(last, first_lines, count, len(body), self.error is None)
        long: tuple[Any, int] | None = None
        if self.pending.size >= LONG_RECORD and (end := self.pending.record_end(data)):
            record, lines = self._long_record(data, end)
            long = self._decode_long(record), lines
            data = data[end:]
        block = self.pending.push(data) if data else b""
        if self.pending.size >= LONG_RECORD and not self.compressed:
            self.pending.forget()  # read again in one piece when complete: see _long_record
        records: list[Any] = []
        starts: list[int] | None = None
        count = 0
        if block:
            records, starts, count = self._cut(block[:-1])
        size = len(block)
        if long is not None:  # the long record first, on lines of its own
            record, lines = long
            if starts is not None or lines > 1:
                starts = [0, *(lines + k for k in (starts or range(len(records))))]
            records.insert(0, record)
            count += lines
            size += len(record)
        return _Block(records, starts, count, size, False)

    def _cut(self, body: bytes) -> tuple[list[Any], list[int] | None, int]:
        """The records of ``body`` (decoded, when records are decoded here), where they start
        (as `split_records`) and the lines they span.

        A byte that does not decode stops the cut at the record that holds it: the records
        before it are returned (they may hold an earlier error, found when they are parsed),
        and the error is kept in ``error`` for the next read to raise, its ``index`` 0 (the
        next line).
        """
        text: Any = body
        if self.encoding is not None:
            try:
                text = body.decode(*self.encoding)
            except UnicodeDecodeError as exc:
                error = decode_error(exc, self.encoding[0])
                error.__cause__ = exc
                error.index = 0
                self.error = error
                at = [r[1] for r in located_records(body, self.quoted) if r[1] <= exc.start][-1]
                if not at:
                    return [], None, 0
                body = body[: at - 1]
                text = body.decode(*self.encoding)
        records, starts = split_records(text, self.quoted)
        return records, starts, len(records) if starts is None else body.count(b"\n") + 1

    def _decode_long(self, record: bytes) -> Any:
        """A long record decoded, when records are decoded here, in slices (`decode_gently`)."""
        if self.encoding is None:
            return record
        encoding, errors = self.encoding
        try:
            return decode_gently(record, encoding, errors)
        except UnicodeDecodeError as exc:
            error = decode_error(exc, encoding)
            error.index = 0
            raise error from exc

    def _long_record(self, data: bytes, end: int) -> tuple[bytes, int]:
        """Complete the pending record, which ends at ``end`` in ``data`` (or, with ``end``
        0, at the end of the file): return it, without its line end, and the lines it spans.

        A plain file's record is read again in one call (its pieces were not kept): the
        kernel copies it into a new ``bytes`` while the GIL is free, where joining the pieces
        would hold the GIL (and so the event loop) for the whole copy, and freeing hundreds of
        pieces for longer still. A compressed file's pieces are kept and joined once.
        """
        pending = self.pending
        lines = pending.newlines + (data.count(b"\n", 0, end - 1) if end else 0) + 1
        length = pending.size + max(end - 1, 0)  # the record without its newline
        start = self.position - len(data) - pending.size
        if self.compressed:
            cr = data[end - 2 : end - 1] == b"\r" if end > 1 else pending.ends_with_cr()
            keep = end - 1 - cr
            return pending.take(data[: max(keep, 0)], trim=1 if keep < 0 else 0), lines
        if end > 1:
            length -= data[end - 2 : end - 1] == b"\r"
        else:  # the byte before the line end was read in an earlier block: look again
            self.raw.seek(start + length - 1)
            length -= self.raw.read(1) == b"\r"
        self.raw.seek(start)
        record = self.raw.read(length)
        self.raw.seek(self.position)
        pending.drop()
        if len(record) != length:
            raise BrokenInputError(
                f"{self.path}: expected {self.size} bytes (its size when opened), found "
                f"{start + len(record)}: it shrank while being read"
            )
        return record, lines

    def close(self) -> None:
        try:
            self.stream.close()
        finally:
            self.raw.close()
