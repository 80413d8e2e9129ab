"""CSV read as CSV, headers, and bad records of streamed lines skipped like any other."""

from __future__ import annotations

import csv
import io
import json
import operator
import pathlib
from typing import Any

import pytest

import aiomr
import aiomr.sources
from aiomr.sources._file_splits import plan_splits
from aiomr.sources._framing import Pending, last_record_end


def write(path: pathlib.Path, content: bytes) -> str:
    path.write_bytes(content)
    return str(path)


def as_list(record: Any) -> list[Any]:
    return [record]


def amount(row: dict[str, str]) -> int:
    return int(row["amount"])


def csv_bytes(rows: list[list[str]], newline: str = "\n") -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=newline).writerows(rows)
    return buffer.getvalue().encode()


NOTES = [
    ["id", "note", "amount"],
    *(
        [str(n), f'first line\nsecond "quoted" line of {n}' if n % 4 == 0 else f"plain {n}", str(n)]
        for n in range(300)
    ),
]


def make(kind: str) -> Any:
    return aiomr.sources.files if kind == "files" else aiomr.sources.lines


def sizes(kind: str) -> list[dict[str, int]]:
    if kind == "files":
        return [{"split_size": size} for size in (1, 37, 500, 10**6)]
    return [{"block_size": size} for size in (1, 37, 500, 1 << 17)]


@pytest.mark.parametrize("kind", ["files", "lines"])
async def test_csv_with_a_header_gives_dicts_and_keeps_newlines_inside_quotes(
    engine: aiomr.Engine, tmp_path: pathlib.Path, kind: str
) -> None:
    path = write(tmp_path / "notes.csv", csv_bytes(NOTES, "\r\n"))
    expected = [dict(zip(NOTES[0], row, strict=True)) for row in NOTES[1:]]
    for size in sizes(kind):
        source = make(kind)(path, format="csv", header=True, **size)
        got = await engine.map_reduce(source, as_list, operator.add, ordered=True)
        assert got == expected, size
    stats = aiomr.JobStats()
    total = await engine.map_reduce(
        make(kind)(path, format="csv", header=True), amount, operator.add, stats=stats
    )
    assert total == sum(range(300))
    assert stats.records == stats.records_reduced == 300


async def test_iterating_streamed_csv_yields_parsed_rows(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path / "notes.csv", csv_bytes(NOTES))
    got = [row async for row in aiomr.sources.lines(path, format="csv", block_size=64)]
    assert got == NOTES
    named = [row async for row in aiomr.sources.lines(path, format="csv", header=True)]
    assert named == [dict(zip(NOTES[0], row, strict=True)) for row in NOTES[1:]]


def test_csv_splits_are_cut_only_between_records(tmp_path: pathlib.Path) -> None:
    content = csv_bytes(NOTES)
    path = write(tmp_path / "notes.csv", content)
    for size in (1, 20, 100, 1000):
        splits = plan_splits([path], size, quoted=True)
        for split in splits:
            (segment,) = split.segments
            assert content.count(b'"', 0, segment.start) % 2 == 0
            assert segment.start == 0 or content[segment.start - 1 : segment.start] == b"\n"
    # Cut as lines, the same file would split records (what the quote count prevents).
    assert any(content.count(b'"', 0, s.segments[0].start) % 2 for s in plan_splits([path], 20))


def test_a_long_quoted_record_is_pending_until_its_quotes_close() -> None:
    pending = Pending(quoted=True)
    assert pending.push(b'a,"one\n') == b""
    assert pending.push(b"two\nthree") == b""
    assert pending.push(b'",x\nb,2\nc,"') == b'a,"one\ntwo\nthree",x\nb,2\n'
    assert pending.drain() == b'c,"'
    assert last_record_end(b'x\n"a\nb"\n', quoted=True) == 8
    assert last_record_end(b'x\n"a\nb\n', quoted=True) == 2
    assert last_record_end(b'a\n"b\n', quoted=True, odd=True) == 5
    assert last_record_end(b"a\nb\n", quoted=True, odd=True) == 0


