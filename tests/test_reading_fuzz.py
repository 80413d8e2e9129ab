"""Fuzz the file readers against a plain reading of the same bytes.

For `files` (split sizes, block sizes) and `lines` (block sizes, the long-record path), over
text, TSV, CSV with and without a header, and JSON Lines, plain or compressed: a job gives
the records a one-pass Python reading of each whole file gives, in the same order, or fails
at the same record with the same error; skipping instead, it reports exactly the records
that reading finds bad, where it finds them.
"""

from __future__ import annotations

import asyncio
import bz2
import contextlib
import csv
import gzip
import io
import json
import lzma
import operator
import os
import pathlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiomr
import aiomr.sources
from aiomr.executors import ProcessExecutor
from aiomr.sources import _file_blocks, _split_reader, _streamed

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "": lambda data: data,
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
}
BAD = "\ue000"
"""Stands for a byte that is not UTF-8: written as ``\\xff``."""
FORMATS = ["text", "tsv", "csv", "csv-header", "jsonl"]
FIELDS = 3


# --- generated files -------------------------------------------------------------------------

TEXT = st.text(
    st.characters(exclude_characters="\n" + BAD, exclude_categories=("Cs",)), max_size=12
)
FIELD = st.text(
    st.characters(exclude_characters="\t\n\r" + BAD, exclude_categories=("Cs",)), max_size=5
)
CSV_FIELD = st.text(
    st.sampled_from([*'ab,"\n\r é', BAD])
    | st.characters(exclude_characters=BAD, exclude_categories=("Cs",)),
    max_size=6,
).filter(lambda f: "\x00" not in f)
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=5,
)


@st.composite
def records_of(draw: st.DrawFn, format: str) -> list[str]:
    """The records of one file, as text (``BAD`` marks a byte that is not UTF-8)."""
    count = draw(st.integers(0, 12))
    out = []
    for _ in range(count):
        kind = draw(st.sampled_from(["good"] * 6 + ["short", "bad byte"]))
        if format == "text":
            out.append(draw(TEXT) + (BAD if kind == "bad byte" else ""))
        elif format == "tsv":
            fields = draw(st.lists(FIELD, min_size=FIELDS, max_size=FIELDS))
            if kind == "short":
                fields = fields[: draw(st.integers(1, FIELDS - 1))]
            if kind == "bad byte":
                fields[0] += BAD
            out.append("\t".join(fields))
        elif format.startswith("csv"):
            fields = draw(st.lists(CSV_FIELD, min_size=FIELDS, max_size=FIELDS))
            if kind == "short":
                fields = fields[: draw(st.integers(1, FIELDS - 1))]
            if kind == "bad byte":
                fields[-1] += BAD
            buffer = io.StringIO()
            # The terminator's characters are what the writer quotes a field for.
            csv.writer(buffer, lineterminator="\r\n").writerow(fields)
            out.append(buffer.getvalue().removesuffix("\r\n"))
        else:
            line = json.dumps(draw(JSON_VALUE), ensure_ascii=False)
            if kind == "short":
                line = line[: max(0, len(line) - 1)] + "{"
            if kind == "bad byte":
                line = json.dumps("x" + BAD, ensure_ascii=False)
            out.append(line)
    return out


@dataclass
class File:
    name: str
    records: list[str]
    newline: str
    final_newline: bool
    suffix: str

    def content(self) -> bytes:
        """The file's bytes, uncompressed."""
        text = self.newline.join(self.records)
        if self.records and self.final_newline:
            text += self.newline
        return text.encode().replace(BAD.encode(), b"\xff")


@st.composite
def files_of(draw: st.DrawFn, format: str) -> list[File]:
    files = []
    for i in range(draw(st.integers(1, 3))):
        records = draw(records_of(format))
        if format == "csv-header" and records:
            records.insert(0, ",".join(f"c{k}" for k in range(FIELDS)))
        files.append(
            File(
                f"f{i}",
                records,
                draw(st.sampled_from(["\n", "\r\n"])),
                draw(st.booleans()),
                draw(st.sampled_from(["", "", ".gz", ".bz2", ".xz"])),
            )
        )
    return files


