"""TSV, CSV and JSON Lines files read as Arrow record batches by the workers
(``mode="batches"`` over `aiomr.sources.files`), checked against a plain reading."""

from __future__ import annotations

import csv
import gzip
import io
import json
import operator
import pathlib
import re
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiomr
from aiomr.sources import files

pa = pytest.importorskip("pyarrow", reason="the arrow extra is not installed")
pc = pytest.importorskip("pyarrow.compute")

NGRAM = ["word", "year", "match_count", "volume_count"]


def per_word(batch: Any) -> Counter[str]:
    table = pa.Table.from_batches([batch]).group_by("word").aggregate([("match_count", "sum")])
    return Counter(
        dict(zip(table["word"].to_pylist(), table["match_count_sum"].to_pylist(), strict=True))
    )


def per_word_polars(frame: Any) -> Counter[str]:
    import polars as pl

    sums = frame.group_by("word").agg(pl.col("match_count").sum())
    return Counter(dict(zip(sums["word"].to_list(), sums["match_count"].to_list(), strict=True)))


def column_types(batch: Any) -> dict[str, str]:
    return {field.name: str(field.type) for field in batch.schema}


def merge(a: Counter[str], b: Counter[str]) -> Counter[str]:
    out = Counter(a)
    out.update(b)  # keeps zero and negative totals, which ``a + b`` would drop
    return out


def ngram_lines(rows: int, seed: int = 0) -> list[str]:
    words = ["Aardvark", "NA", "null", "the", "Zebra_NOUN", "caf\u00e9", '"quoted"']
    return [
        f"{words[(i * 7 + seed) % len(words)]}\t{1900 + i % 120}\t{(i * 31 + seed) % 1000}\t{i % 9}"
        for i in range(rows)
    ]


def plain_totals(lines: list[str]) -> Counter[str]:
    totals: Counter[str] = Counter()
    for line in lines:
        word, _, count, _ = line.split("\t")
        totals[word] += int(count)
    return totals


