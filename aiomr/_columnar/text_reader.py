"""TSV, CSV and JSON Lines splits read as Arrow record batches in a worker.

A file source (`aiomr.sources.files` with ``format="tsv"``, ``"csv"`` or ``"jsonl"``) cuts
its files into record-aligned byte ranges as for every other mode. For ``mode="batches"``
each worker reads its range in large blocks of whole records, with the same checks as the
other modes (sizes as planned, compressed data whole, a CSV record's quoted newlines never
cut), and parses each block with pyarrow's CSV or JSON reader on the worker's one thread.

Every task must agree on the columns: their names come from ``names=``, or from the first
file's header (``header=True``), or are ``f0``, ``f1``, ...; their types are inferred by
pyarrow from the first `SAMPLE_BYTES` of the first file, the same bytes in every worker, so
every split gets the same schema without the caller reading anything (records of the sample
that do not parse are left out of the inference: each job names or skips them as it reads
them). A later value that does not fit its column's type fails the task, naming its record,
or is skipped with ``on_error``.

A malformed record (a row with the wrong number of fields, broken quoting, bad JSON) is
located the way the other modes locate it: the block is parsed again record by record with
the source's own parser, which raises `aiomr.RecordError` naming ``path:LINE (byte
OFFSET)``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from typing import Any

from .._exceptions import RecordError
from .._worker.blame import note_input
from .._worker.envelope import Skipped, short_repr
from ..sources._framing import first_record_end, last_record_end, located_records
from ..sources._locate import SegmentLines, locate
from ..sources._paths import expand_paths, is_compressed
from ..sources._segments import Segment, Split, open_segment, read_blocks, stamp_of
from .imports import require

__all__ = ["SAMPLE_BYTES", "TEXT_BLOCK", "TextBatchReader"]

TEXT_BLOCK = 4 << 20
"""Bytes of whole records parsed at once: large enough that pyarrow's cost per call is
noise, small enough that a worker holds little."""
SAMPLE_BYTES = 1 << 20
"""Bytes at the top of the first file from which the columns' types are inferred."""
_SAMPLE_BAD = 100
"""Records of the sample that may fail to parse and be left out of the inference (they
are named or skipped as each job reads them); with more, the sample is refused as it is."""

_SCHEMAS: dict[tuple[Any, ...], tuple[list[str], Any]] = {}
"""Per worker process: the columns inferred for a source's first file (by path, size and
modification time), so each task infers them once."""