BAD_CSV = b'id,note\n1,fine\n2,"two\nlines"\n3\n'
UNCLOSED = b'4,"open\n'
UNBALANCED = (
    "RecordError: invalid CSV: unbalanced quotes (a quoted field must close within its "
    "record, and a field holding a quote must be quoted whole, its quotes doubled)"
)


@pytest.mark.parametrize("kind", ["files", "lines"])
async def test_a_malformed_csv_record_is_named_by_its_first_line(
    engine: aiomr.Engine, tmp_path: pathlib.Path, kind: str
) -> None:
    path = write(tmp_path / "bad.csv", BAD_CSV)
    byte = {"files": " (byte 29)", "lines": ""}[kind]
    for size in sizes(kind):
        with pytest.raises(aiomr.RecordError) as caught:
            await engine.map_reduce(
                make(kind)(path, format="csv", header=True, **size), as_list, operator.add
            )
        assert str(caught.value) == f"{path}:5{byte}: expected 2 fields, found 1"
    # Skipped instead: a quote left open at the end is reported too.
    path = write(tmp_path / "bad.csv", BAD_CSV + UNCLOSED)
    stats = aiomr.JobStats()
    dead = tmp_path / "dead.jsonl"
    got = await engine.map_reduce(
        make(kind)(path, format="csv", header=True),
        as_list,
        operator.add,
        ordered=True,
        on_error="skip",
        dead_letter=dead,
        stats=stats,
    )
    assert got == [{"id": "1", "note": "fine"}, {"id": "2", "note": "two\nlines"}]
    assert (stats.records, stats.records_reduced, stats.records_skipped) == (4, 2, 2)
    written = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [(w["location"], w["error"]) for w in written] == [
        (f"{path}:5{byte}", "RecordError: expected 2 fields, found 1"),
        (
            f"{path}:6{' (byte 31)' if kind == 'files' else ''}",
            f"{UNBALANCED}: its quotes never close, so the record runs to the end of the file",
        ),
    ]


@pytest.mark.parametrize("kind", ["files", "lines"])
async def test_a_quote_inside_an_unquoted_field_is_never_read_as_two_records_or_one(
    engine: aiomr.Engine, tmp_path: pathlib.Path, kind: str
) -> None:
    # The csv module would read 'a"b' as a field, then '"c\n9' as one quoted field holding a
    # newline: two records as one. The quote count says the record ends at the first newline.
    for content in (b'1,ok\n2,a"b,"c\n9,x"y\n3,fine\n', b'1,ok\n2,a"b\n9,x\n3,fine\n'):
        path = write(tmp_path / "quotes.csv", content)
        with pytest.raises(aiomr.RecordError) as caught:
            await engine.map_reduce(make(kind)(path, format="csv"), as_list, operator.add)
        assert str(caught.value).startswith(f"{path}:2")
        assert f"{UNBALANCED.removeprefix('RecordError: ')}" in str(caught.value)


@pytest.mark.parametrize("kind", ["files", "lines"])
async def test_tsv_takes_a_header_or_names(
    engine: aiomr.Engine, tmp_path: pathlib.Path, kind: str
) -> None:
    rows = [["k", "v"], *([f"key{n}", str(n)] for n in range(100))]
    path = write(tmp_path / "rows.tsv", "".join("\t".join(r) + "\n" for r in rows).encode())
    expected = [{"k": k, "v": v} for k, v in rows[1:]]
    got = await engine.map_reduce(
        make(kind)(path, format="tsv", header=True), as_list, operator.add, ordered=True
    )
    assert got == expected
    checked = await engine.map_reduce(
        make(kind)(path, format="tsv", header=True, names=["k", "v"]),
        as_list,
        operator.add,
        ordered=True,
    )
    assert checked == expected
    no_header = write(tmp_path / "plain.tsv", "".join(f"{k}\t{v}\n" for k, v in rows[1:]).encode())
    named = await engine.map_reduce(
        make(kind)(no_header, format="tsv", names=["k", "v"]), as_list, operator.add, ordered=True
    )
    assert named == expected
    as_bytes = await engine.map_reduce(
        make(kind)(path, format="tsv", header=True, encoding=None),
        as_list,
        operator.add,
        ordered=True,
    )
    assert as_bytes == [{b"k": k.encode(), b"v": v.encode()} for k, v in rows[1:]]


