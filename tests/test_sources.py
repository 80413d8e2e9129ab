"""File sources: path expansion, lines streamed by the caller, byte-range splits read by workers."""

from __future__ import annotations

import asyncio
import bz2
import collections
import contextlib
import gzip
import io
import itertools
import json
import lzma
import operator
import os
import pathlib
import signal
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiomr
import aiomr.sources
from aiomr.executors import ProcessExecutor
from aiomr.sources._file_splits import (
    Segment,
    Split,
    SplitCutter,
    SplitReader,
    plan_splits,
    read_blocks,
)
from aiomr.sources._lines import DEFAULT_BLOCK_SIZE, LineSource
from aiomr.sources._paths import expand_paths

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
}


# --- helpers ---------------------------------------------------------------------------------


def write(path: pathlib.Path, content: bytes) -> str:
    """Write ``content`` to ``path``, compressed when its suffix says so; return the path."""
    compress = COMPRESSORS.get(path.suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(compress(content) if compress else content)
    return str(path)


def own_lines(content: bytes) -> list[bytes]:
    """The lines of ``content`` as Python's binary reader splits them, without ``\\n``."""
    return [line[:-1] if line.endswith(b"\n") else line for line in io.BytesIO(content)]


def is_open(path: str) -> bool:
    """Whether this process holds ``path`` open."""
    real = os.path.realpath(path)
    return any(os.path.realpath(f.path) == real for f in psutil.Process().open_files())


async def read_all(source: LineSource[Any], limit: int = 1000) -> list[Any]:
    """Every line of ``source``, read the way jobs read it (whole batches of raw records),
    then decoded and parsed the way the workers do it."""
    out: list[Any] = []
    while True:
        batch, _ = await source.read_batch(limit)
        if not batch:
            return out
        out.extend(source.parser.parse_many(batch) if source.parser is not None else batch)


class Hung(Exception):
    """The code under test kept the CPU busy past its deadline."""


@contextlib.contextmanager
def cpu_deadline(seconds: float) -> Iterator[None]:
    """Raise `Hung` in the main thread once the process has used ``seconds`` of CPU time.

    A busy loop on the event loop never yields, so no asyncio timeout can stop it; a signal
    handler runs between bytecodes and can. SIGVTALRM leaves pytest-timeout's SIGALRM alone.
    """

    def on_timer(signum: int, frame: object) -> None:
        raise Hung(f"still running after {seconds} s of CPU time")

    previous = signal.signal(signal.SIGVTALRM, on_timer)
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)


# Mappers that run in the workers.


def as_list(record: Any) -> list[Any]:
    return [record]


def pair_with_one(line: str) -> list[tuple[str, int]]:
    return [(line, 1)]


def lines_of_blocks(blocks: Iterator[bytes]) -> list[str]:
    out: list[str] = []
    for block in blocks:
        assert block, "an empty block"
        body = block[:-1] if block.endswith(b"\n") else block
        out.extend(body.decode("utf-8").split("\n"))
    return out


def count_newlines(blocks: Iterator[bytes]) -> int:
    return sum(block.count(b"\n") for block in blocks)


def one(record: Any) -> int:
    return 1


# --- expand_paths ----------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: pathlib.Path) -> pathlib.Path:
    """A small directory tree with nested, hidden and differently suffixed files."""
    for name in [
        "b.txt",
        "a.txt",
        "c.log",
        ".hidden.txt",
        "sub/d.txt",
        "sub/deeper/e.txt",
        ".git/config.txt",
        "sub/.secret/f.txt",
    ]:
        write(tmp_path / name, b"x\n")
    return tmp_path


def test_expand_a_single_file(tree: pathlib.Path) -> None:
    assert expand_paths(str(tree / "a.txt")) == [str(tree / "a.txt")]
    assert expand_paths(tree / "a.txt") == [str(tree / "a.txt")]  # os.PathLike


def test_expand_a_directory_recursively_skipping_hidden_files(tree: pathlib.Path) -> None:
    found = expand_paths(tree)
    assert set(found) == {
        str(tree / name) for name in ["a.txt", "b.txt", "c.log", "sub/d.txt", "sub/deeper/e.txt"]
    }
    assert len(found) == len(set(found))
    # Stable: the files of each directory in name order.
    top = [p for p in found if os.path.dirname(p) == str(tree)]
    assert top == sorted(top)
    assert expand_paths(tree) == found


def test_a_directory_expands_sorted_like_its_recursive_glob(tmp_path: pathlib.Path) -> None:
    for name in ["z.txt", "a/x.txt"]:
        write(tmp_path / name, b"x\n")
    found = expand_paths(tmp_path)
    assert found == sorted(found)
    assert found == expand_paths(str(tmp_path / "**"))


def test_expand_globs(tree: pathlib.Path) -> None:
    assert expand_paths(str(tree / "*.txt")) == [str(tree / "a.txt"), str(tree / "b.txt")]
    assert expand_paths(str(tree / "**" / "*.txt")) == sorted(
        str(tree / name) for name in ["a.txt", "b.txt", "sub/d.txt", "sub/deeper/e.txt"]
    )
    assert expand_paths(str(tree / "?.log")) == [str(tree / "c.log")]
    assert expand_paths(str(tree / "[ab].txt")) == [str(tree / "a.txt"), str(tree / "b.txt")]
    # A glob that matches only directories matches no file.
    with pytest.raises(FileNotFoundError, match="no file matches this pattern"):
        expand_paths(str(tree / "s*"))


def test_a_path_with_glob_characters_that_exists_is_taken_literally(
    tmp_path: pathlib.Path,
) -> None:
    literal = write(tmp_path / "data[1].txt", b"x\n")
    write(tmp_path / "data1.txt", b"x\n")
    assert expand_paths(literal) == [literal]


