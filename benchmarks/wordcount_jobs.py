"""The word-count contenders: each timed run is this small program in a fresh process.

    python3 benchmarks/wordcount_jobs.py KEY PATHS_FILE RESULT_FILE LOOP

runs contender ``KEY`` over the files listed in ``PATHS_FILE``, pickles its counts to
``RESULT_FILE`` and prints its wall time, CPU time and peak RSS as JSON (``LOOP``: the
``--loop`` choice of ``wordcount.py``). ``wordcount.py`` starts it and checks the counts.

A contender's program is its own main module, as a user's script would be, and it imports
only what such a script needs: worker processes started with ``forkserver`` (aiomr's) or
``spawn`` (dask's processes scheduler) import the main module before their first task, and
the benchmark's own tables, statistics and text generator are no part of a word count.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import math
import multiprocessing
import operator
import os
import pickle
import resource
import string
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from _imports import import_names

WORKERS = 2
POOL_CHUNK_LINES = 50_000
"""Lines per task when a ``multiprocessing.Pool`` contender reads one big file itself."""

_PUNCTUATION = str.maketrans(string.punctuation, " " * len(string.punctuation))
_LOOP = "both"
"""The ``--loop`` choice of ``wordcount.py``, passed on by the command line."""


def use_uvloop() -> bool | None:
    """The ``use_uvloop`` argument of `aiomr.run` for the chosen loop."""
    return {"asyncio": False, "uvloop": True}.get(_LOOP)


# Tokenising ---------------------------------------------------------------------------------


def tokens(text: str) -> list[str]:
    """Return the words of ``text``: punctuation to spaces, lower-case, alphabetic only."""
    return [word for word in text.translate(_PUNCTUATION).lower().split() if word.isalpha()]


def line_pairs(line: str) -> Iterator[tuple[str, int]]:
    """Yield ``(word, count)`` once per distinct word of a line (a per-line combiner)."""
    return iter(Counter(tokens(line)).items())


def count_lines(lines: Iterable[str]) -> Counter[str]:
    """Count the words of ``lines`` with the single-process loop's body."""
    counts: Counter[str] = Counter()
    update = counts.update
    for line in lines:
        update(tokens(line))
    return counts


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


# The contenders ------------------------------------------------------------------------------


def _line_chunks(path: str, lines_per_chunk: int = POOL_CHUNK_LINES) -> Iterator[list[str]]:
    with open(path, encoding="utf-8", errors="replace") as f:
        while chunk := list(itertools.islice(f, lines_per_chunk)):
            yield chunk


def run_loop(paths: list[str]) -> dict[str, int]:
    """The baseline: one process reads every line, tokenises it and updates a Counter."""
    counts: Counter[str] = Counter()
    update = counts.update
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                update(tokens(line))
    return counts


def file_to_words(path: str) -> list[tuple[str, int]]:
    """The tutorial's map function: one file to a list of ``(word, 1)`` pairs."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return lines_to_words(f)


def lines_to_words(lines: Iterable[str]) -> list[tuple[str, int]]:
    """The tutorial's map function over lines the parent read."""
    output = []
    for line in lines:
        for word in tokens(line):
            output.append((word, 1))
    return output


def count_words(item: tuple[str, list[int]]) -> tuple[str, int]:
    """The tutorial's reduce function: one word and all its ones to its count."""
    word, occurrences = item
    return word, sum(occurrences)


def run_pool_tutorial(paths: list[str]) -> dict[str, int]:
    """The tutorial's ``multiprocessing.Pool`` map-reduce: pairs to the parent, grouped there.

    ``pool.map`` the map function over the files (one big file: over chunks of lines the
    parent reads), group every ``(word, 1)`` pair by word in the parent, then ``pool.map``
    the reduce function over the groups.
    """
    with multiprocessing.Pool(WORKERS) as pool:
        if len(paths) == 1:
            mapped = pool.map(lines_to_words, list(_line_chunks(paths[0])), chunksize=1)
        else:
            mapped = pool.map(file_to_words, paths, chunksize=1)
        partitioned: collections.defaultdict[str, list[int]] = collections.defaultdict(list)
        for word, one in itertools.chain.from_iterable(mapped):
            partitioned[word].append(one)
        del mapped
        reduced = pool.map(count_words, partitioned.items())
    return dict(reduced)


