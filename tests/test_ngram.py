"""The 1-gram workload: the generator writes the real format, and every way of
``examples/ngram.py`` finds the totals a plain one-process loop finds.

The generator is imported from ``examples/ngram_data.py``; ``examples/ngram.py`` runs as users
run it, as a script in a fresh process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest

import aiomr
import aiomr.sources

ROOT = pathlib.Path(aiomr.__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SAMPLE_BYTES = 3_000_000


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module (its ``__main__`` block does not run)."""
    spec = importlib.util.spec_from_file_location(f"aiomr_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_script(name: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8", **env},
        check=False,
    )


def naive_totals(path: pathlib.Path) -> dict[str, int]:
    """The book's single-process loop: read every line, split it, add to a dict."""
    totals: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            word, _year, match_count, _volume_count = line.rstrip("\n").split("\t")
            totals[word] = totals.get(word, 0) + int(match_count)
    return totals


@pytest.fixture(scope="module")
def ngram_data() -> ModuleType:
    return load_example("ngram_data")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory, ngram_data: ModuleType) -> pathlib.Path:
    path = tmp_path_factory.mktemp("ngrams") / "sample.tsv"
    ngram_data.generate(path, SAMPLE_BYTES, seed=0)
    return path


@pytest.fixture(scope="module")
def sample_info(sample: pathlib.Path, ngram_data: ModuleType) -> Any:
    # Generating again into another file also proves that a second run gives the same bytes.
    other = sample.with_name("again.tsv")
    info = ngram_data.generate(other, SAMPLE_BYTES, seed=0)
    assert other.read_bytes() == sample.read_bytes()
    other.unlink()
    return info


@pytest.fixture(scope="module")
def expected(sample: pathlib.Path) -> dict[str, int]:
    return naive_totals(sample)


# The generator --------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes(
    tmp_path: pathlib.Path, ngram_data: ModuleType
) -> None:
    first, again, other = tmp_path / "a.tsv", tmp_path / "b.tsv", tmp_path / "c.tsv"
    ngram_data.generate(first, 1_000_000, seed=1)
    ngram_data.generate(again, 1_000_000, seed=1)
    ngram_data.generate(other, 1_000_000, seed=2)
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()


def test_the_command_writes_the_same_bytes_whatever_the_hash_seed(
    tmp_path: pathlib.Path, ngram_data: ModuleType
) -> None:
    info = ngram_data.generate(tmp_path / "here.tsv", 500_000, seed=5)
    there = str(tmp_path / "there.tsv")
    done = run_script("ngram_data.py", there, "--size", "500KB", "--seed", "5", PYTHONHASHSEED="1")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "there.tsv").read_bytes() == (tmp_path / "here.tsv").read_bytes()
    assert f"Aardvark has appeared {info.totals['Aardvark']} times" in done.stdout.splitlines()


def test_every_line_is_well_formed_and_in_order(sample: pathlib.Path, sample_info: Any) -> None:
    data = sample.read_bytes()
    assert data.endswith(b"\n")
    previous: tuple[bytes, int] = (b"", 0)
    lines = matches = 0
    for line in data[:-1].split(b"\n"):
        fields = line.split(b"\t")
        assert len(fields) == 4, line
        word, year_text, match_text, volume_text = fields
        year, match_count, volume_count = int(year_text), int(match_text), int(volume_text)
        assert word.decode("utf-8")
        assert not any(c in word for c in b" \r\x00")
        assert [year_text, match_text, volume_text] == [
            str(n).encode() for n in (year, match_count, volume_count)
        ]
        assert 1500 <= year <= 2008
        assert 1 <= volume_count <= match_count
        # Sorted by the word's UTF-8 bytes, then year; each word's years are one run.
        if word == previous[0]:
            assert year == previous[1] + 1, line
        else:
            assert word > previous[0], line
        previous = (word, year)
        lines += 1
        matches += match_count
    assert data == b"".join(sorted(data.splitlines(keepends=True)))  # LC_ALL=C sort order
    assert sample_info.lines == lines
    assert sample_info.total_match_count == matches
    assert sample_info.size_bytes == len(data)


def test_the_reported_figures_are_the_files(
    sample_info: Any, expected: dict[str, int], ngram_data: ModuleType
) -> None:
    info = sample_info
    assert info.words == len(expected)
    assert set(info.totals) == set(ngram_data.REAL_WORDS)
    for word, total in info.totals.items():
        assert expected[word] == total, word
    # About the size asked for, with ~200 k words a gigabyte.
    assert abs(info.size_bytes - SAMPLE_BYTES) < 0.03 * SAMPLE_BYTES
    assert 150 * 3 <= info.words <= 250 * 3