def test_expand_several_paths_in_the_order_given(tree: pathlib.Path) -> None:
    found = expand_paths([tree / "sub", str(tree / "c.log"), str(tree / "*.txt")])
    assert found == [
        str(tree / "sub" / "d.txt"),
        str(tree / "sub" / "deeper" / "e.txt"),
        str(tree / "c.log"),
        str(tree / "a.txt"),
        str(tree / "b.txt"),
    ]
    assert expand_paths(p for p in [tree / "a.txt"]) == [str(tree / "a.txt")]
    assert expand_paths([]) == []


def test_missing_paths_and_empty_globs_are_named(tree: pathlib.Path) -> None:
    missing = str(tree / "nope.txt")
    with pytest.raises(FileNotFoundError) as caught:
        expand_paths([str(tree / "a.txt"), missing])
    assert str(caught.value) == f"{missing}: no such file or directory"
    pattern = str(tree / "*.csv")
    with pytest.raises(FileNotFoundError) as caught:
        expand_paths(pattern)
    assert str(caught.value) == f"{pattern}: no file matches this pattern"


def test_paths_of_the_wrong_type(tree: pathlib.Path) -> None:
    with pytest.raises(TypeError, match=r"^paths must be a path or an iterable of paths, got int$"):
        expand_paths(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^paths must be str or os.PathLike, got int$"):
        expand_paths([str(tree / "a.txt"), 3])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        expand_paths(b"a.txt")  # type: ignore[arg-type]


# --- lines: the async iterator ---------------------------------------------------------------


def many_lines(tmp_path: pathlib.Path) -> str:
    """A file of more lines than one batch of the async iterator, so it stays open a while."""
    return write(tmp_path / "many.txt", b"".join(b"%d\n" % i for i in range(70_000)))


async def test_async_iteration_yields_lines_in_order_and_aclose_closes_the_file(
    tmp_path: pathlib.Path,
) -> None:
    path = many_lines(tmp_path)
    source = aiomr.sources.lines(path)
    assert isinstance(source, aiomr.sources.LineSource)
    iterator = aiter(source)
    assert [await anext(iterator) for _ in range(1000)] == [str(i) for i in range(1000)]
    assert source.paths == [path]
    assert is_open(path)
    await iterator.aclose()  # type: ignore[attr-defined]
    assert not is_open(path)
    await source.aclose()  # idempotent
    assert not is_open(path)


async def test_a_closed_line_source_yields_nothing_more(tmp_path: pathlib.Path) -> None:
    source = aiomr.sources.lines(many_lines(tmp_path))
    batch, _ = await source.read_batch(10)
    assert batch == [b"%d" % i for i in range(10)]  # raw: the workers decode
    await source.aclose()
    assert await read_all(source) == []


async def test_async_iteration_over_small_blocks(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path / "a.txt", b"one\ntwo\n\nthree\nfour")
    iterator = aiter(aiomr.sources.lines(path, block_size=3))
    assert [await anext(iterator) for _ in range(5)] == ["one", "two", "", "three", "four"]
    await iterator.aclose()  # type: ignore[attr-defined]


async def test_async_iteration_ends_after_the_last_line(tmp_path: pathlib.Path) -> None:
    paths = [
        write(tmp_path / "1.txt", b"a\nb\n"),
        write(tmp_path / "2.txt", b""),
        write(tmp_path / "3.txt.gz", b"c\n\nd"),
    ]
    # A regression once made the iterator spin on the loop after the last line; fail, not hang.
    with cpu_deadline(0.3):
        got = [line async for line in aiomr.sources.lines(paths, block_size=2)]
    assert got == ["a", "b", "c", "", "d"]
    assert not any(is_open(path) for path in paths)


async def test_async_iteration_over_several_batches(tmp_path: pathlib.Path) -> None:
    path = many_lines(tmp_path)
    with cpu_deadline(10.0):
        got = [line async for line in aiomr.sources.lines(path)]
    assert got == [str(i) for i in range(70_000)]
    assert not is_open(path)


async def test_lines_closes_the_file_when_cancelled_mid_read(tmp_path: pathlib.Path) -> None:
    path = many_lines(tmp_path)
    source = aiomr.sources.lines(path)
    first_line = asyncio.Event()
    never = asyncio.Event()

    async def consume() -> None:
        async with contextlib.aclosing(aiter(source)) as iterator:  # type: ignore[type-var]
            async for _ in iterator:
                first_line.set()
                await never.wait()

    task = asyncio.create_task(consume())
    await first_line.wait()
    assert is_open(path)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not is_open(path)


# --- lines: contents -------------------------------------------------------------------------

LINE = st.text(
    alphabet=st.characters(exclude_characters="\n\r", exclude_categories=("Cs",)),
    max_size=30,
)
"""A line without line ending: any text, including multi-byte UTF-8 and empty lines."""
FILE_SPEC = st.tuples(
    st.lists(LINE, max_size=25),
    st.booleans(),
    st.sampled_from(["", "", "", "", ".gz", ".bz2", ".xz"]),
)
"""``(lines, trailing newline, suffix)``."""
FILE_SPECS = st.lists(FILE_SPEC, min_size=1, max_size=5)
SPLIT_SIZES = st.one_of(st.integers(1, 64), st.integers(65, 2000), st.just(10**9))


def content_of(spec: tuple[list[str], bool, str]) -> bytes:
    lines, trailing, _ = spec
    return ("\n".join(lines) + ("\n" if trailing else "")).encode("utf-8")


def make_files(directory: pathlib.Path, specs: list[tuple[list[str], bool, str]]) -> list[str]:
    return [
        write(directory / f"f{i:02d}.txt{spec[2]}", content_of(spec))
        for i, spec in enumerate(specs)
    ]


@settings(max_examples=100, deadline=None)
@given(
    specs=FILE_SPECS, block_size=st.integers(1, 40), limit=st.integers(1, 30), text=st.booleans()
)
def test_lines_reads_every_line_once_in_order_with_its_origin(
    specs: list[tuple[list[str], bool, str]], block_size: int, limit: int, text: bool
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        paths = make_files(pathlib.Path(directory), specs)
        expected: list[Any] = []
        where: list[tuple[str, int]] = []
        for path, spec in zip(paths, specs, strict=True):
            lines = own_lines(content_of(spec))
            expected.extend(line.decode("utf-8") if text else line for line in lines)
            where.extend((path, number) for number in range(1, len(lines) + 1))

        async def read() -> tuple[list[Any], list[tuple[str, int]]]:
            source = aiomr.sources.lines(
                paths, block_size=block_size, encoding="utf-8" if text else None
            )
            got: list[Any] = []
            origin_of: list[tuple[str, int]] = []
            while True:
                batch, origins = await source.read_batch(limit)
                if not batch:
                    break
                assert len(got) + len(batch) == len(expected) or len(batch) == limit
                firsts = [first for first, _, _ in origins]
                assert firsts[0] == 0
                assert firsts == sorted(set(firsts))
                for (first, path, line), end in zip(
                    origins, [*firsts[1:], len(batch)], strict=True
                ):
                    origin_of.extend((path, line + k) for k in range(end - first))
                assert source.parser is not None or not text
                got.extend(source.parser.parse_many(batch) if source.parser else batch)
            assert await source.read_batch(limit) == ([], [])
            await source.aclose()
            return got, origin_of

        got, origin_of = asyncio.run(read())
        assert got == expected
        assert origin_of == where


async def test_lines_handles_long_lines_empty_lines_and_empty_files(
    tmp_path: pathlib.Path,
) -> None:
    long_line = "é" * 700 + "ü"
    paths = [
        write(tmp_path / "1.txt", b""),
        write(tmp_path / "2.txt", f"{long_line}\n\n\nshort\n".encode()),
        write(tmp_path / "3.txt", b"\n"),
        write(tmp_path / "4.txt", b"no newline at the end"),
        write(tmp_path / "5.txt", b""),
    ]
    expected = [long_line, "", "", "short", "", "no newline at the end"]
    for block_size in (1, 7, 4096, DEFAULT_BLOCK_SIZE):
        assert await read_all(aiomr.sources.lines(paths, block_size=block_size)) == expected
    assert await read_all(aiomr.sources.lines(paths, block_size=3, encoding=None)) == [
        line.encode() for line in expected
    ]
    assert await read_all(aiomr.sources.lines([paths[0], paths[4]])) == []


async def test_lines_decompresses_gzip_bzip2_and_xz(tmp_path: pathlib.Path) -> None:
    lines = [f"line {i} ✓" for i in range(20_000)]  # several blocks once decompressed
    content = "\n".join(lines).encode() + b"\n"
    paths = [write(tmp_path / f"data.txt{suffix}", content) for suffix in COMPRESSORS]
    assert await read_all(aiomr.sources.lines(paths, block_size=50_000)) == lines * 3
    assert await read_all(aiomr.sources.lines(paths[2], encoding=None)) == [
        line.encode() for line in lines
    ]


async def test_lines_strips_crlf(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path / "dos.txt", b"a\r\nb\r\n\r\nx\ry\r\nlast")
    for block_size in (DEFAULT_BLOCK_SIZE, 4, 1):
        assert await read_all(aiomr.sources.lines(path, block_size=block_size)) == [
            "a",
            "b",
            "",
            "x\ry",
            "last",
        ]


async def test_lines_strips_crlf_in_bytes_mode(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path / "dos.txt", b"a\r\nb\r\n")
    assert await read_all(aiomr.sources.lines(path, encoding=None)) == [b"a", b"b"]


@pytest.mark.parametrize("block_size", [5, 64, DEFAULT_BLOCK_SIZE])
async def test_lines_names_the_file_and_line_that_does_not_decode(
    tmp_path: pathlib.Path, block_size: int
) -> None:
    good = write(tmp_path / "good.txt", b"fine\n" * 10)
    lines = [f"line {i}".encode() for i in range(1, 31)]
    lines[16] = b"caf\xe9 au lait"  # line 17: Latin-1, not UTF-8
    bad = write(tmp_path / "bad.txt", b"\n".join(lines) + b"\n")
    source = aiomr.sources.lines([good, bad], block_size=block_size)
    got = []

    async def consume() -> None:
        async for line in source:
            got.append(line)

    with pytest.raises(aiomr.RecordError) as caught:
        await consume()
    assert str(caught.value).startswith(f"{bad}:17: cannot decode as utf-8: ")
    assert isinstance(caught.value.__cause__, UnicodeDecodeError)
    # Lines before the bad one may have been yielded, never the bad one or any after it.
    before = ["fine"] * 10 + [f"line {i}" for i in range(1, 17)]
    assert got == before[: len(got)]
    assert not is_open(bad)


async def test_lines_with_errors_replace_reads_on(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path / "bad.txt", b"ok\ncaf\xe9\n")
    assert await read_all(aiomr.sources.lines(path, errors="replace")) == ["ok", "caf\ufffd"]
    assert await read_all(aiomr.sources.lines(path, encoding="latin-1")) == ["ok", "café"]


def test_lines_and_files_check_their_arguments() -> None:
    with pytest.raises(ValueError, match=r"^block_size must be >= 1$"):
        aiomr.sources.lines("x", block_size=0)
    with pytest.raises(ValueError, match=r"^split_size must be >= 1$"):
        aiomr.sources.files("x", split_size=0)
    for make in (aiomr.sources.lines, aiomr.sources.files):
        with pytest.raises(LookupError):
            make("x", encoding="no-such-codec")
        for format in ("csv", "jsonl"):
            with pytest.raises(ValueError, match=rf"^format='{format}' parses text: give an"):
                make("x", format=format, encoding=None)  # type: ignore[arg-type]
        make("x", format="tsv", encoding=None)  # rows of bytes
        with pytest.raises(ValueError, match=r"^fields=, convert=, header= and names= need"):
            make("x", fields=2)
        with pytest.raises(ValueError, match=r"^fields=, convert=, header= and names= need"):
            make("x", header=True)
        with pytest.raises(ValueError, match=r"^header= and names= name the fields of TSV"):
            make("x", format="jsonl", header=True)
        with pytest.raises(ValueError, match=r"^fields=3 but names= has 2$"):
            make("x", format="csv", fields=3, names=["a", "b"])
        with pytest.raises(ValueError, match=r"^names must be distinct"):
            make("x", format="csv", names=["a", "a"])
        with pytest.raises(ValueError, match=r"^format must be 'tsv', 'csv' or 'jsonl'"):
            make("x", format="xml")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^fields must be >= 1$"):
            make("x", format="csv", fields=0)


async def test_lines_reports_a_missing_file_on_first_read(tmp_path: pathlib.Path) -> None:
    source = aiomr.sources.lines(tmp_path / "missing.txt")
    with pytest.raises(FileNotFoundError, match=r"missing\.txt: no such file or directory$"):
        await source.read_batch(10)


# --- lines as a job source -------------------------------------------------------------------


@pytest.fixture
def corpus(tmp_path: pathlib.Path) -> tuple[list[str], list[str]]:
    """Files with empty lines, an empty file, no final newline; and their lines in order."""
    specs: list[tuple[str, bytes]] = [
        ("a.txt", "".join(f"alpha {i} ç\n" for i in range(40)).encode()),
        ("b.txt", b""),
        ("c.txt", b"\n\nmiddle\n\n"),
        ("d.txt", "".join(f"delta {i} ∂\n" for i in range(25)).encode() + b"no newline"),
    ]
    paths = [write(tmp_path / name, content) for name, content in specs]
    expected = [line.decode() for _, content in specs for line in own_lines(content)]
    return paths, expected


@pytest.mark.parametrize("chunk_size", [1, 7, None])
async def test_lines_as_a_job_source(
    engine: aiomr.Engine, corpus: tuple[list[str], list[str]], chunk_size: int | None
) -> None:
    paths, expected = corpus
    stats = aiomr.JobStats()
    got = await engine.map_reduce(
        aiomr.sources.lines(paths, block_size=16),
        as_list,
        operator.add,
        ordered=True,
        chunk_size=chunk_size,
        stats=stats,
    )
    assert got == expected
    assert stats.records == len(expected)
    chunks = await engine.map_reduce(
        aiomr.sources.lines(paths, block_size=16), list, operator.add, mode="chunk", ordered=True
    )
    assert chunks == expected
    counts = await engine.run_by_key(
        aiomr.sources.lines(paths), aiomr.ReduceByKey(pair_with_one, operator.add), chunk_size=9
    )
    assert counts == collections.Counter(expected)
    assert not any(is_open(path) for path in paths)


async def test_lines_as_a_job_source_in_bytes_and_compressed(
    engine: aiomr.Engine, tmp_path: pathlib.Path
) -> None:
    lines = [f"{i}\t{i * i}" for i in range(3000)]
    content = ("\n".join(lines) + "\n").encode()
    paths = [write(tmp_path / f"data.tsv{suffix}", content) for suffix in ["", *COMPRESSORS]]
    got = await engine.map_reduce(
        aiomr.sources.lines(paths, encoding=None), as_list, operator.add, ordered=True
    )
    assert got == [line.encode() for line in lines] * 4


async def test_a_job_names_the_line_that_does_not_decode(
    engine: aiomr.Engine, tmp_path: pathlib.Path
) -> None:
    lines = [f"line {i}".encode() for i in range(1, 101)]
    lines[72] = b"\xff\xfe"
    path = write(tmp_path / "bad.txt", b"\n".join(lines))
    with pytest.raises(aiomr.RecordError) as caught:
        await engine.map_reduce(
            aiomr.sources.lines(path, block_size=64), len, operator.add, chunk_size=4
        )
    assert str(caught.value).startswith(f"{path}:73: cannot decode as utf-8: ")
    assert not is_open(path)


def parse_sale(row: list[str]) -> tuple[str, int]:
    return row[0], int(row[1])


def value_of(row: dict[str, Any]) -> list[tuple[str, int]]:
    return [(row["k"], row["v"])]


def as_pair(row: tuple[str, int]) -> list[tuple[str, int]]:
    return [row]


@pytest.mark.parametrize("source_kind", ["lines", "files"])
async def test_formats_are_parsed_in_the_workers(
    engine: aiomr.Engine, tmp_path: pathlib.Path, source_kind: str
) -> None:
    make = aiomr.sources.lines if source_kind == "lines" else aiomr.sources.files
    rows = [(f"store{i % 3}", i) for i in range(200)]
    tsv = write(tmp_path / "sales.tsv", "".join(f"{k}\t{v}\n" for k, v in rows).encode())
    csv_path = write(tmp_path / "sales.csv", "".join(f'"{k}, inc",{v}\n' for k, v in rows).encode())
    jsonl = write(
        tmp_path / "sales.jsonl",
        "".join(json.dumps({"k": k, "v": v}) + "\n" for k, v in rows).encode(),
    )
    expected: collections.Counter[str] = collections.Counter()
    for k, v in rows:
        expected[k] += v

    parsed = await engine.map_reduce(
        make(tsv, format="tsv", fields=2, convert=parse_sale, **split_of(source_kind)),
        as_list,
        operator.add,
        ordered=True,
    )
    assert parsed == rows
    raw = await engine.map_reduce(make(tsv, format="tsv"), as_list, operator.add, ordered=True)
    assert raw == [[k, str(v)] for k, v in rows]
    by_csv = await engine.run_by_key(
        make(csv_path, format="csv", fields=2, convert=parse_sale, **split_of(source_kind)),
        aiomr.ReduceByKey(as_pair, operator.add),
    )
    assert by_csv == {f"{k}, inc": v for k, v in expected.items()}
    by_json = await engine.run_by_key(
        make(jsonl, format="jsonl", **split_of(source_kind)),
        aiomr.ReduceByKey(value_of, operator.add),
        chunk_size=13,
    )
    assert by_json == expected
    in_chunks = await engine.map_reduce(
        make(jsonl, format="jsonl"), len, operator.add, mode="chunk"
    )
    assert in_chunks == len(rows)


async def run_job(
    engine: aiomr.Engine,
    source: Any,
    how: str,
    pairs: Callable[[Any], list[tuple[Any, int]]],
    *,
    chunk_size: int | None = None,
) -> Any:
    """Count the records of ``source`` in record or chunk mode, or sum ``pairs`` by key."""
    if how == "keyed":
        return await engine.run_by_key(
            source, aiomr.ReduceByKey(pairs, operator.add), chunk_size=chunk_size
        )
    mapper = one if how == "record" else len
    return await engine.map_reduce(source, mapper, operator.add, mode=how, chunk_size=chunk_size)


def split_of(source_kind: str) -> dict[str, Any]:
    return {"split_size": 500} if source_kind == "files" else {}


def bad_tsv_corpus(tmp_path: pathlib.Path) -> tuple[list[str], int]:
    """Two TSV files; the second has a short row on line 5. Returns paths and that line."""
    first = write(tmp_path / "1.tsv", "".join(f"a\t{i}\n" for i in range(30)).encode())
    rows = [f"b\t{i}" for i in range(40)]
    rows[4] = "b-without-a-tab"
    second = write(tmp_path / "2.tsv", ("\n".join(rows) + "\n").encode())
    return [first, second], 5


@pytest.mark.parametrize("how", ["record", "chunk", "keyed"])
async def test_a_malformed_streamed_row_is_named_by_file_and_line(
    engine: aiomr.Engine, tmp_path: pathlib.Path, how: str
) -> None:
    paths, line = bad_tsv_corpus(tmp_path)
    # Chunks of 25 lines: the bad row is record 9 of the chunk that starts at 1.tsv line 26.
    source = aiomr.sources.lines(paths, format="tsv", fields=2, block_size=32)
    with pytest.raises(aiomr.RecordError) as caught:
        await run_job(engine, source, how, as_pair, chunk_size=25)
    assert str(caught.value) == f"{paths[1]}:{line}: expected 2 fields, found 1"


async def test_a_row_that_does_not_convert_is_named(
    engine: aiomr.Engine, tmp_path: pathlib.Path
) -> None:
    path = write(tmp_path / "sales.csv", b"a,1\nb,2\nc,three\nd,4\n")
    with pytest.raises(aiomr.RecordError) as caught:
        await engine.map_reduce(
            aiomr.sources.lines(path, format="csv", convert=parse_sale), one, operator.add
        )
    assert str(caught.value).startswith(f"{path}:3: cannot convert row: ValueError: ")
    bad_json = write(tmp_path / "rows.jsonl", b'{"k": 1}\n{"k": \n')
    with pytest.raises(aiomr.RecordError) as caught:
        await engine.map_reduce(aiomr.sources.lines(bad_json, format="jsonl"), one, operator.add)
    assert str(caught.value).startswith(f"{bad_json}:2: invalid JSON: ")


async def test_cancelling_a_job_closes_the_streamed_file(
    engine: aiomr.Engine, tmp_path: pathlib.Path
) -> None:
    path = write(tmp_path / "many.txt", b"1\n" * 200_000)
    stats = aiomr.JobStats()
    job = asyncio.create_task(
        engine.map_reduce(
            aiomr.sources.lines(path, block_size=64),
            one,
            operator.add,
            chunk_size=1,
            max_in_flight=1,
            stats=stats,
        )
    )
    while stats.chunks_done < 1:  # one chunk per task round trip: far from the end
        await asyncio.sleep(0.01)
    assert is_open(path)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert not is_open(path)


# --- files: planning and reading splits ------------------------------------------------------


def segments_by_file(splits: list[Split]) -> dict[str, list[tuple[int, int]]]:
    ranges: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    for split in splits:
        for segment in split.segments:
            ranges[segment.path].append((segment.start, segment.end))
    return ranges


@settings(max_examples=250, deadline=None)
@given(specs=FILE_SPECS, split_size=SPLIT_SIZES, block_size=st.integers(1, 48))
def test_splits_cover_every_byte_once_at_line_starts(
    specs: list[tuple[list[str], bool, str]], split_size: int, block_size: int
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        paths = make_files(pathlib.Path(directory), specs)
        contents = {path: content_of(spec) for path, spec in zip(paths, specs, strict=True)}
        sizes = {path: os.path.getsize(path) for path in paths}
        splits = plan_splits(paths, split_size)

        assert [split.index for split in splits] == list(range(len(splits)))
        assert sum(split.size for split in splits) == sum(sizes.values())
        ranges = segments_by_file(splits)
        for path in paths:
            data = contents[path]
            if path.endswith(tuple(COMPRESSORS)):
                # Compressed: one split of its own, read to the end.
                assert ranges[path] == [(0, -1)]
                (split,) = [s for s in splits if s.segments[0].path == path]
                assert len(split.segments) == 1
                continue
            position = 0
            for start, end in ranges.get(path, []):
                assert start == position < end
                assert start == 0 or data[start - 1 : start] == b"\n"
                position = end
            assert position == len(data)
        for split in splits:
            if len(split.segments) > 1:  # packed: whole small files, at most split_size
                assert all(s.start == 0 and s.end == sizes[s.path] for s in split.segments)
                assert all(sizes[s.path] < split_size for s in split.segments)
                assert sum(sizes[s.path] for s in split.segments) <= split_size
        for this, following in itertools.pairwise(splits):
            packed = [
                split
                for split in (this, following)
                if all(s.end == sizes[s.path] < split_size and s.start == 0 for s in split.segments)
            ]
            if len(packed) == 2:  # a new pack starts only when the next file does not fit
                first_size = sizes[following.segments[0].path]
                assert this.size + first_size > split_size

        # Blocks: exactly the segment's bytes, cut at line ends, at the offsets they claim.
        for split in splits:
            by_segment: dict[Segment, bytes] = collections.defaultdict(bytes)
            for block, segment, offset in read_blocks(split, block_size):
                data = contents[segment.path]
                assert data[offset : offset + len(block)] == block
                assert block.endswith(b"\n") or offset + len(block) == len(data)
                assert offset == segment.start + len(by_segment[segment])
                by_segment[segment] += block
            for segment in split.segments:
                data = contents[segment.path]
                end = len(data) if segment.end < 0 else segment.end
                assert by_segment[segment] == data[segment.start : end]

        # Records: every line of every file exactly once, in order.
        expected = [line for path in paths for line in own_lines(contents[path])]
        as_bytes = SplitReader(None, "strict", None)
        as_text = SplitReader("utf-8", "strict", None)
        assert [line for split in splits for line in as_bytes.records(split)] == expected
        assert [line for split in splits for line in as_text.records(split)] == [
            line.decode("utf-8") for line in expected
        ]
        assert b"".join(b for split in splits for b in as_bytes.blocks(split)) == b"".join(
            contents[path] for path in paths
        )


@settings(max_examples=150, deadline=None)
@given(specs=FILE_SPECS, sizes=st.lists(SPLIT_SIZES, min_size=1, max_size=12))
def test_splits_cut_one_at_a_time_with_changing_sizes_cover_every_line_once(
    specs: list[tuple[list[str], bool, str]], sizes: list[int]
) -> None:
    # What a job sized by time does: every split may ask for another size.
    with tempfile.TemporaryDirectory() as directory:
        paths = make_files(pathlib.Path(directory), specs)
        contents = {path: content_of(spec) for path, spec in zip(paths, specs, strict=True)}
        cutter = SplitCutter(paths)
        assert cutter.total == sum(os.path.getsize(path) for path in paths)
        splits, asked = [], itertools.cycle(sizes)
        while (split := cutter.cut(size := next(asked))) is not None:
            splits.append(split)
            plain = [seg for seg in split.segments if seg.end >= 0]
            if len(split.segments) > 1:  # packed whole small files, within the size asked
                assert sum(seg.end for seg in split.segments) <= size
                assert all(seg.start == 0 for seg in split.segments)
            elif plain and plain[0].end - plain[0].start > size:  # cut: ends at a line end
                seg = plain[0]
                data = contents[seg.path]
                assert seg.end == len(data) or data[seg.end - 1 : seg.end] == b"\n"
        assert cutter.cut(1) is None
        assert [split.index for split in splits] == list(range(len(splits)))
        for path, ranges in segments_by_file(splits).items():
            if ranges == [(0, -1)]:
                continue
            assert [start for start, _ in ranges] == [0, *(end for _, end in ranges[:-1])]
            assert ranges[-1][1] == len(contents[path])
        expected = [line for path in paths for line in own_lines(contents[path])]
        reader = SplitReader(None, "strict", None)
        assert [line for split in splits for line in reader.records(split)] == expected


def test_small_files_are_packed_and_large_ones_cut(tmp_path: pathlib.Path) -> None:
    small = [write(tmp_path / f"s{i}.txt", b"123456789\n") for i in range(5)]
    large = write(tmp_path / "large.txt", b"".join(b"%08d\n" % i for i in range(10)))  # 90 bytes
    gz = write(tmp_path / "z.txt.gz", b"compressed\n" * 100)
    splits = plan_splits([*small[:3], large, gz, *small[3:]], 25)
    assert [
        [(os.path.basename(s.path), s.start, s.end) for s in split.segments] for split in splits
    ] == [
        [("s0.txt", 0, 10), ("s1.txt", 0, 10)],
        [("s2.txt", 0, 10)],
        [("large.txt", 0, 27)],
        [("large.txt", 27, 54)],
        [("large.txt", 54, 81)],
        [("large.txt", 81, 90)],
        [("z.txt.gz", 0, -1)],
        [("s3.txt", 0, 10), ("s4.txt", 0, 10)],
    ]
    assert splits[6].size == os.path.getsize(gz)
    assert "z.txt.gz bytes [0, end)" in splits[6].describe()
    assert splits[2].describe() == f"split 2 ({large} bytes [0, 27))"


def test_a_line_longer_than_the_split_stays_whole(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path / "long.txt", b"short\n" + b"x" * 300_000 + b"\nend\n")
    splits = plan_splits([path], 10)
    # The first boundary falls inside the long line: the split runs to its end.
    assert [(s.segments[0].start, s.segments[0].end) for s in splits] == [
        (0, 300_007),
        (300_007, 300_011),
    ]
    reader = SplitReader(None, "strict", None)
    assert [line for split in splits for line in reader.records(split)] == [
        b"short",
        b"x" * 300_000,
        b"end",
    ]


def test_splits_strip_crlf(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path / "dos.txt", b"a\r\nb\r\n\r\nx\ry\r\nlast")
    reader = SplitReader("utf-8", "strict", None)
    for split_size in (1, 10**6):
        splits = plan_splits([path], split_size)
        assert [line for split in splits for line in reader.records(split)] == [
            "a",
            "b",
            "",
            "x\ry",
            "last",
        ]


# --- files: end to end -----------------------------------------------------------------------

NONEMPTY_COMPRESSED = FILE_SPEC.filter(lambda spec: spec[2] == "" or content_of(spec) != b"")


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    specs=st.lists(NONEMPTY_COMPRESSED, min_size=1, max_size=5).filter(
        lambda specs: any(content_of(spec) for spec in specs)
    ),
    split_size=SPLIT_SIZES,
)
def test_file_jobs_equal_a_naive_read(
    process_executor: ProcessExecutor,
    specs: list[tuple[list[str], bool, str]],
    split_size: int,
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        paths = make_files(pathlib.Path(directory), specs)
        expected = [line.decode("utf-8") for spec in specs for line in own_lines(content_of(spec))]
        total = sum(os.path.getsize(path) for path in paths)

        async def jobs() -> None:
            engine = aiomr.Engine(process_executor)
            source = aiomr.sources.files(directory, split_size=split_size)
            for mode, mapper in [("record", as_list), ("chunk", list), ("blocks", lines_of_blocks)]:
                stats = aiomr.JobStats()
                got = await engine.map_reduce(
                    source, mapper, operator.add, mode=mode, ordered=True, stats=stats
                )
                assert got == expected, mode
                assert stats.bytes_done == stats.bytes_total == total
                if mode != "blocks":
                    assert stats.records == len(expected)
            stats = aiomr.JobStats()
            counts = await engine.run_by_key(
                source, aiomr.ReduceByKey(pair_with_one, operator.add), stats=stats
            )
            assert counts == collections.Counter(expected)
            assert stats.records == len(expected)
            assert stats.bytes_done == stats.bytes_total == total

        asyncio.run(jobs())


async def test_compressed_files_are_one_split_each_and_read_fully(
    engine: aiomr.Engine, tmp_path: pathlib.Path
) -> None:
    lines = [f"row {i} ü" for i in range(30_000)]  # ~300 KB: several 64 KiB blocks
    content = ("\n".join(lines) + "\n").encode()
    paths = [write(tmp_path / f"data.txt{suffix}", content) for suffix in COMPRESSORS]
    source = aiomr.sources.files(paths, split_size=1000)
    stats = aiomr.JobStats()
    total = await engine.map_reduce(source, one, operator.add, stats=stats)
    assert total == stats.records == 3 * len(lines)
    assert stats.chunks == 3
    assert stats.bytes_done == stats.bytes_total == sum(os.path.getsize(p) for p in paths)
    assert (
        await engine.map_reduce(source, lines_of_blocks, operator.add, mode="blocks", ordered=True)
        == lines * 3
    )


async def test_stats_count_the_lines_in_blocks_mode(
    engine: aiomr.Engine, tmp_path: pathlib.Path
) -> None:
    path = write(tmp_path / "a.txt", b"x\n" * 1000)
    stats = aiomr.JobStats()
    source = aiomr.sources.files(path, split_size=500)
    assert (
        await engine.map_reduce(source, count_newlines, operator.add, mode="blocks", stats=stats)
        == 1000
    )
    assert stats.chunks == 4
    assert stats.records == 1000


@pytest.mark.parametrize("mode", ["record", "chunk"])
async def test_an_empty_compressed_file_contributes_nothing(
    engine: aiomr.Engine, tmp_path: pathlib.Path, mode: str
) -> None:
    paths = [write(tmp_path / "empty.txt.gz", b""), write(tmp_path / "one.txt", b"x\n")]
    mapper = one if mode == "record" else len
    assert await engine.map_reduce(aiomr.sources.files(paths), mapper, operator.add, mode=mode) == 1


async def test_a_file_source_of_empty_files(engine: aiomr.Engine, tmp_path: pathlib.Path) -> None:
    source = aiomr.sources.files([write(tmp_path / "1.txt", b""), write(tmp_path / "2.txt", b"")])
    assert await engine.map_reduce(source, one, operator.add, initial=0) == 0
    with pytest.raises(aiomr.EmptySourceError):
        await engine.map_reduce(source, one, operator.add)
    assert await engine.run_by_key(source, aiomr.ReduceByKey(pair_with_one, operator.add)) == {}


async def test_bytes_total_of_a_file_source_of_empty_files(
    engine: aiomr.Engine, tmp_path: pathlib.Path
) -> None:
    stats = aiomr.JobStats()
    source = aiomr.sources.files(write(tmp_path / "empty.txt", b""))
    assert await engine.map_reduce(source, one, operator.add, initial=0, stats=stats) == 0
    assert stats.bytes_total == stats.bytes_done == 0


def offset_of_line(lines: list[bytes], index: int) -> int:
    return sum(len(line) + 1 for line in lines[:index])


def corrupt_corpus(tmp_path: pathlib.Path, case: str, kind: str) -> tuple[list[str], int, str, int]:
    """Files with one bad line; return paths, split_size, the bad file and its line's offset."""
    bad_line = b"caf\xe9\tcr\xe8me" if kind == "decode" else b"no tab here"

    def rows(count: int, width: int) -> list[bytes]:
        return [b"%0*d\t%d" % (width, i, i) for i in range(count)]

    if case == "later split":
        lines = rows(40, 6)
        lines[33] = bad_line
        path = write(tmp_path / "data.tsv", b"\n".join(lines) + b"\n")
        return [path], 50, path, offset_of_line(lines, 33)
    if case == "later block":
        lines = rows(6000, 18)  # ~150 KB in one split: the bad line is in a later block
        lines[4000] = b"x" * 7 + bad_line
        path = write(tmp_path / "data.tsv", b"\n".join(lines) + b"\n")
        return [path], 10**7, path, offset_of_line(lines, 4000)
    assert case == "packed"
    first = write(tmp_path / "a.tsv", b"\n".join(rows(5, 3)) + b"\n")
    lines = rows(6, 3)
    lines[3] = bad_line
    second = write(tmp_path / "b.tsv", b"\n".join(lines))
    return [first, second], 10**6, second, offset_of_line(lines, 3)


@pytest.mark.parametrize("kind", ["decode", "tsv"])
@pytest.mark.parametrize("case", ["later split", "later block", "packed"])
async def test_a_bad_line_in_a_split_is_named_by_file_and_byte_offset(
    engine: aiomr.Engine, tmp_path: pathlib.Path, case: str, kind: str
) -> None:
    paths, split_size, bad, offset = corrupt_corpus(tmp_path, case, kind)
    source = aiomr.sources.files(paths, split_size=split_size, format="tsv", fields=2)
    with pytest.raises(aiomr.RecordError) as caught:
        await engine.map_reduce(source, one, operator.add)
    problem = (
        "cannot decode as utf-8: invalid continuation byte (byte b'\\xe9')"
        if kind == "decode"
        else "expected 2 fields, found 1"
    )
    line = pathlib.Path(bad).read_bytes()[:offset].count(b"\n") + 1
    assert str(caught.value) == f"{bad}:{line} (byte {offset}): {problem}"
    assert caught.value.location == f"{bad}:{line} (byte {offset})"
    assert isinstance(caught.value.__cause__, aiomr.WorkerTraceback)


@pytest.mark.parametrize("how", ["chunk", "keyed"])
async def test_a_bad_line_is_named_in_chunk_mode_and_keyed_jobs(
    engine: aiomr.Engine, tmp_path: pathlib.Path, how: str
) -> None:
    paths, split_size, bad, offset = corrupt_corpus(tmp_path, "later split", "decode")
    source = aiomr.sources.files(paths, split_size=split_size)
    with pytest.raises(aiomr.RecordError) as caught:
        await run_job(engine, source, how, pair_with_one)
    line = pathlib.Path(bad).read_bytes()[:offset].count(b"\n") + 1
    assert str(caught.value).startswith(f"{bad}:{line} (byte {offset}): cannot decode")


async def test_blocks_mode_needs_a_file_source(
    engine: aiomr.Engine, tmp_path: pathlib.Path
) -> None:
    path = write(tmp_path / "a.txt", b"x\n")
    message = r"^mode='blocks' needs a file source: aiomr\.sources\.files\(\.\.\.\)$"
    for source in ([b"x\n"], aiomr.sources.lines(path)):
        with pytest.raises(ValueError, match=message):
            await engine.map_reduce(source, count_newlines, operator.add, mode="blocks")
    assert (
        await engine.map_reduce(
            aiomr.sources.files(path), count_newlines, operator.add, mode="blocks"
        )
        == 1
    )


async def test_a_missing_file_fails_the_job(engine: aiomr.Engine, tmp_path: pathlib.Path) -> None:
    missing = str(tmp_path / "missing.txt")
    with pytest.raises(FileNotFoundError, match=r"missing\.txt: no such file or directory$"):
        await engine.map_reduce(aiomr.sources.files(missing), one, operator.add)


def read_chars() -> int | None:
    """Bytes this process has read through system calls so far (Linux), else None."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


async def test_the_caller_reads_only_split_boundaries(
    engine: aiomr.Engine, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes((b"x" * 99 + b"\n") * 200_000)
    size = path.stat().st_size
    assert size == 20_000_000
    stats = aiomr.JobStats()
    read_before = read_chars()
    tracemalloc.start()
    try:
        lines = await engine.map_reduce(
            aiomr.sources.files(path), count_newlines, operator.add, mode="blocks", stats=stats
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    read_after = read_chars()
    assert lines == 200_000
    assert stats.bytes_done == stats.bytes_total == size
    assert stats.chunks > 1  # cut for the two workers
    assert peak < size / 20  # planning reads a few kilobytes per boundary, nothing more
    if read_before is not None and read_after is not None:
        assert read_after - read_before < size / 20


async def test_a_line_source_serves_one_job(engine: aiomr.Engine, tmp_path: pathlib.Path) -> None:
    source = aiomr.sources.lines(write(tmp_path / "a.txt", b"one\ntwo\nthree\n"))
    assert await engine.map_reduce(source, len, operator.add) == 11
    with pytest.raises(ValueError, match="already read by an earlier job"):
        await engine.map_reduce(source, len, operator.add)


@pytest.mark.parametrize("workers", [1, 2, 3, 8])
@pytest.mark.parametrize("total", [0, 5_000, 3 << 20, 100 << 20, 995_000_000, 5 << 30])
def test_automatic_splits_share_the_input_evenly_between_workers(total: int, workers: int) -> None:
    from aiomr.sources._file_splits import MAX_AUTO_SPLIT, MIN_AUTO_SPLIT, auto_split_size

    size = auto_split_size(total, workers)
    assert MIN_AUTO_SPLIT <= size <= max(MIN_AUTO_SPLIT, MAX_AUTO_SPLIT)
    count = -(-total // size)
    if size > MIN_AUTO_SPLIT:  # not held up by the floor: whole rounds for every worker
        assert count % workers == 0
        assert count >= 4 * workers
