"""Where records end in a stream of bytes: at every newline, or, for CSV, outside quotes.

A line record ends at every ``\\n``. A CSV record may hold newlines inside a quoted field,
so it ends only at a newline preceded by an even number of quote characters since the start
of the file: every quoted field opens and closes with one quote, and a quote inside it is
doubled, so an odd count means "inside a quoted field". The rule needs nothing but
`bytes.count` over the data (C speed) and the parity carried from what came before.

The csv module reads a quote inside an *unquoted* field (``ab"c``) as an ordinary character;
such a record can break the rule, and the parser then reports it as malformed instead of
guessing (see `aiomr.sources._parse`): a record is never cut in two, and two are never read
as one, without an error.

`Pending` collects the bytes read in blocks until a record ends: each block is appended to a
list, never copied onto the bytes before it, and the pieces are joined once when the record
is complete, so a record of any length costs time linear in its length.
"""

from __future__ import annotations

from typing import AnyStr

__all__ = [
    "Pending",
    "first_record_end",
    "last_record_end",
    "located_records",
    "split_records",
]


def last_record_end(data: bytes, quoted: bool, odd: bool = False) -> int:
    """Return the offset just after the last record end in ``data``, or 0 when none.

    ``data`` starts where a record starts, or, for CSV (``quoted``), after bytes whose
    quote count has parity ``odd``.
    """
    end = data.rfind(b"\n") + 1
    if not quoted or not end:
        return end
    quotes = (data.count(b'"', 0, end) & 1) ^ odd
    while quotes:
        previous = data.rfind(b"\n", 0, end - 1) + 1
        if not previous:
            return 0
        quotes ^= data.count(b'"', previous, end) & 1
        end = previous
    return end


class Pending:
    """The bytes of a record whose end has not been read yet, kept in pieces."""

    __slots__ = ("_forgetting", "_odd", "_parts", "newlines", "quoted", "size")

    def __init__(self, quoted: bool) -> None:
        self.quoted = quoted
        self._parts: list[bytes | memoryview] = []
        self._odd = False
        self.size = 0
        """Bytes pending."""
        self.newlines = 0
        """Newlines pending (counted for CSV only: inside quotes)."""
        self._forgetting = False

    def push(self, data: bytes) -> bytes:
        """Add ``data``; return every record now complete (ending after a newline), or ``b""``.

        Only the records handed out are copied; the rest of ``data`` is kept as it is.
        """
        cut = last_record_end(data, self.quoted, self._odd)
        if not cut:
            self._keep(data)
            return b""
        if self._parts:  # one copy: the join reads the new block's part in place
            self._parts.append(memoryview(data)[:cut] if cut < len(data) else data)
            out = b"".join(self._parts)
            self._parts = []
        else:
            out = data[:cut] if cut < len(data) else data
        self._reset()
        if cut < len(data):
            self._keep(data[cut:])
        return out

    def _keep(self, data: bytes) -> None:
        if not self._forgetting:
            self._parts.append(data)
        self.size += len(data)
        if self.quoted:
            self._odd ^= bool(data.count(b'"') & 1)
            self.newlines += data.count(b"\n")

    def _reset(self) -> None:
        self._parts = []
        self._odd = False
        self.size = 0
        self.newlines = 0
        self._forgetting = False

    def forget(self) -> None:
        """Keep counting the pending record's bytes, but not the bytes themselves: the reader
        will read the record again in one piece (`drop` it then)."""
        self._parts = []
        self._forgetting = True

    def record_end(self, data: bytes) -> int:
        """The offset just after the end of the pending record in ``data``; 0 if not there."""
        return first_record_end(data, self.quoted, self._odd)

    def ends_with_cr(self) -> bool:
        """Whether the pending bytes end with a carriage return."""
        return bool(self._parts) and bytes(self._parts[-1][-1:]) == b"\r"

    def take(self, last: bytes, trim: int = 0) -> bytes:
        """End the pending record with ``last`` (``trim`` bytes of what is pending dropped
        first) and return it, joined once."""
        if trim:
            self._parts[-1] = self._parts[-1][:-trim]
        self._parts.append(last)
        out = b"".join(self._parts)
        self._reset()
        return out

    def drop(self) -> None:
        """Forget what is pending (its bytes were read again another way)."""
        self._reset()

    def drain(self) -> bytes:
        """Return what is pending (the last record of a file without a final newline)."""
        out = b"".join(self._parts)
        self._reset()
        return out


def split_records(body: AnyStr, quoted: bool) -> tuple[list[AnyStr], list[int] | None]:
    """Split whole records (without the last one's newline) into records, line endings off.

    Returns the records and, when some CSV record spans several lines, the line (from 0)
    where each record starts; ``None`` when record ``i`` starts on line ``i``. A line ending
    is ``\\n`` or ``\\r\\n``; inside a quoted CSV field both are kept as they are.
    """
    if isinstance(body, bytes):
        newline, cr, crlf, quote = b"\n", b"\r", b"\r\n", b'"'
    else:
        newline, cr, crlf, quote = "\n", "\r", "\r\n", '"'
    if body.endswith(cr):  # a CRLF record whose "\n" was just cut off
        body = body[:-1]
    if not quoted or quote not in body:
        if cr in body:
            body = body.replace(crlf, newline)
        return body.split(newline), None
    records: list[AnyStr] = []
    starts: list[int] = []
    parts: list[AnyStr] = []
    multi = False
    for number, line in enumerate(body.split(newline)):
        if parts:
            parts.append(line)
            if line.count(quote) & 1:
                records.append(newline.join(parts))
                parts = []
            continue
        if line.count(quote) & 1:
            parts = [line]
            starts.append(number)
            multi = True
            continue
        records.append(line)
        starts.append(number)
    if parts:  # a quote left open at the end: the parser reports the record
        records.append(newline.join(parts))
    for i, record in enumerate(records):
        if record.endswith(cr):
            records[i] = record[:-1]
    return records, starts if multi else None


def first_record_end(data: bytes, quoted: bool, odd: bool = False) -> int:
    """Return the offset just after the first record end in ``data``, or 0 when none;
    ``odd`` as for `last_record_end`."""
    end = data.find(b"\n") + 1
    if not quoted:
        return end
    start = 0
    while end:
        odd ^= bool(data.count(b'"', start, end) & 1)
        if not odd:
            return end
        start = end
        end = data.find(b"\n", start) + 1
    return 0


def located_records(body: bytes, quoted: bool) -> list[tuple[int, int, bytes]]:
    """Each record of ``body`` (as for `split_records`) with its line (from 0) and offset.

    One Python step per line: for the paths that handle records one by one anyway.
    """
    out: list[tuple[int, int, bytes]] = []
    position = 0
    first = 0
    at = 0
    parts: list[bytes] = []
    for number, line in enumerate(body.split(b"\n")):
        if not parts:
            first, at = number, position
        position += len(line) + 1
        if quoted and (parts or line.count(b'"') & 1):
            parts.append(line)
            if len(parts) > 1 and line.count(b'"') & 1:
                out.append((first, at, b"\n".join(parts).removesuffix(b"\r")))
                parts = []
            continue
        out.append((first, at, line.removesuffix(b"\r")))
    if parts:
        out.append((first, at, b"\n".join(parts).removesuffix(b"\r")))
    return out