def test_the_vocabulary_has_the_shapes_of_real_ngram_data(
    sample: pathlib.Path, expected: dict[str, int], ngram_data: ModuleType
) -> None:
    words = list(expected)
    assert set(ngram_data.REAL_WORDS) <= set(words)
    lowercase = {w for w in words if w.isalpha() and w.islower()}
    assert any(w.capitalize() in expected for w in lowercase)
    assert any(w[0].isupper() and w[1:].islower() for w in words)
    assert any("'" in w for w in words)
    assert any("-" in w for w in words)
    assert any(w.isdigit() for w in words)
    assert any(w[0].isdigit() and not w.isdigit() for w in words)  # 1950s, 21st, 3.14
    assert any(w.endswith(".") for w in words)
    assert any(not w.isascii() for w in words)
    # Zipf: a few words carry most of the counts; the commonest is "the".
    totals = sorted(expected.values(), reverse=True)
    assert max(expected, key=expected.__getitem__) == "the"
    assert totals[0] > 100 * statistics.median(totals)
    assert sum(totals[: len(totals) // 10]) > sum(totals) / 2
    # Frequent words appear over longer runs of years than rare ones.
    runs: dict[str, int] = {}
    with open(sample, encoding="utf-8") as f:
        for line in f:
            word = line.split("\t", 1)[0]
            runs[word] = runs.get(word, 0) + 1
    by_frequency = sorted(words, key=expected.__getitem__, reverse=True)
    tenth = len(words) // 10
    common = statistics.mean(runs[w] for w in by_frequency[:tenth])
    rare = statistics.mean(runs[w] for w in by_frequency[-tenth:])
    assert common > rare * 1.3


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("10MB", 10_000_000),
        ("1GB", 1_000_000_000),
        ("2.5G", 2_500_000_000),
        ("512KiB", 512 * 1024),
        ("1gib", 1 << 30),
        ("1000", 1000),
    ],
)
def test_sizes_read_as_the_command_line_writes_them(
    ngram_data: ModuleType, text: str, size: int
) -> None:
    assert ngram_data.parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "MB", "1XB", "1iB", "-5MB"])
