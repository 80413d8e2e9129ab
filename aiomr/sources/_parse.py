"""Parse records inside the workers: TSV, CSV and JSON Lines, with or without a header.

A parser is a small picklable object; a file source carries one, and aiomr applies it in the
worker before the mapper sees the record, so the caller never parses. Malformed input raises
`aiomr.RecordError` naming what is wrong with the record; aiomr adds where the record came
from (``path:LINE``, with ``(byte OFFSET)`` for byte-range splits).

A record is one line for TSV and JSON Lines, and one CSV record for CSV: a quoted field may
hold newlines (see `aiomr.sources._framing` for how records are cut). CSV is read with the
csv module's ``excel`` dialect in strict mode, one record at a time, and a record the csv
module would read differently from the framing (a quote inside an unquoted field that
unbalances the count) is an error, never a silently merged or split row.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeAlias

from .._exceptions import RecordError

__all__ = ["Format", "Parser", "make_parser"]

Format: TypeAlias = Literal["tsv", "csv", "jsonl"]

_UNBALANCED = (
    "invalid CSV: unbalanced quotes (a quoted field must close within its record, and a "
    "field holding a quote must be quoted whole, its quotes doubled)"
)
_UNCLOSED = _UNBALANCED + ": its quotes never close, so the record runs to the end of the file"


class Parser:
    """Turn one record (``str``; ``bytes`` for TSV) into a row; raise `RecordError` if malformed.

    Args:
        format: ``"tsv"`` (fields split on tabs), ``"csv"`` (the :mod:`csv` dialect
            ``excel``, strict; quoted fields may hold newlines) or ``"jsonl"`` (one JSON
            value per line).
        fields: for ``"tsv"`` and ``"csv"``, the number of fields every row must have
            (``None`` accepts any, or as many as the header names).
        convert: applied to the parsed row, e.g. a function that builds a dataclass;
            its exceptions count as malformed input.
        header: the first record of every file names the fields: it is not a record, and
            each row becomes a ``dict`` from those names to its fields.
        names: the field names, for files without a header (rows become dicts), or the
            header every file must have (with ``header=True``).
    """

    def __init__(
        self,
        format: Format,
        *,
        fields: int | None = None,
        convert: Callable[[Any], Any] | None = None,
        header: bool = False,
        names: Sequence[Any] | None = None,
    ) -> None:
        if format not in ("tsv", "csv", "jsonl"):
            raise ValueError(f"format must be 'tsv', 'csv' or 'jsonl', got {format!r}")
        if fields is not None and fields < 1:
            raise ValueError("fields must be >= 1")
        if format == "jsonl" and (header or names is not None):
            raise ValueError("header= and names= name the fields of TSV and CSV rows, not JSON")
        if not isinstance(header, bool):
            raise TypeError(f"header must be a bool, got {header!r}")
        if names is not None:
            if isinstance(names, str | bytes):
                raise TypeError("names must be a sequence of field names, not one string")
            names = tuple(names)
            if not names:
                raise ValueError("names must name at least one field")
            if len(set(names)) != len(names):
                raise ValueError(f"names must be distinct, got {list(names)!r}")
            if fields is not None and fields != len(names):
                raise ValueError(f"fields={fields} but names= has {len(names)}")
            fields = len(names)
        self.format = format
        self.fields = fields
        self.convert = convert
        self.header = header
        self.names: tuple[Any, ...] | None = names

    def __call__(self, record: Any) -> Any:
        if self.header and self.names is None:
            raise TypeError("a parser with header=True needs each file's header: see with_names")
        return self.parse_many([record])[0]

    def parse_many(self, records: list[Any]) -> list[Any]:
        """Parse a list of records; a malformed one raises `RecordError` with its ``index``."""
        if self.format == "jsonl":
            rows = _json_rows(records)
        elif self.format == "tsv":
            tab = b"\t" if records and isinstance(records[0], bytes) else "\t"
            rows = [record.split(tab) for record in records]
        else:
            rows = _csv_rows(records)
        fields = self.fields
        if fields is not None:
            for index, row in enumerate(rows):
                if len(row) != fields:
                    raise _at(index, RecordError(f"expected {fields} fields, found {len(row)}"))
        names = self.names
        if names is not None:
            rows = [dict(zip(names, row, strict=True)) for row in rows]
        convert = self.convert
        if convert is None:
            return rows
        out = []
        for index, row in enumerate(rows):
            try:
                out.append(convert(row))
            except Exception as exc:
                error = RecordError(f"cannot convert row: {type(exc).__name__}: {exc}")
                raise _at(index, error) from exc
        return out

    def read_header(self, record: Any) -> tuple[Any, ...]:
        """Parse a file's header record into field names; raise `RecordError` if unusable."""
        plain = Parser(self.format)
        (row,) = plain.parse_many([record])
        names = tuple(row)
        if len(set(names)) != len(names):
            twice = sorted({name for name in names if names.count(name) > 1}, key=repr)
            raise RecordError(f"header: a field name appears twice: {twice[0]!r}")
        if self.names is not None and names != self.names:
            raise RecordError(f"header {list(names)!r} differs from names={list(self.names)!r}")
        if self.fields is not None and len(names) != self.fields:
            raise RecordError(f"header: expected {self.fields} fields, found {len(names)}")
        return names

    def with_names(self, names: tuple[Any, ...]) -> Parser:
        """This parser for a file whose header gave ``names``: rows become dicts."""
        bound = Parser(self.format, fields=len(names), convert=self.convert)
        bound.names = names
        return bound

    def __repr__(self) -> str:
        extra = ", header=True" if self.header else ""
        if self.names is not None:
            extra += f", names={list(self.names)!r}"
        return f"Parser({self.format!r}, fields={self.fields!r}{extra})"