@pytest.mark.parametrize("kind", ["files", "lines"])
async def test_a_header_that_cannot_name_the_fields_is_an_error(
    engine: aiomr.Engine, tmp_path: pathlib.Path, kind: str
) -> None:
    twice = write(tmp_path / "twice.csv", b"a,b,a\n1,2,3\n")
    with pytest.raises(aiomr.RecordError, match=r"twice\.csv:1.*: header: a field name appears"):
        await engine.map_reduce(make(kind)(twice, format="csv", header=True), as_list, operator.add)
    other = write(tmp_path / "other.csv", b"a,c\n1,2\n")
    with pytest.raises(aiomr.RecordError, match=r"other\.csv:1.*: header \['a', 'c'\] differs"):
        await engine.map_reduce(
            make(kind)(other, format="csv", header=True, names=["a", "b"]), as_list, operator.add
        )


# --- bad records of streamed lines -----------------------------------------------------------


def lines_with_bad_bytes(tmp_path: pathlib.Path) -> tuple[str, list[str], list[int]]:
    lines = [f"line {n}".encode() for n in range(1, 2001)]
    bad = [17, 640, 1999]
    for n in bad:
        lines[n - 1] = b"caf\xe9 " + lines[n - 1]
    path = write(tmp_path / "latin.txt", b"\n".join(lines) + b"\n")
    good = [line.decode() for n, line in enumerate(lines, 1) if n not in bad]
    return path, good, bad


@pytest.mark.parametrize("how", ["record", "keyed"])
async def test_an_undecodable_streamed_line_is_skipped_and_reported(
    engine: aiomr.Engine, tmp_path: pathlib.Path, how: str
) -> None:
    path, good, bad = lines_with_bad_bytes(tmp_path)
    stats = aiomr.JobStats()
    dead = tmp_path / "dead.jsonl"
    source = aiomr.sources.lines(path, block_size=256)
    if how == "record":
        got = await engine.map_reduce(
            source,
            as_list,
            operator.add,
            ordered=True,
            on_error="collect",
            dead_letter=dead,
            stats=stats,
        )
        assert got == good
    else:
        counts = await engine.run_by_key(
            source,
            aiomr.ReduceByKey(lambda line: [(line, 1)], operator.add),
            on_error="collect",
            dead_letter=dead,
            stats=stats,
        )
        assert counts == dict.fromkeys(good, 1)
    assert stats.records == stats.records_reduced + stats.records_skipped == 2000
    # Chunks finish in any order: their bad records are reported as they come.
    assert sorted(r.location for r in stats.bad_records) == sorted(f"{path}:{n}" for n in bad)
    assert all(
        r.error == "RecordError: cannot decode as utf-8: invalid continuation byte (byte b'\\xe9')"
        for r in stats.bad_records
    )
    written = [json.loads(line) for line in dead.read_text().splitlines()]
    assert sorted(w["location"] for w in written) == sorted(f"{path}:{n}" for n in bad)


async def test_an_undecodable_streamed_line_still_fails_a_job_that_does_not_skip(
    engine: aiomr.Engine, tmp_path: pathlib.Path
) -> None:
    path, _, bad = lines_with_bad_bytes(tmp_path)
    with pytest.raises(aiomr.RecordError) as caught:
        await engine.map_reduce(aiomr.sources.lines(path), len, operator.add)
    # Chunks run side by side: the job fails on whichever bad line a worker meets first.
    located = [n for n in bad if caught.value.location == f"{path}:{n}"]
    assert located, caught.value.location
    assert str(caught.value).startswith(f"{path}:{located[0]}: cannot decode as utf-8: ")