async def test_tsv_files_plain_and_compressed_give_the_plain_reading(
    tmp_path: pathlib.Path,
) -> None:
    first, second = ngram_lines(20_000), ngram_lines(7_000, seed=3)
    (tmp_path / "a.tsv").write_text("\n".join(first) + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "b.tsv.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(second) + "\n")
    stats = aiomr.JobStats()
    source = files(
        [tmp_path / "a.tsv", tmp_path / "b.tsv.gz"], format="tsv", names=NGRAM, split_size=50_000
    )
    got = await aiomr.map_reduce(source, per_word, merge, mode="batches", stats=stats)
    assert got == plain_totals(first + second)
    assert stats.records == stats.records_reduced == len(first) + len(second)
    assert stats.chunks > 5  # many splits, cut at line ends
    # Strings stay strings ("NA" and "null" are words); numbers are typed.
    types = await aiomr.map_reduce(source, column_types, lambda a, b: a, mode="batches")
    assert types == {
        "word": "string",
        "year": "int64",
        "match_count": "int64",
        "volume_count": "int64",
    }


async def test_polars_batches_over_tsv(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("polars")
    lines = ngram_lines(5_000)
    (tmp_path / "a.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    source = files(tmp_path / "a.tsv", format="tsv", names=NGRAM, split_size=20_000)
    got = await aiomr.map_reduce(
        source, per_word_polars, merge, mode="batches", batch_format="polars"
    )
    assert got == plain_totals(lines)


def csv_rows(rows: int) -> list[list[str]]:
    notes = ["plain", "with, comma", 'with "quotes"', "two\nlines", "three\r\nlines\nhere", ""]
    return [[f"id{i}", notes[i % len(notes)], str(i % 13)] for i in range(rows)]


def amount_by_note(batch: Any) -> Counter[str]:
    out: Counter[str] = Counter()
    for note, amount in zip(batch["note"].to_pylist(), batch["amount"].to_pylist(), strict=True):
        out[note] += amount
    return out


async def test_csv_with_a_header_and_quoted_newlines_cut_anywhere(tmp_path: pathlib.Path) -> None:
    rows = csv_rows(3_000)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", "note", "amount"])
    writer.writerows(rows)
    (tmp_path / "notes.csv").write_text(buffer.getvalue(), encoding="utf-8")
    want: Counter[str] = Counter()
    for _, note, amount in rows:
        want[note] += int(amount)
    for split_size in (97, 1_000, 1 << 20):
        source = files(tmp_path / "notes.csv", format="csv", header=True, split_size=split_size)
        stats = aiomr.JobStats()
        got = await aiomr.map_reduce(source, amount_by_note, merge, mode="batches", stats=stats)
        assert got == want, split_size
        assert stats.records == len(rows)


def total_of_n(batch: Any) -> int:
    return int(pc.sum(batch["n"]).as_py() or 0)


async def test_json_lines(tmp_path: pathlib.Path) -> None:
    records = [{"n": i, "tag": f"t{i % 5}", "nested": {"x": i}} for i in range(4_000)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    source = files(tmp_path / "rows.jsonl", format="jsonl", split_size=10_000)
    got = await aiomr.map_reduce(source, total_of_n, operator.add, mode="batches")
    assert got == sum(r["n"] for r in records)


async def test_a_row_with_too_few_fields_is_named_as_in_record_mode(
    tmp_path: pathlib.Path,
) -> None:
    lines = ngram_lines(3_000)
    lines[2_345] = "Aardvark\t2001\t20"  # three fields of four
    path = tmp_path / "bad.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    offset = sum(len(line.encode()) + 1 for line in lines[:2_345])
    where = f"{path}:2346 (byte {offset})"
    with pytest.raises(aiomr.RecordError, match=re.escape(where)):
        await aiomr.map_reduce(
            files(path, format="tsv", names=NGRAM, split_size=10_000),
            per_word,
            merge,
            mode="batches",
        )
    with pytest.raises(aiomr.RecordError, match=re.escape(where)):
        await aiomr.map_reduce(
            files(path, format="tsv", names=NGRAM, split_size=10_000), len, operator.add
        )


@pytest.mark.parametrize("suffix", [".tsv", ".tsv.gz"])
async def test_a_malformed_row_past_the_first_block_is_named_by_its_line(
    tmp_path: pathlib.Path, suffix: str
) -> None:
    """Blocks after the first in one split: lines counted from the top of the file when it
    fails (plain), or as the decompressed blocks go by (gzip)."""
    lines = ngram_lines(400_000)  # about 8 MB: two blocks and more
    bad = 371_234
    lines[bad] = "Aardvark\t2001"
    data = ("\n".join(lines) + "\n").encode()
    path = tmp_path / f"big{suffix}"
    path.write_bytes(gzip.compress(data, 1) if suffix.endswith(".gz") else data)
    offset = sum(len(line.encode()) + 1 for line in lines[:bad])
    where = f"{path}:{bad + 1} (byte {offset})"
    with pytest.raises(aiomr.RecordError, match=re.escape(where)):
        await aiomr.map_reduce(
            files(path, format="tsv", names=NGRAM, split_size=1 << 30),
            per_word,
            merge,
            mode="batches",
            executor="inline",
        )


async def test_a_value_that_does_not_fit_its_inferred_type_names_the_block(
    tmp_path: pathlib.Path,
) -> None:
    lines = [f"w{i}\t{i}" for i in range(200_000)]  # about 2 MB: beyond the sample
    lines[-1] = "w\t1.5"
    path = tmp_path / "late.tsv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(pa.ArrowInvalid) as caught:
        await aiomr.map_reduce(
            files(path, format="tsv", names=["w", "n"]), total_of_n, operator.add, mode="batches"
        )
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert f"parsing {path} bytes [" in notes
    assert "types inferred from the top of the first file" in notes
    offset = sum(len(line) + 1 for line in lines[:-1])
    assert f"the first record it refuses: {path}:{len(lines)} (byte {offset})" in notes


@pytest.mark.parametrize("on_error", ["skip", "collect"])
async def test_records_that_do_not_parse_are_left_out_and_named(
    tmp_path: pathlib.Path, on_error: str
) -> None:
    """Rows with a field missing and values that do not fit their column's type, in several
    blocks and splits, plain and compressed: the good rows give the plain reading's
    answer, every bad one is counted and named by its line."""
    lines = ngram_lines(300_000)  # about 6 MB: two blocks and more
    bad = {5: "Aardvark\t2001\t20", 123_457: "the\t1999\tmany\t3", 299_998: "NA\tx\t1\t1"}
    for number, text in bad.items():
        lines[number] = text
    data = ("\n".join(lines) + "\n").encode()
    good = [line for number, line in enumerate(lines) if number not in bad]
    for suffix in (".tsv", ".tsv.gz"):
        path = tmp_path / f"rows{suffix}"
        path.write_bytes(gzip.compress(data, 1) if suffix.endswith(".gz") else data)
        stats = aiomr.JobStats()
        letters = tmp_path / f"dead{suffix}.jsonl"
        got = await aiomr.map_reduce(
            files(path, format="tsv", names=NGRAM, types={"word": "string"}, split_size=2 << 20),
            per_word,
            merge,
            mode="batches",
            on_error=on_error,  # type: ignore[arg-type]
            dead_letter=letters,
            stats=stats,
        )
        assert got == plain_totals(good)
        assert stats.records_skipped == len(bad)
        assert stats.records == len(lines)
        assert stats.records == stats.records_reduced + stats.records_skipped
        written = [json.loads(line) for line in letters.read_text().splitlines()]
        offsets = {n: sum(len(line.encode()) + 1 for line in lines[:n]) for n in bad}
        assert sorted(entry["location"] for entry in written) == sorted(
            f"{path}:{n + 1} (byte {offsets[n]})" for n in bad
        )
        if on_error == "collect":
            assert len(stats.bad_records) == len(bad)


async def test_every_file_must_have_the_first_files_header(tmp_path: pathlib.Path) -> None:
    (tmp_path / "a.csv").write_text("name,amount\nx,1\n")
    (tmp_path / "b.csv").write_text("name,total\ny,2\n")
    with pytest.raises(aiomr.RecordError, match=re.escape(f"{tmp_path / 'b.csv'}:1 (byte 0)")):
        await aiomr.map_reduce(
            files([tmp_path / "a.csv", tmp_path / "b.csv"], format="csv", header=True),
            len,
            operator.add,
            mode="batches",
        )


async def test_types_given_for_some_columns_hold_in_every_split(tmp_path: pathlib.Path) -> None:
    # Words that look like numbers at the top: inferred, the column would be integers.
    lines = [f"{1900 + i % 50}\t{i % 7}" for i in range(200_000)] + ["Aardvark\t5"]
    path = tmp_path / "numbers_first.tsv"
    path.write_text("\n".join(lines) + "\n")
    names = ["word", "match_count"]
    with pytest.raises(pa.ArrowInvalid):
        await aiomr.map_reduce(
            files(path, format="tsv", names=names), per_word, merge, mode="batches"
        )
    typed = files(path, format="tsv", names=names, types={"word": "string"}, split_size=100_000)
    got = await aiomr.map_reduce(typed, per_word, merge, mode="batches")
    assert got == _totals(lines)
    kinds = await aiomr.map_reduce(typed, column_types, lambda a, b: a, mode="batches")
    assert kinds == {"word": "string", "match_count": "int64"}


def _totals(lines: list[str]) -> Counter[str]:
    out: Counter[str] = Counter()
    for line in lines:
        word, count = line.split("\t")
        out[word] += int(count)
    return out


async def test_only_the_columns_asked_for_are_read(tmp_path: pathlib.Path) -> None:
    lines = ngram_lines(5_000)
    path = tmp_path / "a.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    source = files(path, format="tsv", names=NGRAM, columns=["word", "match_count"])
    kinds = await aiomr.map_reduce(source, column_types, lambda a, b: a, mode="batches")
    assert kinds == {"word": "string", "match_count": "int64"}
    assert await aiomr.map_reduce(source, per_word, merge, mode="batches") == plain_totals(lines)
    with pytest.raises(ValueError, match="no column 'count' among names="):
        files(path, format="tsv", names=NGRAM, columns=["count"])
    csv_path = tmp_path / "a.csv"
    csv_path.write_text("name,amount\nx,1\n")
    with pytest.raises(ValueError, match="no column 'total' to read; the columns are name, amount"):
        await aiomr.map_reduce(
            files(csv_path, format="csv", header=True, columns=["total"]),
            len,
            operator.add,
            mode="batches",
        )


def test_types_need_a_format(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="types= names the columns"):
        files(tmp_path, types={"a": "string"})
    with pytest.raises(TypeError, match="types must map column names to Arrow types"):
        files(tmp_path, format="tsv", types={1: "string"})  # type: ignore[dict-item]


async def test_plain_lines_have_no_columns(tmp_path: pathlib.Path) -> None:
    (tmp_path / "a.txt").write_text("x\n")
    with pytest.raises(ValueError, match="mode='batches' needs a columnar source"):
        await aiomr.map_reduce(files(tmp_path / "a.txt"), len, operator.add, mode="batches")


# A leading letter keeps the column a string column: types are inferred, as pyarrow does.
WORDS = st.text(
    alphabet=st.characters(blacklist_characters="\t\n\r", blacklist_categories=("Cs",)),
    max_size=8,
).map(lambda text: "w" + text)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.tuples(WORDS, st.integers(-(10**6), 10**6)), min_size=1, max_size=200),
    split_size=st.integers(1, 3_000),
)
async def test_any_tsv_any_cut_same_totals_as_a_plain_reading(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[str, int]], split_size: int
) -> None:
    path = tmp_path_factory.mktemp("tsv") / "random.tsv"
    path.write_text("".join(f"{w}\t{n}\n" for w, n in rows), encoding="utf-8")
    want: Counter[str] = Counter()
    for word, n in rows:
        want[word] += n

    got = await aiomr.map_reduce(
        files(path, format="tsv", names=["word", "match_count"], split_size=split_size),
        per_word,
        merge,
        mode="batches",
        executor="thread",
    )
    assert dict(got) == dict(want)
