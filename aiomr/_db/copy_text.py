"""Rows as PostgreSQL's ``COPY`` text: moved by the caller as bytes, decoded by the workers.

Decoding a row into Python objects costs the caller more than anything else a job does with
it. With ``transfer="copy"`` the server sends the rows as ``COPY (query) TO STDOUT`` text, the
caller counts the newlines of each block it receives and hands the blocks on untouched, and
each block becomes rows only when it is unpickled in a worker: the caller never builds a row,
as with files it never reads a line.

::

    server ── COPY text blocks ──► caller: CopyRows(blocks, count) ── pickle ──► worker
                                     len() = newlines, no row made      decode_copy():
                                                                        list of tuples/dicts

Text format (PostgreSQL's own documentation, "COPY", "Text Format"): one line per row, fields
separated by tabs, ``\\N`` for NULL, and a backslash before a backslash, a tab, a newline, a
carriage return, a backspace, a form feed or a vertical tab inside a value (``COPY TO`` writes
no other escape). A block is decoded a column at a time: one ``split`` of the whole block,
then each column is every n-th field, converted by one ``map`` when the block holds no
backslash at all, the common case.

Every column's type must be one this module decodes to exactly what asyncpg returns for it
(`DECODERS`); the check runs before the first row is read.
"""

from __future__ import annotations

import datetime
import decimal
import re
import struct
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .._exceptions import RecordError
from .driver import RowType

__all__ = ["DECODERS", "CopyLayout", "CopyRows", "decode_copy", "unsupported_columns"]

_NULL = "\\N"
_ESCAPE = re.compile(r"\\(.)")
_ESCAPED = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_UTC = datetime.UTC
_FLOAT4 = struct.Struct("f")


def _unescape(text: str) -> str:
    return _ESCAPE.sub(lambda m: _ESCAPED.get(m.group(1), m.group(1)), text)


def _bool(text: str) -> bool:
    return text == "t"


def _float4(text: str) -> float:
    # asyncpg reads a real as its 32-bit value; the text is its shortest decimal form.
    value: float = _FLOAT4.unpack(_FLOAT4.pack(float(text)))[0]
    return value


def _date(text: str) -> datetime.date:
    if text == "infinity":
        return datetime.date.max
    if text == "-infinity":
        return datetime.date.min
    return datetime.date.fromisoformat(text)


def _timestamp(text: str) -> datetime.datetime:
    if text == "infinity":
        return datetime.datetime.max
    if text == "-infinity":
        return datetime.datetime.min
    return datetime.datetime.fromisoformat(text)


def _timestamptz(text: str) -> datetime.datetime:
    if text in ("infinity", "-infinity"):  # naive, as asyncpg gives them
        return _timestamp(text)
    # The text carries the session's offset ("+02", "-03:30"); asyncpg gives UTC.
    return datetime.datetime.fromisoformat(text).astimezone(_UTC)


def _bytea(text: str) -> bytes:
    if not text.startswith("\\x"):
        raise ValueError("bytea text is not in hex format (bytea_output must be 'hex')")
    return bytes.fromhex(text[2:])


def _text(text: str) -> str:
    return text


DECODERS: dict[str, Callable[[str], Any]] = {
    "int2": int,
    "int4": int,
    "int8": int,
    "oid": int,
    "float4": _float4,
    "float8": float,
    "numeric": decimal.Decimal,
    "bool": _bool,
    "text": _text,
    "varchar": _text,
    "bpchar": _text,
    "name": _text,
    "char": _text,
    "json": _text,
    "jsonb": _text,
    "date": _date,
    "time": datetime.time.fromisoformat,
    "timestamp": _timestamp,
    "timestamptz": _timestamptz,
    "bytea": _bytea,
    "uuid": uuid.UUID,
}
"""PostgreSQL type (``pg_catalog``) -> decoder of its ``COPY`` text, giving what asyncpg gives:
``int``, ``float``, ``Decimal``, ``bool``, ``str`` (text types, ``json``, ``jsonb``),
``date``, ``time``, naive ``datetime`` (``timestamp``), UTC ``datetime`` (``timestamptz``),
``bytes`` and ``uuid.UUID`` (asyncpg's rows hold a subclass of it, equal to it). Infinite
dates and timestamps become ``max`` and ``min``, naive, as asyncpg makes them."""


_SPACELESS = frozenset(
    {"int2", "int4", "int8", "oid", "float4", "float8", "numeric", "bool", "date", "time"}
    | {"bytea", "uuid"}
)
"""Types whose text never holds white space, nor is empty: fields split on any white space."""


