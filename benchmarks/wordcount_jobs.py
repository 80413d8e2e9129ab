"""The word-count contenders: each timed run of ``wordcount.py`` is this small program.

    python3 benchmarks/wordcount_jobs.py --contender KEY PATHS_FILE RESULT_FILE LOOP REPORT

runs contender ``KEY`` over the files listed in ``PATHS_FILE`` and pickles its counts to
``RESULT_FILE`` (``LOOP``: the ``--loop`` choice of ``wordcount.py``). A contender's program is
its own main module, as a user's script would be, and imports only what such a script needs:
workers started with ``forkserver`` (aiomr's) or ``spawn`` (dask's) import the main module
again, and the benchmark's tables, statistics and text generator are no part of a word count.
"""

from __future__ import annotations

import collections
import itertools
import math
import multiprocessing
import operator
import os
import pickle
import string
import sys
import sysconfig
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import _machine

WORKERS = 2
POOL_CHUNK_LINES = 50_000
"""Lines per task when a ``multiprocessing.Pool`` contender reads one big file itself."""
_PUNCTUATION = str.maketrans(string.punctuation, " " * len(string.punctuation))


def stdlib_files() -> list[str]:
    """The standard library's ``.py`` files in a stable order, without site-packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    third_party = {"site-packages", "dist-packages"}
    return [
        str(path)
        for path in sorted(root.rglob("*.py"))
        if path.is_file() and third_party.isdisjoint(path.relative_to(root).parts)
    ]


def tokens(text: str) -> list[str]:
    """Return the words of ``text``: punctuation to spaces, lower-case, alphabetic only."""
    return [word for word in text.translate(_PUNCTUATION).lower().split() if word.isalpha()]


def count_lines(lines: Iterable[str]) -> Counter[str]:
    """Count the words of ``lines`` with the single-process loop's body."""
    counts: Counter[str] = Counter()
    update = counts.update
    for line in lines:
        update(tokens(line))
    return counts