def _at(index: int, error: RecordError) -> RecordError:
    error.index = index
    return error


def _json_rows(records: list[Any]) -> list[Any]:
    loads = json.loads
    try:
        return [loads(record) for record in records]
    except json.JSONDecodeError:
        pass
    for index, record in enumerate(records):
        try:
            loads(record)
        except json.JSONDecodeError as exc:
            error = RecordError(f"invalid JSON: {exc.msg} at column {exc.colno}")
            raise _at(index, error) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _csv_rows(records: list[str]) -> list[list[str]]:
    """Read each record as exactly one CSV row (see the module docstring)."""
    reader = csv.reader(records, strict=True)
    rows: list[list[str]] = []
    try:
        for row in reader:
            if reader.line_num != len(rows) + 1:  # the csv module read on into the next record
                raise _at(len(rows), RecordError(_UNBALANCED))
            rows.append(row)
    except csv.Error as exc:
        index = len(rows)  # the row being read started on the record after the last row
        record = records[index]
        framing = "new-line" in str(exc) or "unexpected end of data" in str(exc)
        if framing or reader.line_num > index + 1:  # it did not end where its record ends
            message = _UNCLOSED if record.count('"') & 1 else _UNBALANCED
        else:
            message = f"invalid CSV: {exc}"
        raise _at(index, RecordError(message)) from exc
    return rows


def make_parser(
    format: Format | None,
    fields: int | None,
    convert: Callable[[Any], Any] | None,
    header: bool = False,
    names: Sequence[Any] | None = None,
) -> Parser | None:
    """Return the parser for a source's options, or ``None`` for plain lines."""
    if format is None:
        if fields is not None or convert is not None or header or names is not None:
            raise ValueError(
                "fields=, convert=, header= and names= need format='tsv', 'csv' or 'jsonl'"
            )
        return None
    if convert is not None:
        from .._callables import check_function  # the caller's side only: not in workers

        check_function("convert", convert, returns="the record")
    return Parser(format, fields=fields, convert=convert, header=header, names=names)