# --- the plain reading -----------------------------------------------------------------------


def raw_records(data: bytes, quoted: bool) -> Iterator[tuple[int, int, bytes]]:
    """Each record of a file with the line (from 1) and byte offset where it starts."""
    if not data:
        return
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    offset, number = 0, 1
    start = None
    parts: list[bytes] = []
    for line in lines:
        if start is None:
            start = (number, offset)
        parts.append(line)
        offset += len(line) + 1
        number += 1
        if quoted and b"\n".join(parts).count(b'"') % 2:
            continue  # inside a quoted field: the record goes on
        yield start[0], start[1], b"\n".join(parts).removesuffix(b"\r")
        parts, start = [], None
    if parts:
        assert start is not None
        yield start[0], start[1], b"\n".join(parts).removesuffix(b"\r")


def parse(format: str, record: bytes, names: list[str] | None) -> Any:
    """One record as the mapper sees it; raise ValueError with aiomr's message if bad."""
    try:
        text = record.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("cannot decode as utf-8") from None
    if format == "text":
        return text
    if format == "jsonl":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    if format == "tsv":
        row = text.split("\t")
    else:
        (row,) = list(csv.reader([text], strict=True))
    if len(row) != FIELDS:
        raise ValueError(f"expected {FIELDS} fields, found {len(row)}")
    return dict(zip(names, row, strict=True)) if names is not None else row


@dataclass
class Expected:
    records: list[Any]
    bad: list[tuple[str, str]]  # (location, message), in file order


def expected_of(format: str, paths: list[str], files: list[File], kind: str) -> Expected:
    out = Expected([], [])
    for path, file in zip(paths, files, strict=True):
        names = None
        for number, offset, raw in raw_records(file.content(), format.startswith("csv")):
            if format == "csv-header" and names is None:
                names = next(csv.reader([raw.decode()]))
                continue
            try:
                out.records.append(parse(format, raw, names))
            except ValueError as exc:
                where = f"{path}:{number}" + (f" (byte {offset})" if kind == "files" else "")
                out.bad.append((where, str(exc)))
    return out


def source_of(format: str, kind: str, paths: list[str], size: int) -> Any:
    options: dict[str, Any] = {}
    if format != "text":
        options["format"] = "csv" if format.startswith("csv") else format
    if format in ("tsv", "csv"):
        options["fields"] = FIELDS
    if format == "csv-header":
        options["header"] = True
    if kind == "files":
        return aiomr.sources.files(paths, split_size=size, **options)
    return aiomr.sources.lines(paths, block_size=size, **options)


def short(message: str) -> str:
    """What must match of an error message: decoding errors name the bad byte in ways that
    depend on what follows it, so only their start."""
    return "cannot decode as utf-8" if message.startswith("cannot decode") else message


# --- the properties --------------------------------------------------------------------------


@contextlib.contextmanager
def small_blocks(block: int, long_record: int) -> Iterator[None]:
    """Read splits in blocks of ``block`` bytes, and treat streamed records over
    ``long_record`` bytes as long ones: the paths a small file otherwise never takes."""
    saved = (_split_reader.BLOCK_SIZE, _file_blocks.BLOCK_SIZE, _streamed.LONG_RECORD)
    _split_reader.BLOCK_SIZE = _file_blocks.BLOCK_SIZE = block
    _streamed.LONG_RECORD = long_record
    try:
        yield
    finally:
        _split_reader.BLOCK_SIZE, _file_blocks.BLOCK_SIZE, _streamed.LONG_RECORD = saved


def write_files(directory: str, files: list[File]) -> list[str]:
    paths = []
    for file in files:
        path = os.path.join(directory, file.name + file.suffix)
        pathlib.Path(path).write_bytes(COMPRESSORS[file.suffix](file.content()))
        paths.append(path)
    return paths


