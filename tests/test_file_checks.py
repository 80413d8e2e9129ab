"""File sources check what they read: blocks of the wrong shape, files that changed under
the job, compressed data cut short. Every failure names the file; none is a short answer."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import operator
import os
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aiomr
import aiomr.sources
from aiomr.sources._file_blocks import FieldCheck
from aiomr.sources._file_splits import SplitReader, plan_splits

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
}


def write(path: pathlib.Path, content: bytes) -> str:
    compress = COMPRESSORS.get(path.suffix)
    path.write_bytes(compress(content) if compress else content)
    return str(path)


def accounted(stats: aiomr.JobStats, records: int) -> None:
    assert stats.records == records
    assert stats.records == stats.records_reduced + stats.records_skipped


# Mappers that run in the workers.


def lines_of(blocks: Iterator[bytes]) -> list[bytes]:
    """The lines of the blocks, in order."""
    out: list[bytes] = []
    for block in blocks:
        out.extend(block.removesuffix(b"\n").split(b"\n"))
    return out


def third_fields(blocks: Iterator[bytes]) -> list[bytes]:
    """The third field of every line: the loop that a short row would shift."""
    out: list[bytes] = []
    for block in blocks:
        fields = block.replace(b"\n", b"\t").split(b"\t")
        out.extend(fields[2::3])
    return out


def refuse_x(blocks: Iterator[bytes]) -> int:
    """Count lines; raise a RecordError at the first line that starts with ``x``."""
    count = 0
    for block in blocks:
        at = block.find(b"x")
        if at == 0 or (at > 0 and block[at - 1] == 10):
            raise aiomr.RecordError("a line starting with x", offset=at)
        count += block.count(b"\n")
    return count


def first_block_only(blocks: Iterator[bytes]) -> int:
    return next(iter(blocks)).count(b"\n")


def one(record: Any) -> int:
    return 1


def as_list(record: Any) -> list[Any]:
    return [record]


# --- the block check -------------------------------------------------------------------------

LINE_FIELDS = st.lists(st.lists(st.binary(max_size=4).map(lambda b: b.replace(b"\t", b"").replace(b"\n", b"")), min_size=1, max_size=5), max_size=30)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(rows=LINE_FIELDS, fields=st.integers(1, 5), final_newline=st.booleans())
def test_the_block_check_accepts_exactly_the_blocks_whose_lines_all_have_the_fields(
    rows: list[list[bytes]], fields: int, final_newline: bool
) -> None:
    if not rows:
        return
    if rows[-1] == [b""]:  # an empty last line exists only with its newline
        final_newline = True
    block = b"\n".join(b"\t".join(row) for row in rows) + (b"\n" if final_newline else b"")
    check = FieldCheck(fields)
    good = all(len(row) == fields for row in rows)
    assert check.lines(block) == (len(rows) if good else -1)
    bad = [(number, found) for number, _, _, found in check.bad_lines(block)]
    assert bad == [(i, len(row)) for i, row in enumerate(rows) if len(row) != fields]


def shifted_tsv(tmp_path: pathlib.Path, rows: int = 3000) -> tuple[str, list[bytes], list[int]]:
    """A TSV file of 3-field rows, some with 2 or 4 fields; its good lines and bad line numbers."""
    lines, good, bad = [], [], []
    for n in range(1, rows + 1):
        if n % 500 == 7:
            line = b"short%d\t%d" % (n, n)
            bad.append(n)
        elif n % 500 == 8:
            line = b"long%d\t%d\t%d\textra" % (n, n, n)
            bad.append(n)
        else:
            line = b"row%d\t%d\t%d" % (n, n, n * 10)
            good.append(line)
        lines.append(line)
    return write(tmp_path / "rows.tsv", b"\n".join(lines) + b"\n"), good, bad


def line_starts(path: str) -> list[int]:
    content = pathlib.Path(path).read_bytes()
    return [0, *(i + 1 for i, b in enumerate(content) if b == 10)]


async def test_a_blocks_mapper_gets_checked_blocks_and_a_bad_line_is_named(
    engine: aiomr.Engine, tmp_path: pathlib.Path
) -> None:
    path, _, bad = shifted_tsv(tmp_path)
    source = aiomr.sources.files(path, encoding=None, format="tsv", fields=3, split_size=9000)
    with pytest.raises(aiomr.RecordError) as caught:
        await engine.map_reduce(source, third_fields, operator.add, mode="blocks")
    # Splits run in parallel: the first to fail names its first bad line.
    starts = line_starts(path)
    where = caught.value.location
    assert where in {f"{path}:{n} (byte {starts[n - 1]})" for n in bad}
    assert str(caught.value) in {
        f"{where}: expected 3 fields, found 2",
        f"{where}: expected 3 fields, found 4",
    }


@pytest.mark.parametrize("on_error", ["skip", "collect"])
async def test_bad_lines_are_cut_out_of_blocks_and_never_shift_the_others(
    engine: aiomr.Engine, tmp_path: pathlib.Path, on_error: str
) -> None:
    path, good, bad = shifted_tsv(tmp_path)
    source = aiomr.sources.files(path, encoding=None, format="tsv", fields=3, split_size=9000)
    stats = aiomr.JobStats()
    dead = tmp_path / "dead.jsonl"
    thirds = await engine.map_reduce(
        source,
        third_fields,
        operator.add,
        mode="blocks",
        ordered=True,
        on_error=on_error,  # type: ignore[arg-type]
        dead_letter=dead,
        stats=stats,
    )
    assert thirds == [line.split(b"\t")[2] for line in good]
    accounted(stats, len(good) + len(bad))
    assert stats.records_skipped == len(bad)
    starts = line_starts(path)
    written = [json.loads(line) for line in dead.read_text().splitlines()]
    assert sorted(w["location"] for w in written) == sorted(
        f"{path}:{n} (byte {starts[n - 1]})" for n in bad
    )
    assert {w["error"] for w in written} == {
        "RecordError: expected 3 fields, found 2",
        "RecordError: expected 3 fields, found 4",
    }
    assert len(stats.bad_records) == (len(bad) if on_error == "collect" else 0)
    assert stats.bytes_done == stats.bytes_total == os.path.getsize(path)


async def test_a_record_error_of_a_blocks_mapper_is_named_by_file_line_and_byte(
    engine: aiomr.Engine, tmp_path: pathlib.Path
) -> None:
    lines = [b"line %d" % n for n in range(1, 40_001)]
    lines[30_000] = b"x marks line 30001"  # several blocks into the second split
    path = write(tmp_path / "text.txt", b"\n".join(lines) + b"\n")
    source = aiomr.sources.files(path, split_size=200_000)
    with pytest.raises(aiomr.RecordError) as caught:
        await engine.map_reduce(source, refuse_x, operator.add, mode="blocks")
    where = f"{path}:30001 (byte {line_starts(path)[30_000]})"
    assert str(caught.value) == f"{where}: a line starting with x"
    assert caught.value.location == where


async def test_blocks_mode_with_a_header_cuts_it_and_checks_its_field_count(
    engine: aiomr.Engine, tmp_path: pathlib.Path
) -> None:
    body = b"".join(b"w%d\t%d\t%d\n" % (n, n, n) for n in range(2000))
    path = write(tmp_path / "with-header.tsv", b"word\tyear\tcount\n" + body)
    source = aiomr.sources.files(path, encoding=None, format="tsv", header=True, split_size=5000)
    got = await engine.map_reduce(source, lines_of, operator.add, mode="blocks", ordered=True)
    assert got == body.removesuffix(b"\n").split(b"\n")
    short = write(tmp_path / "short.tsv", b"word\tyear\tcount\n" + body + b"w\t1\n")
    with pytest.raises(aiomr.RecordError, match=r":2002 \(byte \d+\): expected 3 fields, found 2"):
        await engine.map_reduce(
            aiomr.sources.files(short, encoding=None, format="tsv", header=True, split_size=5000),
            lines_of,
            operator.add,
            mode="blocks",
        )


async def test_blocks_mode_refuses_what_its_reader_cannot_check(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path / "a.csv", b"a,b\n")
    for format in ("csv", "jsonl"):
        source = aiomr.sources.files(path, format=format)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=rf"^mode='blocks' .* format='{format}' records"):
            await aiomr.map_reduce(source, lines_of, operator.add, mode="blocks")
    for source in (aiomr.sources.files(path), aiomr.sources.files(path, format="tsv")):
        with pytest.raises(ValueError, match=r"^on_error='skip' with mode='blocks' needs a"):
            await aiomr.map_reduce(source, lines_of, operator.add, mode="blocks", on_error="skip")
    with pytest.raises(ValueError, match=r"^on_error='skip' and 'collect' need mode='record'"):
        await aiomr.map_reduce(
            aiomr.sources.files(path, format="tsv", fields=2),
            len,
            operator.add,
            mode="chunk",
            on_error="skip",  # type: ignore[call-overload]
        )


# --- files that change under the job -----------------------------------------------------------


def numbered(count: int) -> bytes:
    return b"".join(b"%08d\n" % n for n in range(count))


def read_all_splits(paths: list[str], planned: list[Any]) -> list[Any]:
    reader = SplitReader("utf-8", "strict", None)
    return [record for split in planned for record in reader.records(split)]


def test_a_file_truncated_after_planning_is_an_error_naming_the_sizes(
    tmp_path: pathlib.Path,
) -> None:
    path = write(tmp_path / "data.txt", numbered(1000))  # 9000 bytes
    planned = plan_splits([path], 4000)
    os.truncate(path, 5000)
    with pytest.raises(aiomr.BrokenInputError) as caught:
        read_all_splits([path], planned)
    assert str(caught.value) == (
        f"{path}: expected 9000 bytes as planned, found 5000: "
        "the file shrank after the job planned its splits"
    )


def test_a_file_replaced_or_rewritten_after_planning_is_an_error(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path / "data.txt", numbered(1000))
    planned = plan_splits([path], 4000)
    other = write(tmp_path / "other.txt", numbered(1000)[::-1])
    os.replace(other, path)
    with pytest.raises(aiomr.BrokenInputError, match=r"^.*data\.txt: replaced by another file"):
        read_all_splits([path], planned)

    planned = plan_splits([path], 4000)
    stat = os.stat(path)
    with open(path, "r+b") as f:  # same size, same inode, new bytes
        f.write(b"99999999")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(aiomr.BrokenInputError) as caught:
        read_all_splits([path], planned)
    assert str(caught.value) == (
        f"{path}: modified after the job planned its splits (same size, 9000 bytes, "
        "but a new modification time)"
    )


@pytest.mark.parametrize("suffix", ["", *COMPRESSORS])
def test_a_file_that_grew_after_planning_is_read_as_planned(
    tmp_path: pathlib.Path, suffix: str
) -> None:
    path = write(tmp_path / f"data.txt{suffix}", numbered(1000))
    planned = plan_splits([path], 4000)
    with open(path, "ab") as f:  # compressed: one more stream, appended whole
        appended = numbered(5)
        f.write(COMPRESSORS[suffix](appended) if suffix else appended)
    assert read_all_splits([path], planned) == [f"{n:08d}" for n in range(1000)]


def truncate_then_count(path: str, line: str) -> int:
    """Cut the file to a third the first time a line is mapped (in the worker reading it)."""
    if line == "00000000":
        os.truncate(path, os.path.getsize(path) // 3)
    return 1


async def test_a_file_that_shrinks_while_a_split_reads_it_fails_the_job(
    engine: aiomr.Engine, tmp_path: pathlib.Path
) -> None:
    import functools

    path = write(tmp_path / "data.txt", numbered(100_000))  # 900 KB: many blocks
    stats = aiomr.JobStats()
    with pytest.raises(aiomr.BrokenInputError) as caught:
        await engine.map_reduce(
            aiomr.sources.files(path),
            functools.partial(truncate_then_count, path),
            operator.add,
            stats=stats,
        )
    assert str(caught.value).startswith(f"{path}: expected 900000 bytes as planned, found ")
    assert "it shrank while the job read it" in str(caught.value)
    assert stats.bytes_done == 0


async def test_bytes_done_counts_what_a_blocks_mapper_read(
    engine: aiomr.Engine, tmp_path: pathlib.Path
) -> None:
    path = write(tmp_path / "data.txt", numbered(50_000))  # 450 KB in one split: 7 blocks
    stats = aiomr.JobStats()
    source = aiomr.sources.files(path, split_size=10**6)
    first = await engine.map_reduce(
        source, first_block_only, operator.add, mode="blocks", stats=stats
    )
    assert stats.records == first < 50_000
    assert stats.bytes_done == 9 * first < stats.bytes_total == 450_000


# --- compressed data cut short -------------------------------------------------------------


@pytest.mark.parametrize("suffix", list(COMPRESSORS))
@pytest.mark.parametrize("kind", ["files", "lines"])
async def test_truncated_compressed_data_names_the_file_and_the_offset_reached(
    engine: aiomr.Engine, tmp_path: pathlib.Path, suffix: str, kind: str
) -> None:
    content = b"".join(b"line %d of a compressed file\n" % n for n in range(200_000))
    path = tmp_path / f"data.txt{suffix}"
    packed = COMPRESSORS[suffix](content)
    path.write_bytes(packed[: len(packed) // 2])
    make = aiomr.sources.files if kind == "files" else aiomr.sources.lines
    with pytest.raises(aiomr.BrokenInputError) as caught:
        await engine.map_reduce(make(path), one, operator.add)
    message = str(caught.value)
    prefix = f"{path}: the compressed data is cut short or corrupt after "
    assert message.startswith(prefix)
    reached = int(message.removeprefix(prefix).split()[0])
    assert 0 < reached < len(content)
    assert "bytes of decompressed output: " in message


async def test_a_streamed_file_that_shrinks_while_read_is_an_error(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path / "data.txt", numbered(100_000))
    source = aiomr.sources.lines(path, block_size=4096)
    batch, _ = await source.read_batch(10)
    assert len(batch) == 10
    os.truncate(path, 10_000)

    async def read_on() -> None:
        while (await source.read_batch(1000))[0]:
            pass

    with pytest.raises(aiomr.BrokenInputError) as caught:
        await read_on()
    assert str(caught.value) == (
        f"{path}: expected 900000 bytes (its size when opened), found 10000: "
        "it shrank while being read"
    )
    await source.aclose()


async def test_a_streamed_file_is_read_up_to_its_size_when_opened(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path / "data.txt", numbered(1000))
    source = aiomr.sources.lines(path, block_size=100)
    batch, _ = await source.read_batch(1)
    pathlib.Path(path).write_bytes(numbered(1000) + b"half-written")  # appended, in place
    rest = []
    while more := (await source.read_batch(1000))[0]:
        rest.extend(more)
    assert batch + rest == [b"%08d" % n for n in range(1000)]
    await source.aclose()


def pair(line: str) -> list[tuple[str, int]]:
    return [(line[:2], 1)]


@pytest.mark.parametrize("broken", ["truncated", "malformed"])
@pytest.mark.parametrize("kind", ["files", "lines"])
async def test_a_key_based_job_that_fails_on_its_input_leaves_no_file_behind(
    engine: aiomr.Engine, tmp_path: pathlib.Path, broken: str, kind: str
) -> None:
    good = write(tmp_path / "good.txt", numbered(50_000))  # several map tasks first
    if broken == "truncated":
        packed = gzip.compress(numbered(200_000))
        bad = tmp_path / "bad.txt.gz"
        bad.write_bytes(packed[: len(packed) // 2])
        error: type[Exception] = aiomr.BrokenInputError
    else:
        bad = tmp_path / "bad.txt"
        bad.write_bytes(numbered(1000) + b"\xff\n")
        error = aiomr.RecordError
    make = aiomr.sources.files if kind == "files" else aiomr.sources.lines
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    with pytest.raises(error):
        await engine.run_by_key(
            make([good, str(bad)]),
            aiomr.ReduceByKey(pair, operator.add),
            temp_dir=str(jobs),
            chunk_size=5000,
        )
    assert list(jobs.iterdir()) == []