def test_a_size_that_is_not_one_is_refused(ngram_data: ModuleType, text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        ngram_data.parse_size(text)


# The job --------------------------------------------------------------------------------------


def test_count_blocks_reads_blocks_with_and_without_a_final_newline() -> None:
    ngram = load_example("ngram")
    blocks = [
        b"Aardvark\t1900\t3\t2\nAardvark\t1901\t4\t1\nzebra\t2000\t7\t7\n",
        b"zebra\t2001\t5\t5",
    ]
    assert ngram.count_blocks(blocks) == {b"Aardvark": 7, b"zebra": 12}
    assert ngram.merge({b"a": 1}, {b"a": 2, b"b": 3}) == {b"a": 3, b"b": 3}
    with pytest.raises(aiomr.RecordError, match=r"^expected 4 fields, found 3$") as caught:
        ngram.count_blocks([b"Aardvark\t1900\t3\n"])
    assert caught.value.offset == 0


# Three fields, then five: as many fields as two good lines, every field after them shifted.
SHIFTED = b"Aardvark\t2000\t10\t3\nAardvark\t2001\t20\nAardvark\t2002\t30\t5\nZebra\t2000\t7\t1\n"
SPACES = b"Aardvark\t2000\t10\t3\nAardvark 2001 20 4\nZebra\t2000\t7\t1\n"


@pytest.mark.parametrize(
    ("block", "offset", "message"),
    [
        (SHIFTED, 19, "expected 4 fields, found 3"),
        (SPACES, 19, "expected 4 fields, found 1"),
        (b"a\t1\t2\t3\nb\t1\tx\t3\n", 8, "match_count b'x' is not a number"),
        (b"a\t1\t2\t3\n\n", 8, "expected 4 fields, found 1"),
    ],
)
def test_count_blocks_refuses_a_block_with_a_line_that_is_not_a_1gram_line(
    block: bytes, offset: int, message: str
) -> None:
    ngram = load_example("ngram")
    with pytest.raises(aiomr.RecordError) as caught:
        ngram.count_blocks([block])
    assert str(caught.value) == message
    assert caught.value.offset == offset


@pytest.mark.parametrize("way", ["split", "idiomatic", "lines", "columnar"])
def test_a_shifted_row_fails_every_way_with_its_file_and_line(
    tmp_path: pathlib.Path, way: str
) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(SHIFTED)
    done = run_script("ngram.py", str(bad), "--workers", "2", "--way", way)
    assert done.returncode == 1, done.stdout
    assert done.stdout == ""
    where = f"{bad}:2 (byte 19)" if way != "lines" else f"{bad}:2"
    assert done.stderr == f"ngram: {where}: expected 4 fields, found 3\n"


@pytest.mark.parametrize("way", ["split", "idiomatic", "lines", "columnar"])
def test_every_way_prints_the_exact_totals(
    sample: pathlib.Path, expected: dict[str, int], way: str
) -> None:
    for word in ("Aardvark", "Zürich"):
        done = run_script("ngram.py", str(sample), "--word", word, "--workers", "2", "--way", way)
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"{word} has appeared {expected[word]} times\n"
        assert "MB/s" in done.stderr
        assert f"{len(expected):,} distinct words" in done.stderr


def test_the_columnar_way_reads_the_same_rows_as_parquet(
    expected: dict[str, int], tmp_path: pathlib.Path
) -> None:
    pytest.importorskip("pyarrow", reason="the arrow extra is not installed")
    tsv, table = tmp_path / "sample.tsv", tmp_path / "sample.parquet"
    done = run_script(
        "ngram_data.py",
        str(tsv),
        "--size",
        f"{SAMPLE_BYTES}",
        "--seed",
        "0",
        "--parquet",
        str(table),
    )
    assert done.returncode == 0, done.stderr
    assert f"{table}: the same " in done.stdout
    for word in ("Aardvark", "Zürich"):
        done = run_script("ngram.py", str(table), "--word", word, "--way", "columnar")
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"{word} has appeared {expected[word]} times\n"


def test_a_word_that_never_appears_has_appeared_zero_times(sample: pathlib.Path) -> None:
    done = run_script("ngram.py", str(sample), "--word", "Snark", "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Snark has appeared 0 times\n"


def test_a_missing_file_is_one_line_and_status_2(tmp_path: pathlib.Path) -> None:
    done = run_script("ngram.py", str(tmp_path / "missing.tsv"), "--workers", "2")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "missing.tsv" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("way", ["split", "idiomatic", "columnar"])
def test_a_malformed_line_is_one_line_and_status_1(tmp_path: pathlib.Path, way: str) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("Aardvark\t1900\t3\t2\nAardvark\t1901\t4\n")
    done = run_script("ngram.py", str(bad), "--workers", "2", "--way", way)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


# `aiomr ngram` and the library call it makes ---------------------------------------------------


def test_the_command_fails_on_a_shifted_row_with_its_file_and_line(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(SHIFTED)
    done = subprocess.run(
        [sys.executable, "-m", "aiomr", "ngram", str(bad), "--word", "Zebra", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert f"RecordError: {bad}:2 (byte 19): expected 4 " in done.stderr


def test_count_ngram_blocks_refuses_what_is_not_a_1gram_line() -> None:
    from aiomr.cli import count_ngram_blocks

    assert count_ngram_blocks([b"a\t1\t2\t3\nb\t1\t5\t3", b"a\t2\t4\t1\n"]) == {b"a": 6, b"b": 5}
    for block, offset in [(SHIFTED, 19), (SPACES, 19), (b"a\t1\tx\t3\n", 0)]:
        with pytest.raises(aiomr.RecordError) as caught:
            count_ngram_blocks([block])
        assert caught.value.offset == offset


def ngram_source(path: pathlib.Path) -> Any:
    """What ``aiomr ngram`` reads: 1-gram files, every line checked to have four fields."""
    import aiomr.sources

    return aiomr.sources.files([path], encoding=None, format="tsv", fields=4)


@pytest.mark.parametrize("checked", [True, False])
async def test_the_ngram_job_raises_at_a_shifted_row(
    engine: aiomr.Engine, tmp_path: pathlib.Path, checked: bool
) -> None:
    from aiomr.cli import count_ngram_blocks, merge_totals

    path = tmp_path / "bad.tsv"
    path.write_bytes(SHIFTED)
    # Checked by the reader, or (a source without format=) by count_ngram_blocks itself.
    source = ngram_source(path) if checked else aiomr.sources.files(path, encoding=None)
    with pytest.raises(aiomr.RecordError) as caught:
        await engine.map_reduce(source, count_ngram_blocks, merge_totals, mode="blocks", initial={})
    message = "expected 4 fields, found 3" if checked else "expected 4 tab-separated fields"
    assert str(caught.value).startswith(f"{path}:2 (byte 19): {message}")
    assert caught.value.location == f"{path}:2 (byte 19)"


@pytest.mark.parametrize("on_error", ["skip", "collect"])
async def test_the_ngram_job_skips_a_shifted_row_and_counts_the_others_right(
    engine: aiomr.Engine, tmp_path: pathlib.Path, on_error: str
) -> None:
    from aiomr.cli import count_ngram_blocks, merge_totals

    path = tmp_path / "bad.tsv"
    path.write_bytes(SHIFTED)
    dead = tmp_path / "dead.jsonl"
    stats = aiomr.JobStats()
    totals = await engine.map_reduce(
        ngram_source(path),
        count_ngram_blocks,
        merge_totals,
        mode="blocks",
        initial={},
        on_error=on_error,  # type: ignore[arg-type]
        dead_letter=dead,
        stats=stats,
    )
    assert totals == {b"Aardvark": 40, b"Zebra": 7}
    assert (stats.records, stats.records_reduced, stats.records_skipped) == (4, 3, 1)
    bad = aiomr.BadRecord(
        f"{path}:2 (byte 19)",
        repr(b"Aardvark\t2001\t20"),
        "RecordError: expected 4 fields, found 3",
    )
    assert stats.bad_sample == [bad]
    assert stats.bad_records == ([bad] if on_error == "collect" else [])
    assert [json.loads(line) for line in dead.read_text().splitlines()] == [
        {"location": bad.location, "record": bad.record, "error": bad.error}
    ]
    assert stats.bytes_done == stats.bytes_total == len(SHIFTED)