async def run_both(
    format: str, kind: str, paths: list[str], size: int, executor: Any
) -> tuple[Any, Any, aiomr.JobStats]:
    """The job that raises (chunks of records, in order) and the one that collects."""
    raised: Any
    try:
        raised = await aiomr.map_reduce(
            source_of(format, kind, paths, size),
            list,
            operator.add,
            mode="chunk",
            ordered=True,
            initial=[],
            executor=executor,
            max_in_flight=1,
        )
    except aiomr.RecordError as exc:
        raised = exc
    stats = aiomr.JobStats()
    collected = await aiomr.map_reduce(
        source_of(format, kind, paths, size),
        lambda record: [record],
        operator.add,
        ordered=True,
        initial=[],
        executor=executor,
        max_in_flight=1,
        on_error="collect",
        stats=stats,
    )
    return raised, collected, stats


def check(expected: Expected, raised: Any, collected: Any, stats: aiomr.JobStats) -> None:
    if expected.bad:
        assert isinstance(raised, aiomr.RecordError), raised
        where, message = expected.bad[0]
        assert raised.location == where
        assert str(raised).startswith(f"{where}: {short(message)}")
    else:
        assert raised == expected.records
    assert collected == expected.records
    got_bad = [
        (bad.location, short(bad.error.removeprefix("RecordError: "))) for bad in stats.bad_records
    ]
    assert got_bad == [(where, short(message)) for where, message in expected.bad]
    assert stats.records == len(expected.records) + len(expected.bad)
    assert stats.records == stats.records_reduced + stats.records_skipped


SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("format", FORMATS)
@SETTINGS
@given(
    data=st.data(),
    kind=st.sampled_from(["files", "lines"]),
    size=st.one_of(st.integers(1, 40), st.integers(41, 400), st.just(10**6)),
    block=st.sampled_from([1, 7, 64, 1 << 16]),
    long_record=st.sampled_from([1 << 20, 1 << 20, 16]),
)
def test_reading_equals_a_plain_reading(
    format: str, data: st.DataObject, kind: str, size: int, block: int, long_record: int
) -> None:
    files = data.draw(files_of(format))
    with tempfile.TemporaryDirectory() as directory, small_blocks(block, long_record):
        paths = write_files(directory, files)
        expected = expected_of(format, paths, files, kind)
        raised, collected, stats = asyncio.run(run_both(format, kind, paths, size, "inline"))
        check(expected, raised, collected, stats)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.data(),
    format=st.sampled_from(FORMATS),
    kind=st.sampled_from(["files", "lines"]),
    size=st.integers(1, 200),
)
def test_reading_in_worker_processes_equals_a_plain_reading(
    process_executor: ProcessExecutor, data: st.DataObject, format: str, kind: str, size: int
) -> None:
    files = data.draw(files_of(format))
    with tempfile.TemporaryDirectory() as directory:
        paths = write_files(directory, files)
        expected = expected_of(format, paths, files, kind)
        raised, collected, stats = asyncio.run(
            run_both(format, kind, paths, size, process_executor)
        )
        check(expected, raised, collected, stats)


async def iterate(format: str, paths: list[str], size: int) -> Any:
    """Every record of a `lines` source iterated by the caller, or its error."""
    try:
        return [record async for record in source_of(format, "lines", paths, size)]
    except aiomr.RecordError as exc:
        return exc


@pytest.mark.parametrize("format", FORMATS)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    size=st.one_of(st.integers(1, 40), st.just(1 << 17)),
    long_record=st.sampled_from([1 << 20, 16]),
)
def test_iterating_lines_equals_a_plain_reading(
    format: str, data: st.DataObject, size: int, long_record: int
) -> None:
    files = data.draw(files_of(format))
    with tempfile.TemporaryDirectory() as directory, small_blocks(1 << 16, long_record):
        paths = write_files(directory, files)
        expected = expected_of(format, paths, files, "lines")
        got = asyncio.run(iterate(format, paths, size))
        if expected.bad:
            assert isinstance(got, aiomr.RecordError), got
            where, message = expected.bad[0]
            assert got.location == where
            assert str(got).startswith(f"{where}: {short(message)}")
        else:
            assert got == expected.records