def unsupported_columns(columns: Sequence[tuple[str, str, str]]) -> list[str]:
    """Describe the ``(name, type, schema)`` columns that `DECODERS` cannot decode."""
    return [
        f"{name!r} ({schema}.{type_})"
        for name, type_, schema in columns
        if schema != "pg_catalog" or type_ not in DECODERS
    ]


@dataclass(frozen=True, slots=True)
class CopyLayout:
    """What the rows of one query look like: column names and types, and the row type."""

    names: tuple[str, ...]
    types: tuple[str, ...]
    row: RowType

    @property
    def spaceless(self) -> bool:
        """Whether no value of these types has white space in its text (numbers, dates...)."""
        return all(type_ in _SPACELESS for type_ in self.types)

    def decode(self, data: bytes) -> list[Any]:
        """Decode whole lines of ``COPY`` text into rows; raise on malformed text."""
        if not data:
            return []
        text = data.decode("utf-8")
        width = len(self.types)
        if self.spaceless:
            fields = text.split()  # tabs and newlines at once: a third faster
        else:
            fields = text.replace("\n", "\t").split("\t")
            fields.pop()  # what follows the last newline: nothing
        if len(fields) % width:
            raise ValueError(f"a line does not have {width} fields")
        escaped = "\\" in text
        columns: list[list[Any]] = []
        for i, type_ in enumerate(self.types):
            convert = DECODERS[type_]
            values = fields[i::width]
            if convert is _text and not escaped:
                columns.append(values)
            elif escaped:
                columns.append(
                    [
                        None if v == _NULL else convert(_unescape(v) if "\\" in v else v)
                        for v in values
                    ]
                )
            else:
                columns.append(list(map(convert, values)))
        rows = list(zip(*columns, strict=True))
        if self.row == "dict":
            names = self.names
            return [dict(zip(names, row, strict=True)) for row in rows]
        return rows

    def locate(self, data: bytes, first: int) -> str:
        """Find the first line of ``data`` that does not decode, for an error message."""
        for index, line in enumerate(data.split(b"\n")[:-1]):
            try:
                self.decode(line + b"\n")
            except Exception as exc:
                return f"row {first + index} of the query: {type(exc).__name__}: {exc}"
        return f"rows {first}.. of the query"


class CopyRows(Sequence[Any]):
    """Rows still in ``COPY`` text: their count is known, their values are decoded later.

    Pickled (on its way to a worker process), it becomes a plain list of rows on arrival.
    Read where it is (an executor in the caller's process), it decodes its rows there.
    """

    __slots__ = ("_decoded", "blocks", "first", "layout", "size")

    def __init__(self, layout: CopyLayout, blocks: list[bytes], count: int, first: int) -> None:
        self.layout = layout
        self.blocks = blocks
        """Whole lines of ``COPY`` text."""
        self.size = count
        """Rows in the blocks (their lines)."""
        self.first = first
        """Position of the first row in the query, for error messages."""
        self._decoded: list[Any] | None = None

    def __len__(self) -> int:
        return self.size

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (decode_copy, (self.layout, b"".join(self.blocks), self.first))

    def extend(self, other: CopyRows) -> None:
        """Append the blocks of ``other``, which follows this one in the query."""
        self.blocks.extend(other.blocks)
        self.size += other.size

    def rows(self) -> list[Any]:
        """The rows, decoded on first use."""
        if self._decoded is None:
            decoded = decode_copy(self.layout, b"".join(self.blocks), self.first)
            if isinstance(decoded, UndecodableRows):
                return list(decoded)  # raises its error
            self._decoded = decoded
            self.blocks = []
        return self._decoded

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows())

    def __getitem__(self, index: Any) -> Any:
        return self.rows()[index]

    def __repr__(self) -> str:
        return f"<{self.size} rows of COPY text>"


class UndecodableRows(Sequence[Any]):
    """What a block that does not decode becomes: any use raises `aiomr.RecordError`.

    A block is decoded while a worker unpickles its task, where an exception would break the
    whole process pool; the error waits here instead, to be raised by the task itself.
    """

    __slots__ = ("message", "size")

    def __init__(self, message: str, size: int) -> None:
        self.message = message
        self.size = size

    def fail(self) -> Any:
        raise RecordError(self.message)

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[Any]:
        self.fail()
        return iter(())

    def __getitem__(self, index: Any) -> Any:
        return self.fail()


def decode_copy(layout: CopyLayout, data: bytes, first: int) -> list[Any] | UndecodableRows:
    """Decode a block of ``COPY`` text; never raises (see `UndecodableRows`)."""
    try:
        return layout.decode(data)
    except Exception:
        where = layout.locate(data, first)
        return UndecodableRows(f"cannot decode the COPY text of {where}", data.count(b"\n"))