def count_file(path: str) -> Counter[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        return count_lines(f)


def count_split_lines(blocks: Iterator[bytes]) -> Counter[str]:
    """Count a byte-range split line by line, as the single-process loop does, in one Counter."""
    counts: Counter[str] = Counter()
    update = counts.update
    for block in blocks:
        for line in block.decode("utf-8", "replace").split("\n"):
            update(tokens(line))
    return counts


def merge_counts(first: Counter[str], second: Counter[str]) -> Counter[str]:
    """Add ``second`` into ``first`` (which the fold owns) and return it."""
    first.update(second)
    return first


def line_pairs(line: str) -> Iterator[tuple[str, int]]:
    """Yield ``(word, count)`` once per distinct word of a line (a per-line combiner)."""
    return iter(Counter(tokens(line)).items())


def line_chunks(path: str) -> Iterator[list[str]]:
    with open(path, encoding="utf-8", errors="replace") as f:
        while chunk := list(itertools.islice(f, POOL_CHUNK_LINES)):
            yield chunk


def lines_to_words(lines: Iterable[str]) -> list[tuple[str, int]]:
    """The tutorial's map function: lines to a list of ``(word, 1)`` pairs."""
    return [(word, 1) for line in lines for word in tokens(line)]


def file_to_words(path: str) -> list[tuple[str, int]]:
    """The tutorial's map function over one file."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return lines_to_words(f)


def count_words(item: tuple[str, list[int]]) -> tuple[str, int]:
    """The tutorial's reduce function: one word and all its ones to its count."""
    word, occurrences = item
    return word, sum(occurrences)


def run_loop(paths: list[str]) -> dict[str, int]:
    """The baseline: one process reads every line, tokenises it and updates a Counter."""
    counts: Counter[str] = Counter()
    update = counts.update
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                update(tokens(line))
    return counts


def run_pool_tutorial(paths: list[str]) -> dict[str, int]:
    """The tutorial's ``multiprocessing.Pool`` map-reduce: ``pool.map`` the map function over
    the files (one big file: over chunks of lines the parent reads), group every pair by word
    in the parent, then ``pool.map`` the reduce function over the groups."""
    with multiprocessing.Pool(WORKERS) as pool:
        if len(paths) == 1:
            mapped = pool.map(lines_to_words, list(line_chunks(paths[0])), chunksize=1)
        else:
            mapped = pool.map(file_to_words, paths, chunksize=1)
        partitioned: collections.defaultdict[str, list[int]] = collections.defaultdict(list)
        for word, one in itertools.chain.from_iterable(mapped):
            partitioned[word].append(one)
        del mapped
        return dict(pool.map(count_words, partitioned.items()))


def run_pool_counters(paths: list[str]) -> dict[str, int]:
    """``multiprocessing.Pool``, one Counter per task, summed in the parent as they arrive."""
    counts: Counter[str] = Counter()
    with multiprocessing.Pool(WORKERS) as pool:
        if len(paths) == 1:
            partials = pool.imap_unordered(count_lines, line_chunks(paths[0]))
        else:
            partials = pool.imap_unordered(count_file, paths, chunksize=16)
        for partial in partials:
            counts.update(partial)
    return counts


def run_dask(paths: list[str]) -> dict[str, int]:
    """``dask.bag``: read_text, tokens per line, flatten, ``frequencies()``; 2 processes."""
    import dask.bag
    import dask.base

    read_text: Callable[..., Any] = dask.bag.read_text  # dask has no type hints
    compute: Callable[..., tuple[Any, ...]] = dask.base.compute
    partitions = WORKERS * 4
    if len(paths) == 1:
        blocksize = math.ceil(os.path.getsize(paths[0]) / partitions)
        bag = read_text(paths[0], blocksize=blocksize, errors="replace")
    else:
        per_partition = math.ceil(len(paths) / partitions)
        bag = read_text(paths, files_per_partition=per_partition, errors="replace")
    (result,) = compute(
        bag.map(tokens).flatten().frequencies(), scheduler="processes", num_workers=WORKERS
    )
    return dict(result)


def run_aiomr(paths: list[str], how: str, loop: str) -> dict[str, int]:
    """aiomr's three ways: the key-value job of ``aiomr wordcount`` (``keyed``), the same
    with a per-line combining mapper (``per-line``), or a Counter per split (``split``)."""
    import aiomr
    from aiomr.cli import words_of

    async def job() -> dict[str, int]:
        if how == "split":
            files = aiomr.sources.files(paths, encoding=None)
            counts: Counter[str] = await aiomr.map_reduce(
                files, count_split_lines, merge_counts, mode="blocks", max_workers=WORKERS
            )
            return counts
        mapper = words_of if how == "keyed" else line_pairs
        files = aiomr.sources.files(paths, errors="replace")
        return await aiomr.map_reduce_by_key(files, mapper, operator.add, max_workers=WORKERS)

    return aiomr.run(job(), use_uvloop={"asyncio": False, "uvloop": True}.get(loop))


AIOMR_NAMES = (
    "aiomr.map_reduce",
    "aiomr.map_reduce_by_key",
    "aiomr.run",
    "aiomr.sources.files",
    "aiomr.cli.words_of",
)
"""What a script using aiomr imports at its top: the names these contenders call."""
JOBS: dict[str, tuple[Callable[[list[str], str], dict[str, int]], tuple[str, ...]]] = {
    "loop": (lambda paths, _: run_loop(paths), ()),
    "pool_tutorial": (lambda paths, _: run_pool_tutorial(paths), ()),
    "pool_counters": (lambda paths, _: run_pool_counters(paths), ()),
    "dask": (lambda paths, _: run_dask(paths), ("dask.bag", "dask.base", "dask.multiprocessing")),
    "aiomr_keyed": (lambda paths, loop: run_aiomr(paths, "keyed", loop), AIOMR_NAMES),
    "aiomr_keyed_per_line": (lambda paths, loop: run_aiomr(paths, "per-line", loop), AIOMR_NAMES),
    "aiomr_split_counter": (lambda paths, loop: run_aiomr(paths, "split", loop), AIOMR_NAMES),
}
"""Each contender: how to run it over the paths (with the loop choice), what it imports."""


def contender(args: list[str]) -> dict[str, Any]:
    """Run one contender in this (fresh) process; its counts to ``RESULT_FILE``."""
    key, list_file, result_file, loop = args
    with open(list_file, encoding="utf-8") as f:
        paths = f.read().splitlines()
    run, imports = JOBS[key]
    # imports are not part of the time
    _machine.import_names(imports, uvloop=key.startswith("aiomr") and loop != "asyncio")
    before, started = os.times(), time.perf_counter()
    counts = run(paths, loop)
    wall = time.perf_counter() - started
    _machine.stop_forkserver()  # its workers' CPU time reaches ours once it is reaped
    after = os.times()
    cpu = sum(after[:4]) - sum(before[:4])  # user, system, children's user and system
    with open(result_file, "wb") as f:
        pickle.dump(dict(counts), f, pickle.HIGHEST_PROTOCOL)
    return {"wall": wall, "cpu": cpu, "caller_peak": _machine.peak_rss()}


if __name__ == "__main__" and sys.argv[1:2] == ["--contender"]:
    _machine.contender_main(contender, sys.argv[2:])