class TextBatchReader:
    """Read a file split's records as ``pyarrow.RecordBatch`` es (see the module docstring).

    ``reader`` is the source's `aiomr.sources._split_reader.SplitReader`: its parser says
    the format, the header and the names, and it locates malformed records.
    """

    def __init__(
        self,
        reader: Any,
        paths: Any,
        types: dict[str, Any] | None = None,
        columns: list[str] | None = None,
    ) -> None:
        self.reader = reader
        self.paths = paths
        """The source's paths: their first file is where the columns are inferred from."""
        self.types = types
        """The Arrow types of some columns (types or their names); others are inferred."""
        self.columns_read = columns
        """The columns the batches hold (the others are never converted); ``None``: all."""

    # -- the columns, the same in every worker -------------------------------------------------

    def layout(self) -> tuple[list[str], Any]:
        """The column names and the Arrow schema every batch has."""
        path = expand_paths(self.paths)[0]
        stat = os.stat(path)
        first = Segment(path, 0, -1, stat.st_size, stamp_of(stat))
        key = (
            path,
            first.stamp,
            self.reader.parser.format,
            self.reader.parser.names,
            repr(self.types),
        )  # the columns read do not change the schema: it is every column's
        found = _SCHEMAS.get(key)
        if found is None:
            found = _SCHEMAS[key] = self._infer(first)
        return found

    def _infer(self, first: Segment) -> tuple[list[str], Any]:
        parser = self.reader.parser
        with open_segment(first) as f:
            sample = f.read(SAMPLE_BYTES)
            more = f.read(1)
        if more:  # whole records only: cut after the last record end in the sample
            cut = last_record_end(sample, parser.format == "csv")
            sample = sample[:cut] if cut else sample
        skip = 0
        names = list(parser.names) if parser.names is not None else None
        if parser.header:
            end = first_record_end(sample, parser.format == "csv")
            head = sample[: end - 1] if end else sample
            text = self.reader.decode(head.rstrip(b"\r"), SegmentLines(first.path, 0), 0, 0)
            header = [_name(name) for name in parser.read_header(text)]
            if names is None:
                names = header
            skip = 1
        try:
            table = self._parse(sample, skip, names, self._given_types(), complete=False)
        except Exception as exc:
            # Malformed records say nothing of the types: infer them from the others (each
            # job names or skips those records as it reads them).
            records = self._records(sample)
            rows = records[skip:]
            given = self._given_types()

            def parse(piece: bytes) -> Any:
                return self._parse(piece, 0, names, given, complete=False)

            bad = {index for index, _ in self._refused(rows, 0, len(rows), parse, _SAMPLE_BAD)}
            kept = b"".join(raw + b"\n" for i, (_, _, raw) in enumerate(rows) if i not in bad)
            try:
                if not bad or len(bad) > _SAMPLE_BAD:
                    raise
                table = self._parse(kept, 0, names, given, complete=False)
            except Exception:
                lines = SegmentLines(first.path, 0)
                raise self._located(sample, skip, lines, 0, 0, exc, names) from exc
        missing = [c for c in self.columns_read or () if c not in table.schema.names]
        if missing:
            raise ValueError(
                f"{first.path}: no column {missing[0]!r} to read; "
                f"the columns are {', '.join(table.schema.names)}"
            )
        return list(table.schema.names), table.schema

    # -- reading -------------------------------------------------------------------------------

    def batches(self, split: Split, skipped: list[Skipped] | None = None) -> Iterator[Any]:
        """The split's records as record batches; an error while reading is noted as the
        input's. A malformed record raises `aiomr.RecordError` naming it, or, given a
        ``skipped`` list (``on_error="skip"``), is left out and described there."""
        try:
            names, schema = self.layout()
            yield from self._read(split, names, schema, skipped)
        except Exception as exc:
            note_input(exc)
            raise

    def _read(
        self, split: Split, names: list[str], schema: Any, skipped: list[Skipped] | None
    ) -> Iterator[Any]:
        parser = self.reader.parser
        quoted = parser.format == "csv"
        for segment in split.segments:
            # Lines are counted only to name a malformed record: in a plain file, from the
            # top of the file to the failing block, once it fails; in a compressed file (its
            # offsets count decompressed bytes) as the blocks go by.
            counted = is_compressed(segment.path)
            lines = SegmentLines(segment.path, segment.start)
            at_top = parser.header and segment.start == 0
            line = 0
            for block, _, offset in read_blocks(Split(0, (segment,)), TEXT_BLOCK, quoted):
                skip = 1 if at_top else 0
                if at_top:
                    self._check_header(block, names, lines, offset)
                    at_top = False
                try:
                    table = self._parse(block, skip, names, schema, complete=True)
                except Exception as exc:
                    if not counted:
                        lines, line = SegmentLines(segment.path, offset), 0
                    if skipped is None:
                        raise self._located(
                            block, skip, lines, line, offset, exc, names, (names, schema)
                        ) from exc
                    layout = (names, schema)
                    table = self._without_bad(block, skip, lines, line, offset, layout, skipped)
                if counted:
                    line += block.count(b"\n")
                for batch in table.to_batches():
                    if batch.num_rows:  # a mapper never sees an empty batch
                        yield batch

    def _given_types(self) -> Any:
        """The types given for some columns, as a partial ``pyarrow.Schema``, or ``None``."""
        if not self.types:
            return None
        pa = require("pyarrow", "types=")
        return pa.schema(
            [
                (name, pa.type_for_alias(kind) if isinstance(kind, str) else kind)
                for name, kind in self.types.items()
            ]
        )

    def _parse(
        self, block: bytes, skip: int, names: list[str] | None, schema: Any, complete: bool
    ) -> Any:
        """Parse whole records with pyarrow: the columns of ``schema`` as typed there, the
        others inferred, unless ``schema`` is ``complete`` (every column); a ``complete``
        parse gives only the columns read."""
        parser = self.reader.parser
        size = max(len(block) + 1, 1 << 16)
        if parser.format == "jsonl":
            json = require("pyarrow.json", 'mode="batches" over JSON Lines')
            table = json.read_json(
                io.BytesIO(block),
                read_options=json.ReadOptions(use_threads=False, block_size=size),
                parse_options=json.ParseOptions(
                    explicit_schema=schema,
                    unexpected_field_behavior="error" if complete else "infer",
                ),
            )
            return table.select(self.columns_read) if complete and self.columns_read else table
        csv = require("pyarrow.csv", 'mode="batches" over TSV and CSV')
        tsv = parser.format == "tsv"
        autogenerate = names is None
        return csv.read_csv(
            io.BytesIO(block),
            read_options=csv.ReadOptions(
                use_threads=False,
                block_size=size,
                skip_rows=skip,
                column_names=names,
                autogenerate_column_names=autogenerate,
                encoding=self.reader.encoding or "utf8",
            ),
            parse_options=csv.ParseOptions(
                delimiter="\t" if tsv else ",",
                quote_char=False if tsv else '"',
                newlines_in_values=not tsv,
                ignore_empty_lines=False,
            ),
            convert_options=csv.ConvertOptions(
                column_types={field.name: field.type for field in schema} if schema else None,
                include_columns=self.columns_read if complete and self.columns_read else None,
                null_values=[""],
                strings_can_be_null=False,
            ),
        )

    def _check_header(self, block: bytes, names: list[str], lines: SegmentLines, at: int) -> None:
        """A file's first record must name the columns as the first file's did."""
        parser = self.reader.parser
        end = first_record_end(block, parser.format == "csv")
        head = block[: end - 1] if end else block
        text = self.reader.decode(head.rstrip(b"\r"), lines, 0, at)
        found = [_name(name) for name in parser.read_header(text)]
        if parser.names is None and found != names:
            raise locate(
                RecordError(f"the header names {found}, not {names} as the first file's does"),
                lines.where(0, at),
            )

    def _located(
        self,
        block: bytes,
        skip: int,
        lines: SegmentLines,
        line: int,
        offset: int,
        exc: Exception,
        names: list[str] | None,
        layout: tuple[list[str], Any] | None = None,
    ) -> Exception:
        """The error for a block pyarrow could not parse: the first record the source's own
        parser refuses, located; else pyarrow's error, naming the block and, given the
        columns of every batch (``layout``), the first record pyarrow refuses on its own."""
        records = self._records(block)
        for number, at, error in self._malformed(records, skip, names):
            return locate(error, lines.where(line + number, offset + at))
        exc.add_note(
            f"aiomr: parsing {lines.path} bytes [{offset}, {offset + len(block)}) "
            "as Arrow columns (types inferred from the top of the first file)"
        )
        if layout is not None:
            kept = [record for record in records if record[0] >= skip]
            bad = self._refused(kept, 0, len(kept), self._parser_of(layout), most=0)
            if bad:
                number, at, _ = kept[bad[0][0]]
                where = lines.where(line + number, offset + at)
                exc.add_note(f"aiomr: the first record it refuses: {where}")
        return exc

    def _records(self, block: bytes) -> list[tuple[int, int, bytes]]:
        """The records of whole-record ``block``, each with its line (from 0) and offset."""
        return located_records(block.removesuffix(b"\n"), self.reader.parser.format == "csv")

    def _malformed(
        self, records: list[tuple[int, int, bytes]], skip: int, names: list[str] | None
    ) -> Iterator[tuple[int, int, RecordError]]:
        """``(line, offset, error)`` of each record the source's own parser refuses (a
        wrong number of fields, broken quoting, bad JSON), up to the first that does not
        decode. ``names``: the columns, or ``None`` when the first record says how many."""
        parse = self.reader.parser
        encoding = self.reader.encoding
        for number, at, raw in records:
            if number < skip:
                continue
            try:
                text = raw if encoding is None else raw.decode(encoding, self.reader.errors)
                if parse.format != "jsonl" and not parse.header:
                    # Every row must have as many fields as there are columns.
                    if names is None:
                        first = parse.parse_many([text])[0]
                        names = [f"f{i}" for i in range(len(first))]
                    parse = parse.with_names(tuple(names))
                parse.parse_many([text])
            except RecordError as error:
                yield number, at, error
            except UnicodeDecodeError:
                return

    def _refused(
        self,
        records: list[tuple[int, int, bytes]],
        low: int,
        high: int,
        parse: Callable[[bytes], Any],
        most: int | None = None,
    ) -> list[tuple[int, Exception]]:
        """The records of ``records[low:high]`` that ``parse`` refuses one by one, by
        bisection: a range that parses has none, a refused range is halved, a refused record
        is one. ``(index, error)`` each, in order; past ``most`` found, the search stops
        (those found so far, and one more)."""
        if low >= high:
            return []
        piece = b"".join(raw + b"\n" for _, _, raw in records[low:high])
        try:
            parse(piece)
            return []
        except Exception as exc:
            if high - low == 1:
                return [(low, exc)]
        middle = (low + high) // 2
        found = self._refused(records, low, middle, parse, most)
        if most is not None and len(found) > most:
            return found
        return found + self._refused(records, middle, high, parse, most)

    def _parser_of(self, layout: tuple[list[str], Any]) -> Callable[[bytes], Any]:
        """Parse whole records with the columns of every batch."""
        return lambda piece: self._parse(piece, 0, *layout, complete=True)

    def _without_bad(
        self,
        block: bytes,
        skip: int,
        lines: SegmentLines,
        line: int,
        offset: int,
        layout: tuple[list[str], Any],
        skipped: list[Skipped],
    ) -> Any:
        """Parse ``block`` without the records pyarrow refuses, each described in
        ``skipped`` with its location (``on_error="skip"``)."""
        records = self._records(block)
        kept = records[skip:]
        bad = self._refused(kept, 0, len(kept), self._parser_of(layout))
        refused = {index for index, _ in bad}
        for index, exc in bad:
            number, at, raw = kept[index]
            error = f"{type(exc).__qualname__}: {exc}"
            skipped.append(
                Skipped(number, short_repr(raw), error, lines.where(line + number, offset + at))
            )
        good = b"".join(raw + b"\n" for i, (_, _, raw) in enumerate(kept) if i not in refused)
        return self._parse(good, 0, *layout, complete=True)


def _name(name: Any) -> str:
    """A header field as a column name (TSV read without an encoding gives bytes)."""
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