def count_file(path: str) -> Counter[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        return count_lines(f)


def run_pool_counters(paths: list[str]) -> dict[str, int]:
    """``multiprocessing.Pool``, one Counter per task, summed in the parent as they arrive."""
    counts: Counter[str] = Counter()
    with multiprocessing.Pool(WORKERS) as pool:
        if len(paths) == 1:
            partials = pool.imap_unordered(count_lines, _line_chunks(paths[0]))
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
    frequencies = bag.map(tokens).flatten().frequencies()
    (result,) = compute(frequencies, scheduler="processes", num_workers=WORKERS)
    return dict(result)


def run_aiomr_keyed(paths: list[str]) -> dict[str, int]:
    """The key-value job: ``map_reduce_by_key(files(...), words_of, operator.add)``."""
    import aiomr
    from aiomr.cli import words_of

    async def job() -> dict[str, int]:
        return await aiomr.map_reduce_by_key(
            aiomr.sources.files(paths, errors="replace"),
            words_of,
            operator.add,
            max_workers=WORKERS,
        )

    return aiomr.run(job(), use_uvloop=use_uvloop())


def run_aiomr_keyed_per_line(paths: list[str]) -> dict[str, int]:
    """The key-value job with a mapper that yields each line's distinct words once."""
    import aiomr

    async def job() -> dict[str, int]:
        return await aiomr.map_reduce_by_key(
            aiomr.sources.files(paths, errors="replace"),
            line_pairs,
            operator.add,
            max_workers=WORKERS,
        )

    return aiomr.run(job(), use_uvloop=use_uvloop())


def run_aiomr_split_counter(paths: list[str]) -> dict[str, int]:
    """``map_reduce`` over raw blocks: one Counter per split, the loop's body per line."""
    import aiomr

    async def job() -> Counter[str]:
        result: Counter[str] = await aiomr.map_reduce(
            aiomr.sources.files(paths, encoding=None),
            count_split_lines,
            merge_counts,
            mode="blocks",
            max_workers=WORKERS,
        )
        return result

    return aiomr.run(job(), use_uvloop=use_uvloop())


AIOMR_NAMES = (
    "aiomr.map_reduce",
    "aiomr.map_reduce_by_key",
    "aiomr.run",
    "aiomr.sources.files",
    "aiomr.cli.words_of",
)
"""What a script using aiomr imports at its top: the names these contenders call."""
DASK_NAMES = ("dask.bag", "dask.base", "dask.multiprocessing")


class Job:
    """How to run one contender, and what it imports before its clock starts."""

    __slots__ = ("aiomr", "imports", "run")

    def __init__(
        self,
        run: Callable[[list[str]], dict[str, int]],
        imports: tuple[str, ...] = (),
        *,
        aiomr: bool = False,
    ) -> None:
        self.run = run
        self.imports = imports
        self.aiomr = aiomr


JOBS = {
    "loop": Job(run_loop),
    "pool_tutorial": Job(run_pool_tutorial),
    "pool_counters": Job(run_pool_counters),
    "dask": Job(run_dask, DASK_NAMES),
    "aiomr_keyed": Job(run_aiomr_keyed, AIOMR_NAMES, aiomr=True),
    "aiomr_keyed_per_line": Job(run_aiomr_keyed_per_line, AIOMR_NAMES, aiomr=True),
    "aiomr_split_counter": Job(run_aiomr_split_counter, AIOMR_NAMES, aiomr=True),
}


# Measuring this process -----------------------------------------------------------------------


def stop_forkserver() -> None:
    """Stop multiprocessing's fork server, if this process started one, and reap it.

    Workers started through it are its children, not ours: their CPU time reaches our
    ``RUSAGE_CHILDREN`` only once the server itself has exited and been waited for.
    """
    from multiprocessing import forkserver

    server: Any = getattr(forkserver, "_forkserver", None)
    if server is not None and getattr(server, "_forkserver_pid", None) is not None:
        server._stop()


def peak_rss() -> int:
    """Return this process's peak RSS in bytes since it started its program (``VmHWM``).

    Not ``getrusage``'s ``ru_maxrss``: on Linux that keeps the high-water mark of the parent's
    memory the child was forked from, across ``exec``.
    """
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_seconds(before: os.times_result, after: os.times_result) -> float:
    own = (after.user - before.user) + (after.system - before.system)
    children = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return own + children


def main(argv: list[str]) -> None:
    """Run one contender in this (fresh) process; print its measurements as JSON."""
    global _LOOP
    key, list_file, result_file, _LOOP = argv
    with open(list_file, encoding="utf-8") as f:
        paths = f.read().splitlines()
    job = JOBS[key]
    import_names(job.imports)  # imports are not part of the time
    if job.aiomr and use_uvloop() is not False:
        with contextlib.suppress(ImportError):
            import_names(["uvloop"])
    run = job.run
    before = os.times()
    started = time.perf_counter()
    counts = run(paths)
    wall = time.perf_counter() - started
    stop_forkserver()
    cpu = cpu_seconds(before, os.times())
    peak = peak_rss()
    with open(result_file, "wb") as f:
        pickle.dump(dict(counts), f, pickle.HIGHEST_PROTOCOL)
    print(json.dumps({"wall": wall, "cpu": cpu, "caller_peak": peak}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
