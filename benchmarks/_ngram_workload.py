"""The n-gram workload of ``examples/ngram.py``, shared by the n-gram, lost-worker, Dask and
service benchmarks: the generated input and what it must add up to, the tight counting loop
and the idiomatic mapper, aiomr's two jobs, and the practical-limit program (no aiomr code)
that gives the reference totals.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import multiprocessing
import operator
import os
from collections.abc import Awaitable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import _harness as h
import _machine

from examples.ngram_data import generate
from examples.ngram_data import parse_size as parse_size

WORKERS, SEED, CHUNK_LINES = 2, 0, 60_000
"""Workers of every contender that has any; the generator's seed; lines per task of the
book's chunks."""
BLOCK_SIZE = 64 * 1024
"""Bytes per read of the practical limit's workers: aiomr's split block size."""

Totals = dict[str, int]


def merge_totals(first: Totals, second: Totals) -> Totals:
    """Add ``second`` into ``first`` and return it (the book's ``merge_dictionaries``)."""
    for word, count in second.items():
        if word in first:
            first[word] = first[word] + count
        else:
            first[word] = count
    return first


SEPARATORS_ONLY = bytes(b for b in range(256) if b not in (9, 10))
"""What `bytes.translate` deletes to leave a block's tabs and newlines."""


def count_blocks(blocks: Iterable[bytes]) -> dict[bytes, int]:
    """Total the match counts of blocks of whole lines by word (the tight loop).

    The loop of ``examples/ngram.py``'s split way: newlines become tabs, so one ``split`` gives
    four fields per line. A line without four fields would shift every field after it, so
    each block's separators are checked first, in C, unless aiomr's reader checked them
    (``tsv_fields == 4``): every contender pays for one check.
    """
    counts: dict[bytes, int] = {}
    get = counts.get
    checked = getattr(blocks, "tsv_fields", None) == 4
    for block in blocks:
        if not checked:
            separators = block.translate(None, SEPARATORS_ONLY)
            if not block.endswith(b"\n"):
                separators += b"\n"
            if separators != b"\t\t\t\n" * (len(separators) // 4):
                raise ValueError(f"a line without 4 tab-separated fields in {block[:80]!r}")
        fields = block.replace(b"\n", b"\t").split(b"\t")
        for word, count in zip(fields[0::4], map(int, fields[2::4]), strict=False):
            counts[word] = get(word, 0) + count
    return counts


def merge_bytes_totals(totals: dict[bytes, int], more: dict[bytes, int]) -> dict[bytes, int]:
    """Add the smaller of two partials into the larger one and return it."""
    if len(totals) < len(more):
        totals, more = more, totals
    get = totals.get
    for word, count in more.items():
        totals[word] = get(word, 0) + count
    return totals


def decode_totals(totals: dict[bytes, int]) -> Totals:
    """Turn byte-string words into text, once per distinct word."""
    return {word.decode("utf-8"): count for word, count in totals.items()}


def word_and_count(line: str) -> Iterator[tuple[str, int]]:
    """The idiomatic mapper: one ``(word, match_count)`` pair per line."""
    word, _year, match_count, _volumes = line.split("\t")
    yield word, int(match_count)


# aiomr's jobs ---------------------------------------------------------------------------------


# The counting code -----------------------------------------------------------------------------


def count_lines(lines: Iterable[str]) -> Totals:
    """Total one chunk of lines the way the book's worker function does: split, then a dict."""
    counts: Totals = {}
    for line in lines:
        word, _year, match_count, _volumes = line.split("\t")
        if word in counts:
            counts[word] = counts[word] + int(match_count)
        else:
            counts[word] = int(match_count)
    return counts


def chunks_of(lines: list[str]) -> Iterator[list[str]]:
    """Cut a list of lines into slices of `CHUNK_LINES` lines (the book's ``partition``)."""
    for start in range(0, len(lines), CHUNK_LINES):
        yield lines[start : start + CHUNK_LINES]


def read_lines(path: str) -> list[str]:
    """Read the whole file as a list of lines, as the book's programs do."""
    with open(path, encoding="utf-8") as f:
        return f.readlines()


def field_0(row: list[str]) -> str:
    return row[0]


def add_match_count(total: int, row: list[str]) -> int:
    return total + int(row[2])


def merge_partials(partials: Iterable[Totals]) -> Totals:
    return functools.reduce(merge_totals, partials, {})


async def count_lines_async(chunk: list[str]) -> Totals:
    return count_lines(chunk)


async def split_job(path: str, engine: Any = None, **options: Any) -> Totals:
    """The byte-range split job of ``examples/ngram.py`` with the tight loop."""
    import aiomr

    source = aiomr.sources.files(path, encoding=None, format="tsv", fields=4)
    run = engine.map_reduce if engine else functools.partial(aiomr.map_reduce, max_workers=WORKERS)
    empty: dict[bytes, int] = {}
    totals = await run(
        source, count_blocks, merge_bytes_totals, initial=empty, mode="blocks", **options
    )
    return await asyncio.to_thread(decode_totals, totals)


async def keyed_job(path: str, engine: Any = None, lines: bool = False, **options: Any) -> Totals:
    """The idiomatic key-value job on byte-range splits (or every line through the caller)."""
    import aiomr

    source = aiomr.sources.lines(path) if lines else aiomr.sources.files(path)
    if engine is not None:
        spec = aiomr.ReduceByKey(word_and_count, operator.add)
        totals: Totals = await engine.run_by_key(source, spec, **options)
        return totals
    return await aiomr.map_reduce_by_key(
        source, word_and_count, operator.add, max_workers=WORKERS, **options
    )


async def with_lag(job: Awaitable[Totals]) -> tuple[Totals, list[float]]:
    """Run ``job`` while a 10 ms ticker records the loop's lag."""
    async with _machine.ticking() as lags:
        return await job, lags


def byte_range_blocks(path: str, start: int, end: int) -> Iterator[bytes]:
    """Yield blocks of whole lines from bytes ``[start, end)`` (both on line boundaries)."""
    with open(path, "rb") as f:
        f.seek(start)
        remaining, rest = end - start, b""
        while remaining > 0 and (data := f.read(min(BLOCK_SIZE, remaining))):
            remaining -= len(data)
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                rest += data
                continue
            yield rest + data[:cut] if rest else data[:cut]
            rest = data[cut:]
        if rest:
            yield rest


def count_byte_range(task: tuple[str, int, int]) -> dict[bytes, int]:
    """Run the tight loop over one byte range (in a worker)."""
    return count_blocks(byte_range_blocks(*task))


def count_byte_range_with_mapper(task: tuple[str, int, int]) -> Totals:
    """Drive the idiomatic mapper over one byte range with no framework (in a worker): decode
    each block, split its lines, add the pairs of `word_and_count` into one dict."""
    totals: Totals = {}
    get = totals.get
    for block in byte_range_blocks(*task):
        for line in block.decode("utf-8").split("\n")[:-1]:
            for word, count in word_and_count(line):
                totals[word] = get(word, 0) + count
    return totals


def halves(path: str) -> list[tuple[str, int, int]]:
    """Cut a file into two byte ranges, the cut moved to just after a newline."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        f.seek(max(0, size // 2 - 1))
        f.readline()
        middle = min(f.tell(), size)
    return [(path, 0, middle), (path, middle, size)]


def run_limit(path: str) -> Totals:
    """9. The practical limit: two byte ranges, the tight loop, two processes."""
    with multiprocessing.Pool(WORKERS) as pool:
        first, second = pool.map(count_byte_range, halves(path), chunksize=1)
    return decode_totals(merge_bytes_totals(first, second))


def run_limit_mapper(path: str) -> Totals:
    """10. The same limit for the idiomatic mapper: two byte ranges, two processes."""
    with multiprocessing.Pool(WORKERS) as pool:
        first, second = pool.map(count_byte_range_with_mapper, halves(path), chunksize=1)
    return merge_totals(first, second)


# The input and its checks ----------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """What the generator says the file holds."""

    path: str
    size_bytes: int
    lines: int
    words: int
    total_match_count: int
    totals: dict[str, int]

    def problems(self, totals: Totals) -> list[str]:
        """Say how ``totals`` disagrees with the generator's figures, if it does."""
        problems = [f"{len(totals):,} words, not {self.words:,}"] * (len(totals) != self.words)
        if sum(totals.values()) != self.total_match_count:
            problems.append(f"a grand total of {sum(totals.values()):,}")
        return problems + [
            f"{word} has appeared {totals.get(word, 0)} times, not {count}"
            for word, count in self.totals.items()
            if totals.get(word) != count
        ]


def aardvark(totals: Totals) -> str:
    return f"Aardvark has appeared {totals.get('Aardvark', 0)} times"


def ensure_input(size: int) -> Expected:
    """Return the generated file of about ``size`` bytes, generating it once (untimed)."""
    path = h.DATA_DIR / f"ngram-{size}-seed{SEED}.tsv"
    facts = path.with_suffix(".json")
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        expected = Expected(**json.loads(facts.read_text(encoding="utf-8")))
        if expected.size_bytes == path.stat().st_size:
            return expected
    h.DATA_DIR.mkdir(parents=True, exist_ok=True)
    h.progress(f"generating {size:,} bytes of 1-gram data into {path} (once)")
    partial = path.with_name(f"{path.name}.{os.getpid()}.part")
    info = generate(partial, size, seed=SEED)
    os.replace(partial, path)
    expected = Expected(
        str(path), info.size_bytes, info.lines, info.words, info.total_match_count, info.totals
    )
    partial = facts.with_name(f"{facts.name}.{os.getpid()}.part")
    partial.write_text(json.dumps(dataclasses.asdict(expected)), encoding="utf-8")
    os.replace(partial, facts)
    return expected
