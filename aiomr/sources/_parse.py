"""Parse text lines into records inside the workers: TSV, CSV and JSON Lines.

A parser is a small picklable object; a file source carries one, and aiomr applies it in the
worker before the mapper sees the record, so the caller never parses. Malformed input raises
`aiomr.RecordError` naming what is wrong with the record; aiomr adds where the record came
from (file and line, or byte offset).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from typing import Any, Literal, TypeAlias

from .._exceptions import RecordError

__all__ = ["Format", "Parser", "make_parser"]

Format: TypeAlias = Literal["tsv", "csv", "jsonl"]


class Parser:
    """Turn one line (``str``) into a record; raise `RecordError` when it is malformed.

    Args:
        format: ``"tsv"`` (fields split on tabs), ``"csv"`` (the :mod:`csv` dialect
            ``excel``) or ``"jsonl"`` (one JSON value per line).
        fields: for ``"tsv"`` and ``"csv"``, the number of fields every row must have
            (``None`` accepts any).
        convert: applied to the parsed row, e.g. a function that builds a dataclass;
            its exceptions count as malformed input.
    """

    def __init__(
        self,
        format: Format,
        *,
        fields: int | None = None,
        convert: Callable[[Any], Any] | None = None,
    ) -> None:
        if format not in ("tsv", "csv", "jsonl"):
            raise ValueError(f"format must be 'tsv', 'csv' or 'jsonl', got {format!r}")
        if fields is not None and fields < 1:
            raise ValueError("fields must be >= 1")
        self.format = format
        self.fields = fields
        self.convert = convert

    def __call__(self, line: str) -> Any:
        if self.format == "jsonl":
            try:
                row: Any = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RecordError(f"invalid JSON: {exc.msg} at column {exc.colno}") from exc
        else:
            if self.format == "tsv":
                row = line.split("\t")
            else:
                try:
                    row = next(csv.reader([line]), [])
                except csv.Error as exc:
                    raise RecordError(f"invalid CSV: {exc}") from exc
            if self.fields is not None and len(row) != self.fields:
                raise RecordError(f"expected {self.fields} fields, found {len(row)}")
        if self.convert is not None:
            try:
                return self.convert(row)
            except Exception as exc:
                raise RecordError(f"cannot convert row: {type(exc).__name__}: {exc}") from exc
        return row

    def __repr__(self) -> str:
        return f"Parser({self.format!r}, fields={self.fields!r})"


def make_parser(
    format: Format | None, fields: int | None, convert: Callable[[Any], Any] | None
) -> Parser | None:
    """Return the parser for a source's options, or ``None`` for plain lines."""
    if format is None:
        if fields is not None or convert is not None:
            raise ValueError("fields= and convert= need format='tsv', 'csv' or 'jsonl'")
        return None
    return Parser(format, fields=fields, convert=convert)
