"""N-gram totals: aiomr against the book's programs, worker pools, dask.bag and the limit.

The workload is the one of ``examples/ngram.py``: total the ``match_count`` of every word of a
Google Books 1-gram file (``word<TAB>year<TAB>match_count<TAB>volume_count``), generated once by
``examples/ngram_data.py`` (1 GB by default, seed 0) into ``/tmp/aiomr-bench/`` and reused.
Every contender uses 2 worker processes where it has workers, and finds the same answer:

1. ``loop``: the single-process loop of Matthew Fowler's *Python Concurrency with asyncio*
   (listing 6.7): ``readlines()``, ``str.split`` on tabs, totals in a dict;
2. ``book-asyncio``: the same book's asyncio program (listing 6.8): ``readlines()``, chunks of
   60,000 lines, one ``loop.run_in_executor`` per chunk on a ``ProcessPoolExecutor``,
   ``asyncio.gather``, then ``functools.reduce`` merging the dicts;
3. ``pool-map``: ``multiprocessing.Pool.map`` over the same line chunks (the tutorials' way);
4. ``dask-foldby`` and ``dask-partitions``: ``dask.bag.read_text`` in 32 MiB blocks, counted
   with ``foldby`` or with a per-partition dict and a tree reduction (``Bag.reduction``);
5. ``aiomultiprocess``: its ``Pool.map`` over the same line chunks;
6. ``aiomr-split``: aiomr's byte-range splits (``aiomr.sources.files(..., encoding=None)``,
   ``mode="blocks"``) with the tight counting loop of ``examples/ngram.py``;
7. ``aiomr-keyed``: the idiomatic key-value job: a mapper yielding ``(word, match_count)`` per
   decoded line, ``aiomr.map_reduce_by_key`` with ``operator.add``;
8. ``aiomr-lines``: the same job fed through the caller by ``aiomr.sources.lines`` (aiofiles);
9. ``limit``: the practical limit, a short hand-written program that cuts the file into two
   newline-aligned byte ranges and runs the same tight loop in 2 processes
   (``multiprocessing.Pool``), merging the two dicts at the end;
10. ``limit-mapper``: the same program driving the idiomatic mapper instead (decode each
   block, call ``word_and_count`` per line, add its pair into a dict): what the key-value
   job's mapper costs by itself, with no framework at all.

Each timed run starts a fresh Python process for one contender; contenders are interleaved
round by round, in rotating order. The wall time runs from just before the contender reads
anything or starts a worker until it holds its full result as ``{str: int}`` (imports are
outside; reading, worker start-up and decoding are inside). Measured per run, besides wall
time: CPU seconds (user + system of the contender's process over the timed part, plus every
descendant: reaped ones through the kernel's child accounting, live ones, such as a
``forkserver``, read with psutil); and, sampled from this (the parent) process with psutil
every 50 ms over the contender process's life, the peak RSS of the contender's main process
(the *caller*) and the peak over samples of the summed RSS of its whole process tree. Summed
RSS counts pages shared between forked processes once per process, so it overstates. For
the aiomr contenders a 10 ms ticker coroutine runs on the contender's event loop during the
job and records how late each tick wakes (event-loop lag).

Every result is checked before any figure is reported: every word's total must equal the
single-process loop's (and the generator's totals of its fixed words, the number of words and
the grand total), and so must the line ``Aardvark has appeared N times``.

Run it alone on the machine::

    flock /tmp/aiomr-bench.lock python3 benchmarks/ngram.py --write-docs
    python3 benchmarks/ngram.py --quick        # a smoke run on 20 MB

and ``python3 benchmarks/ngram.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import importlib
import json
import math
import multiprocessing
import operator
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common

WORKERS = 2
CHUNK_LINES = 60_000
"""Lines per task of the line-chunk contenders (the book's partition size)."""
BLOCK_SIZE = 64 * 1024
"""Bytes per read of the practical limit's workers: aiomr's split block size."""
DASK_BLOCKSIZE = 32 * 1024 * 1024
"""Bytes per dask.bag partition: about 15 partitions per worker on 1 GB."""
SEED = 0
DATA_DIR = Path("/tmp/aiomr-bench")
SAMPLE_SECONDS = 0.05
"""Interval of the memory sampler."""
REFRESH_EVERY = 4
"""The sampler re-lists the contender's descendants every this many samples (listing them
scans all of /proc, which costs CPU the contenders would rather have)."""
TICK_SECONDS = 0.01
RUN_TIMEOUT = 900.0
"""Seconds after which a contender run is killed and the benchmark fails."""
DEFAULT_SIZE = "1GB"
QUICK_SIZE = "20MB"
CHART = _common.REPO_ROOT / "docs" / "benchmarks-ngram.png"
SECTION = "ngram"
AIOMR_COLOUR = "#1f77b4"
LIMIT_COLOUR = "#2ca02c"
BASELINE_COLOUR = "#9a9a9a"

# The targets aiomr is held to.
SPLIT_TO_LIMIT = 1.10
"""The split path's wall time at most this multiple of the practical limit's."""
KEYED_SPEEDUP = 1.5
"""The idiomatic key-value job at least this many times faster than the single-process loop."""
CALLER_PEAK_MB = 150.0
LAG_P99_MS = 5.0

Totals = dict[str, int]
Outcome = tuple[Totals, list[float] | None]
"""What a contender returns: the totals, and the loop-lag samples when it measured them."""


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


def merge_totals(first: Totals, second: Totals) -> Totals:
    """Add ``second`` into ``first`` and return it (the book's ``merge_dictionaries``)."""
    for word, count in second.items():
        if word in first:
            first[word] = first[word] + count
        else:
            first[word] = count
    return first


def chunks_of(lines: list[str], size: int = CHUNK_LINES) -> Iterator[list[str]]:
    """Cut a list of lines into slices of ``size`` lines (the book's ``partition``)."""
    for start in range(0, len(lines), size):
        yield lines[start : start + size]


def read_lines(path: str) -> list[str]:
    """Read the whole file as a list of lines, as the book's programs do."""
    with open(path, encoding="utf-8") as f:
        return f.readlines()


SEPARATORS_ONLY = bytes(b for b in range(256) if b not in (9, 10))
"""What `bytes.translate` deletes to leave a block's tabs and newlines."""


def count_blocks(blocks: Iterable[bytes]) -> dict[bytes, int]:
    """Total the match counts of blocks of whole lines by word (the tight loop).

    The loop of ``examples/ngram.py``'s split way: newlines become tabs, so one ``split`` gives
    four fields per line; words are every fourth field from the first, counts every fourth from
    the third. Words stay bytes; they are decoded once, after the merge. A line without four
    fields would shift every field after it, so each block's separators are checked first, in
    C, unless the blocks come checked by aiomr's reader (``tsv_fields == 4``): every contender
    pays for one check.
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


# The contenders --------------------------------------------------------------------------------


def run_loop(path: str) -> Outcome:
    """1. The book's single-process loop."""
    freqs: Totals = {}
    for line in read_lines(path):
        data = line.split("\t")
        word = data[0]
        count = int(data[2])
        if word in freqs:
            freqs[word] = freqs[word] + count
        else:
            freqs[word] = count
    return freqs, None


async def _book_asyncio(path: str) -> Totals:
    # Reads the whole file on the event loop, as the program does: that is what is measured.
    contents = read_lines(path)
    loop = asyncio.get_running_loop()
    with concurrent.futures.ProcessPoolExecutor(WORKERS) as pool:
        tasks = [
            loop.run_in_executor(pool, functools.partial(count_lines, chunk))
            for chunk in chunks_of(contents)
        ]
        partials = await asyncio.gather(*tasks)
        return functools.reduce(merge_totals, partials)


def run_book_asyncio(path: str) -> Outcome:
    """2. The book's asyncio program (its default loop, its default start method: fork)."""
    return asyncio.run(_book_asyncio(path)), None


def run_pool_map(path: str) -> Outcome:
    """3. ``multiprocessing.Pool.map`` over line chunks (the default start method: fork)."""
    lines = read_lines(path)
    with multiprocessing.Pool(WORKERS) as pool:
        partials = pool.map(count_lines, chunks_of(lines))
    return functools.reduce(merge_totals, partials), None


def _dask_lines(path: str) -> Any:
    bag = importlib.import_module("dask.bag")  # untyped: through a module object
    return bag.read_text(path, blocksize=DASK_BLOCKSIZE, encoding="utf-8")


def _dask_compute(collection: Any) -> Any:
    dask = importlib.import_module("dask")
    return dask.compute(collection, scheduler="processes", num_workers=WORKERS)[0]


def _field_0(row: list[str]) -> str:
    return row[0]


def _add_match_count(total: int, row: list[str]) -> int:
    return total + int(row[2])


def run_dask_foldby(path: str) -> Outcome:
    """4a. ``dask.bag``: split every line, ``foldby`` word (its map-side combine per partition)."""
    rows = _dask_lines(path).str.split("\t")
    pairs = _dask_compute(rows.foldby(_field_0, _add_match_count, 0, operator.add, 0))
    return dict(pairs), None


def _merge_partials(partials: Iterable[Totals]) -> Totals:
    return functools.reduce(merge_totals, partials, {})


def run_dask_partitions(path: str) -> Outcome:
    """4b. ``dask.bag``: one dict per partition, merged by ``Bag.reduction``'s tree."""
    reduction = _dask_lines(path).reduction(count_lines, _merge_partials)
    return _dask_compute(reduction), None


async def _count_lines_async(chunk: list[str]) -> Totals:
    return count_lines(chunk)


async def _aiomultiprocess(path: str) -> Totals:
    import aiomultiprocess

    contents = read_lines(path)
    async with aiomultiprocess.Pool(WORKERS) as pool:
        partials = await pool.map(_count_lines_async, chunks_of(contents))
    return functools.reduce(merge_totals, partials)


def run_aiomultiprocess(path: str) -> Outcome:
    """5. ``aiomultiprocess.Pool.map`` over line chunks (its own start method: spawn)."""
    return asyncio.run(_aiomultiprocess(path)), None


async def _ticker(lags: list[float]) -> None:
    """Sleep 10 ms at a time and record how late each wake-up is."""
    clock = time.perf_counter
    while True:
        before = clock()
        await asyncio.sleep(TICK_SECONDS)
        lags.append(clock() - before - TICK_SECONDS)


async def _with_ticker(job: Awaitable[Totals]) -> Outcome:
    lags: list[float] = []
    ticker = asyncio.create_task(_ticker(lags))
    try:
        totals = await job
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    return totals, lags


async def _aiomr_split(path: str) -> Totals:
    import aiomr
    import aiomr.sources

    empty: dict[bytes, int] = {}
    totals = await aiomr.map_reduce(
        aiomr.sources.files(path, encoding=None, format="tsv", fields=4),
        count_blocks,
        merge_bytes_totals,
        initial=empty,
        mode="blocks",
        max_workers=WORKERS,
    )
    return await asyncio.to_thread(decode_totals, totals)


def run_aiomr_split(path: str) -> Outcome:
    """6. aiomr's byte-range splits with the tight loop (``examples/ngram.py``'s split way)."""
    import aiomr

    return aiomr.run(_with_ticker(_aiomr_split(path)))


async def _aiomr_keyed(path: str) -> Totals:
    import aiomr
    import aiomr.sources

    return await aiomr.map_reduce_by_key(
        aiomr.sources.files(path), word_and_count, operator.add, max_workers=WORKERS
    )


def run_aiomr_keyed(path: str) -> Outcome:
    """7. The idiomatic key-value job on byte-range splits."""
    import aiomr

    return aiomr.run(_with_ticker(_aiomr_keyed(path)))


async def _aiomr_lines(path: str) -> Totals:
    import aiomr
    import aiomr.sources

    lines: aiomr.sources.LineSource[str] = aiomr.sources.lines(path)
    return await aiomr.map_reduce_by_key(lines, word_and_count, operator.add, max_workers=WORKERS)


def run_aiomr_lines(path: str) -> Outcome:
    """8. The idiomatic job with every line streamed through the caller."""
    import aiomr

    return aiomr.run(_with_ticker(_aiomr_lines(path)))


def byte_range_blocks(path: str, start: int, end: int) -> Iterator[bytes]:
    """Yield blocks of whole lines from bytes ``[start, end)`` (both on line boundaries)."""
    with open(path, "rb") as f:
        f.seek(start)
        remaining = end - start
        rest = b""
        while remaining > 0:
            data = f.read(min(BLOCK_SIZE, remaining))
            if not data:
                break
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
    """Drive the idiomatic mapper over one byte range as tightly as Python allows (in a worker).

    No framework: decode each block, split its lines, call `word_and_count` per line and add
    its pairs into one dict. What is left is the cost of the mapper itself.
    """
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


def run_limit(path: str) -> Outcome:
    """9. The practical limit: two byte ranges, the tight loop, two processes."""
    with multiprocessing.Pool(WORKERS) as pool:
        first, second = pool.map(count_byte_range, halves(path), chunksize=1)
    return decode_totals(merge_bytes_totals(first, second)), None


def run_limit_mapper(path: str) -> Outcome:
    """10. The same limit for the idiomatic mapper: two byte ranges, two processes."""
    with multiprocessing.Pool(WORKERS) as pool:
        first, second = pool.map(count_byte_range_with_mapper, halves(path), chunksize=1)
    return merge_totals(first, second), None


@dataclass(frozen=True)
class Contender:
    """One way of computing the totals, run in a fresh process per run."""

    key: str
    label: str
    run: Callable[[str], Outcome]
    modules: tuple[str, ...] = ()
    """Imported before the clock starts: modules, or the names a contender calls."""
    aiomr: bool = False
    slow: bool = False
    """A baseline that may run fewer times (``--slow-runs``)."""


CONTENDERS: tuple[Contender, ...] = (
    Contender("loop", "the book's single-process loop (listing 6.7)", run_loop, slow=True),
    Contender(
        "book-asyncio",
        "the book's asyncio program (listing 6.8)",
        run_book_asyncio,
        slow=True,
    ),
    Contender("pool-map", "`multiprocessing.Pool.map` over line chunks", run_pool_map, slow=True),
    Contender(
        "dask-foldby",
        "`dask.bag`: `read_text` + `foldby`",
        run_dask_foldby,
        ("dask", "dask.bag", "dask.multiprocessing"),
        slow=True,
    ),
    Contender(
        "dask-partitions",
        "`dask.bag`: `read_text` + per-partition dict, `reduction`",
        run_dask_partitions,
        ("dask", "dask.bag", "dask.multiprocessing"),
    ),
    Contender(
        "aiomultiprocess",
        "`aiomultiprocess` `Pool.map` over line chunks",
        run_aiomultiprocess,
        ("aiomultiprocess",),
        slow=True,
    ),
    Contender(
        "aiomr-split",
        'aiomr: byte-range splits, tight loop (`mode="blocks"`)',
        run_aiomr_split,
        ("aiomr.map_reduce", "aiomr.run", "aiomr.sources.files"),
        aiomr=True,
    ),
    Contender(
        "aiomr-keyed",
        "aiomr: idiomatic key-value job (`map_reduce_by_key`)",
        run_aiomr_keyed,
        ("aiomr.map_reduce_by_key", "aiomr.run", "aiomr.sources.files"),
        aiomr=True,
    ),
    Contender(
        "aiomr-lines",
        "aiomr: key-value job fed by `sources.lines`",
        run_aiomr_lines,
        ("aiomr.map_reduce_by_key", "aiomr.run", "aiomr.sources.lines"),
        aiomr=True,
    ),
    Contender(
        "limit",
        "practical limit: 2 byte ranges, tight loop, 2 processes",
        run_limit,
    ),
    Contender(
        "limit-mapper",
        "practical limit, idiomatic mapper: 2 byte ranges, 2 processes",
        run_limit_mapper,
    ),
)
BY_KEY = {c.key: c for c in CONTENDERS}
BASELINES = (
    "loop",
    "book-asyncio",
    "pool-map",
    "dask-foldby",
    "dask-partitions",
    "aiomultiprocess",
)
"""The contenders aiomr's split path and key-value job must both beat."""


# Inside a contender's process ------------------------------------------------------------------


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and of its reaped children (and theirs)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _live_descendants_cpu_seconds() -> float:
    """CPU seconds of the descendants still alive (a forkserver and what it reaped)."""
    import psutil

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            t = child.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def _vm_hwm() -> int:
    """This process's peak RSS in bytes (``VmHWM``), for a cross-check of the sampler."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def contender_main(key: str, path: str, out: str) -> None:
    """Run one contender once and write its totals and measurements to ``out``."""
    contender = BY_KEY[key]
    _common.import_names(contender.modules)
    if contender.aiomr:  # aiomr.run's loop, when installed
        with contextlib.suppress(ImportError):
            _common.import_names(["uvloop"])
    import psutil  # noqa: F401  (imported before the clock starts, used after it stops)

    cpu_before = _own_cpu_seconds()
    started = time.perf_counter()
    totals, lags = contender.run(path)
    wall = time.perf_counter() - started
    cpu = _own_cpu_seconds() - cpu_before + _live_descendants_cpu_seconds()
    report = {"totals": totals, "wall": wall, "cpu": cpu, "lags": lags, "vm_hwm": _vm_hwm()}
    with open(out, "wb") as f:
        pickle.dump(report, f, pickle.HIGHEST_PROTOCOL)


# In the parent: running, sampling, checking ----------------------------------------------------


class TreeSampler:
    """Sample the RSS of a process and of its whole tree every `SAMPLE_SECONDS`, in a thread."""

    def __init__(self, pid: int) -> None:
        import psutil

        self._psutil = psutil
        self._root = psutil.Process(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.caller_peak = 0
        self.tree_peak = 0
        self.samples = 0

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        psutil = self._psutil
        children: list[Any] = []
        tick = 0
        while not self._stop.is_set():
            try:
                caller = self._root.memory_info().rss
                if tick % REFRESH_EVERY == 0:
                    children = self._root.children(recursive=True)
            except psutil.Error:
                return  # the contender has exited
            tree = caller
            for child in children:
                with contextlib.suppress(psutil.Error):
                    tree += child.memory_info().rss
            self.caller_peak = max(self.caller_peak, caller)
            self.tree_peak = max(self.tree_peak, tree)
            self.samples += 1
            tick += 1
            self._stop.wait(SAMPLE_SECONDS)


@dataclass
class Run:
    """One timed run of one contender."""

    key: str
    round: int
    wall: float
    cpu: float
    caller_peak: int
    tree_peak: int
    vm_hwm: int
    lag_p99: float | None = None
    lag_max: float | None = None
    ticks: int = 0


def run_isolated(contender: Contender, path: str, round_: int) -> tuple[Run, Totals]:
    """Run ``contender`` once in a fresh Python process; return its figures and totals."""
    with tempfile.TemporaryDirectory(prefix="aiomr-ngram-") as tmp:
        out = os.path.join(tmp, "report.pkl")
        command = [sys.executable, __file__, "--contender", contender.key, path, out]
        process = subprocess.Popen(command, stdout=sys.stderr)
        with TreeSampler(process.pid) as sampler:
            try:
                code = process.wait(RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise SystemExit(f"{contender.key}: no result after {RUN_TIMEOUT:.0f} s") from None
        if code != 0:
            raise SystemExit(f"{contender.key}: the contender's process exited with {code}")
        with open(out, "rb") as f:
            report = pickle.load(f)
    run = Run(
        contender.key,
        round_,
        report["wall"],
        report["cpu"],
        sampler.caller_peak,
        sampler.tree_peak,
        report["vm_hwm"],
    )
    lags: list[float] | None = report["lags"]
    if lags:
        run.lag_p99 = _common.percentile(lags, 99)
        run.lag_max = max(lags)
        run.ticks = len(lags)
    return run, report["totals"]


@dataclass(frozen=True)
class Expected:
    """What the generator says the file holds."""

    path: str
    size_bytes: int
    lines: int
    words: int
    total_match_count: int
    totals: dict[str, int]


def check_against_generator(key: str, totals: Totals, expected: Expected) -> None:
    """Fail unless ``totals`` agrees with the figures the generator wrote down."""
    problems = []
    if len(totals) != expected.words:
        problems.append(f"{len(totals):,} words, not {expected.words:,}")
    if sum(totals.values()) != expected.total_match_count:
        problems.append(f"a grand total of {sum(totals.values()):,}")
    problems += [
        f"{word} has appeared {totals.get(word, 0)} times, not {count}"
        for word, count in expected.totals.items()
        if totals.get(word) != count
    ]
    if problems:
        raise SystemExit(f"{key}: wrong answer: {'; '.join(problems)}")


def check_against_loop(key: str, totals: Totals, reference: Totals) -> None:
    """Fail unless every word's total equals the single-process loop's."""
    line = f"Aardvark has appeared {totals.get('Aardvark', 0)} times"
    want = f"Aardvark has appeared {reference.get('Aardvark', 0)} times"
    if line != want:
        raise SystemExit(f"{key}: {line!r}, but the single-process loop says {want!r}")
    if totals != reference:
        wrong = sorted(
            w for w in reference.keys() | totals.keys() if totals.get(w) != reference.get(w)
        )
        shown = ", ".join(f"{w!r}: {totals.get(w)} != {reference.get(w)}" for w in wrong[:5])
        raise SystemExit(
            f"{key}: {len(wrong):,} words differ from the single-process loop: {shown}"
        )


# The input -------------------------------------------------------------------------------------


def ensure_input(size: int) -> Expected:
    """Return the generated file of about ``size`` bytes, generating it once (untimed)."""
    path = DATA_DIR / f"ngram-{size}-seed{SEED}.tsv"
    facts = path.with_suffix(".json")
    if path.exists() and facts.exists():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            data = json.loads(facts.read_text(encoding="utf-8"))
            if data["size_bytes"] == path.stat().st_size:
                return Expected(**data)
    sys.path.insert(0, str(_common.REPO_ROOT / "examples"))
    from ngram_data import generate

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    _common.progress(f"generating {size:,} bytes of 1-gram data into {path} (once)")
    partial = path.with_name(path.name + f".{os.getpid()}.part")
    info = generate(partial, size, seed=SEED)
    os.replace(partial, path)
    expected = Expected(
        str(path), info.size_bytes, info.lines, info.words, info.total_match_count, info.totals
    )
    partial_facts = facts.with_name(facts.name + f".{os.getpid()}.part")
    partial_facts.write_text(json.dumps(dataclasses.asdict(expected)), encoding="utf-8")
    os.replace(partial_facts, facts)
    return expected


def warm_page_cache(path: str) -> None:
    """Read the file once so every contender finds it in the page cache."""
    with open(path, "rb") as f:
        while f.read(16 << 20):
            pass


# Measuring -------------------------------------------------------------------------------------


@dataclass
class Measurements:
    """Every run of a benchmark, and what it ran on."""

    expected: Expected
    runs: list[Run] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    rounds: int = 0
    slow_runs: int = 0
    machine: str = ""
    aiomr: str = ""
    """aiomr's version and the checkout's commit."""
    started: float = 0.0
    seconds: float = 0.0

    def of(self, key: str) -> list[Run]:
        return [r for r in self.runs if r.key == key]


def measure(
    contenders: Sequence[Contender], expected: Expected, runs: int, slow_runs: int
) -> Measurements:
    """Run every contender ``runs`` times (slow baselines ``slow_runs`` times), interleaved."""
    result = Measurements(
        expected, keys=[c.key for c in contenders], rounds=runs, slow_runs=slow_runs
    )
    result.machine = _common.machine_line()
    result.aiomr = dict(_common.machine_rows())["aiomr"]
    result.started = time.time()
    began = time.perf_counter()
    _common.progress(f"warming the page cache with {expected.path}")
    warm_page_cache(expected.path)
    reference: Totals | None = None
    unchecked: list[tuple[str, Totals]] = []
    for round_ in range(runs):
        for contender in _common.rotated(list(contenders), round_):
            if contender.slow and round_ >= slow_runs:
                continue
            run, totals = run_isolated(contender, expected.path, round_)
            check_against_generator(contender.key, totals, expected)
            if contender.key == "loop" and reference is None:
                reference = totals
                for key, earlier in unchecked:
                    check_against_loop(key, earlier, reference)
                unchecked.clear()
            elif reference is not None:
                check_against_loop(contender.key, totals, reference)
            elif any(c.key == "loop" for c in contenders):
                unchecked.append((contender.key, totals))
            del totals
            result.runs.append(run)
            lag = ""
            if run.lag_p99 is not None and run.lag_max is not None:
                lag = f", loop lag p99 {run.lag_p99 * 1e3:.1f} ms max {run.lag_max * 1e3:.1f} ms"
            _common.progress(
                f"round {round_ + 1}/{runs} {contender.key}: {run.wall:.2f} s, "
                f"CPU {run.cpu:.1f} s, caller {_mb(run.caller_peak)} MB, "
                f"all {_mb(run.tree_peak)} MB{lag}"
            )
    result.seconds = time.perf_counter() - began
    return result


# Reporting -------------------------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f}"


def _med(runs: Sequence[Run], name: str) -> float:
    values = [getattr(r, name) for r in runs if getattr(r, name) is not None]
    return _common.median(values) if values else math.nan


def speedup_over(m: Measurements, key: str, baseline: str) -> float:
    """Median over rounds of ``baseline``'s wall time over ``key``'s, in the same round.

    Rounds in which only one of the two ran (a slow baseline run fewer times) fall back to
    the ratio of the medians.
    """
    ours = {r.round: r.wall for r in m.of(key)}
    theirs = {r.round: r.wall for r in m.of(baseline)}
    paired = [theirs[k] / ours[k] for k in ours.keys() & theirs.keys()]
    if paired:
        return _common.median(paired)
    if ours and theirs:
        return _common.median(theirs.values()) / _common.median(ours.values())
    return math.nan


def wall_of(m: Measurements, key: str) -> float:
    return _med(m.of(key), "wall")


def main_table(m: Measurements) -> str:
    megabytes = m.expected.size_bytes / 1e6
    headers = [
        "contender",
        "runs",
        "wall (median)",
        "range",
        "MB/s",
        "CPU s",
        "caller peak RSS",
        "all processes peak RSS",
        "speed-up vs loop",
    ]
    rows = []
    for key in m.keys:
        runs = m.of(key)
        if not runs:
            continue
        wall = _med(runs, "wall")
        walls = [r.wall for r in runs]
        speedup = speedup_over(m, key, "loop") if m.of("loop") else math.nan
        rows.append(
            [
                BY_KEY[key].label,
                str(len(runs)),
                f"{wall:.1f} s",
                f"{min(walls):.1f} to {max(walls):.1f} s",
                f"{megabytes / wall:.0f}",
                f"{_med(runs, 'cpu'):.1f}",
                f"{_mb(_med(runs, 'caller_peak'))} MB",
                f"{_mb(_med(runs, 'tree_peak'))} MB",
                f"{_common.fmt_ratio(speedup)}x" if not math.isnan(speedup) else "n/a",
            ]
        )
    return _common.markdown_table(headers, rows)


def lag_table(m: Measurements) -> str:
    headers = [
        "contender",
        "runs",
        "ticks per run",
        "lag p99 (median of runs)",
        "lag max (worst run)",
    ]
    rows = []
    for key in m.keys:
        runs = [r for r in m.of(key) if r.lag_p99 is not None]
        if not runs:
            continue
        rows.append(
            [
                BY_KEY[key].label,
                str(len(runs)),
                f"{_common.median(r.ticks for r in runs):,.0f}",
                f"{_common.fmt_ms(_med(runs, 'lag_p99'), 1)} ms",
                f"{_common.fmt_ms(max(r.lag_max or 0.0 for r in runs), 1)} ms",
            ]
        )
    return _common.markdown_table(headers, rows)


@dataclass(frozen=True)
class Target:
    what: str
    measured: str
    met: bool


def targets(m: Measurements) -> list[Target]:
    """Check aiomr's split path and key-value job against their targets."""
    out: list[Target] = []
    have = set(m.keys)
    if {"aiomr-split", "limit"} <= have:
        ratio = 1.0 / speedup_over(m, "aiomr-split", "limit")
        out.append(
            Target(
                f"split path within {SPLIT_TO_LIMIT - 1:.0%} of the practical limit's time",
                f"{ratio:.2f}x the limit's time",
                ratio <= SPLIT_TO_LIMIT,
            )
        )
    if {"aiomr-keyed", "loop"} <= have:
        speedup = speedup_over(m, "aiomr-keyed", "loop")
        out.append(
            Target(
                f"key-value job ≥ {KEYED_SPEEDUP}x faster than the single-process loop",
                f"{speedup:.2f}x",
                speedup >= KEYED_SPEEDUP,
            )
        )
    if {"limit-mapper", "loop"} <= have:
        ceiling = speedup_over(m, "limit-mapper", "loop")
        out.append(
            Target(
                "(diagnostic) the idiomatic mapper's own ceiling: its practical limit against "
                "the single-process loop",
                f"{ceiling:.2f}x",
                ceiling >= KEYED_SPEEDUP,
            )
        )
    if {"aiomr-keyed", "limit-mapper"} <= have:
        ratio = 1.0 / speedup_over(m, "aiomr-keyed", "limit-mapper")
        out.append(
            Target(
                "(diagnostic) key-value job within 10% of the idiomatic mapper's practical limit",
                f"{ratio:.2f}x that limit's time",
                ratio <= SPLIT_TO_LIMIT,
            )
        )
    baselines = [b for b in BASELINES if b in have]
    for key, name in (("aiomr-split", "split path"), ("aiomr-keyed", "key-value job")):
        if key not in have or not baselines:
            continue
        best = min(baselines, key=lambda b: wall_of(m, b))
        ratio = wall_of(m, best) / wall_of(m, key)
        out.append(
            Target(
                f"{name} ahead of every other baseline",
                f"{wall_of(m, key):.1f} s against {wall_of(m, best):.1f} s for the fastest, "
                f"{BY_KEY[best].label} ({ratio:.2f}x its speed)",
                ratio > 1.0,
            )
        )
    for key, name in (("aiomr-split", "split path"), ("aiomr-keyed", "key-value job")):
        if key not in have:
            continue
        peak = _med(m.of(key), "caller_peak") / 1e6
        out.append(
            Target(
                f"{name}: caller peak RSS < {CALLER_PEAK_MB:.0f} MB",
                f"{peak:.0f} MB",
                peak < CALLER_PEAK_MB,
            )
        )
        p99 = _med(m.of(key), "lag_p99") * 1e3
        out.append(
            Target(
                f"{name}: event-loop lag p99 ≤ {LAG_P99_MS:.0f} ms",
                f"{p99:.1f} ms",
                p99 <= LAG_P99_MS,
            )
        )
    return out


def target_table(m: Measurements) -> str:
    rows = [[t.what, t.measured, _common.verdict(t.met)] for t in targets(m)]
    return _common.markdown_table(["target", "measured", "verdict"], rows, left=(0, 1))


def fastest_dask(m: Measurements) -> str | None:
    variants = [k for k in ("dask-foldby", "dask-partitions") if m.of(k)]
    return min(variants, key=lambda k: wall_of(m, k)) if variants else None


def draw_chart(m: Measurements, path: Path) -> None:
    """Draw median wall time per contender as horizontal bars, with the range of the runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.artist import Artist
    from matplotlib.patches import Patch

    keys = [k for k in m.keys if m.of(k)]
    walls = [wall_of(m, k) for k in keys]
    low = [w - min(r.wall for r in m.of(k)) for k, w in zip(keys, walls, strict=True)]
    high = [max(r.wall for r in m.of(k)) - w for k, w in zip(keys, walls, strict=True)]
    colours = [
        AIOMR_COLOUR
        if BY_KEY[k].aiomr
        else LIMIT_COLOUR
        if k.startswith("limit")
        else BASELINE_COLOUR
        for k in keys
    ]
    labels = [BY_KEY[k].label.replace("`", "") for k in keys]
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(keys) + 1.6), dpi=110)
    positions = list(range(len(keys)))[::-1]
    ax.barh(positions, walls, color=colours, xerr=[low, high], capsize=3, ecolor="#444444")
    ax.set_yticks(positions, labels)
    ax.tick_params(axis="y", labelsize=9)
    loop = wall_of(m, "loop") if m.of("loop") else math.nan
    top = max(w + h for w, h in zip(walls, high, strict=True))
    for y, key, wall, extra in zip(positions, keys, walls, high, strict=True):
        text = f"{wall:.1f} s"
        if not math.isnan(loop) and key != "loop":
            text += f"  (speed-up {speedup_over(m, key, 'loop'):.2f}x)"
        ax.text(
            wall + extra + top * 0.01,
            y,
            text,
            va="center",
            fontsize=8.5,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1},
        )
    handles: list[Artist] = [
        Patch(color=AIOMR_COLOUR, label="aiomr"),
        Patch(color=LIMIT_COLOUR, label="practical limit"),
        Patch(color=BASELINE_COLOUR, label="baselines"),
    ]
    if not math.isnan(loop):
        handles.append(
            ax.axvline(
                loop, color="#d62728", linestyle="--", linewidth=1, label="single-process loop"
            )
        )
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.1),
        ncol=len(handles),
        fontsize=8.5,
        frameon=False,
    )
    ax.set_xlim(0, top * 1.32)
    ax.set_xlabel("wall time, seconds (median; whiskers: fastest to slowest run) — lower is better")
    size = m.expected.size_bytes / 1e9
    ax.set_title(
        f"Total match_count per word, {size:.2f} GB 1-gram file, {WORKERS} workers",
        fontsize=11,
    )
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def render(m: Measurements) -> str:
    """Return the docs section: what was measured, the chart and the tables."""
    e = m.expected
    dask = fastest_dask(m)
    runs_note = f"Each contender ran {m.rounds} time{'s' if m.rounds > 1 else ''}"
    if m.slow_runs < m.rounds and any(BY_KEY[k].slow for k in m.keys):
        slow = ", ".join(BY_KEY[k].label for k in m.keys if BY_KEY[k].slow)
        runs_note += f" ({m.slow_runs} times for the slow baselines: {slow})"
    dask_note = ""
    if dask is not None:
        other = "dask-foldby" if dask == "dask-partitions" else "dask-partitions"
        dask_note = (
            f" Of the two idiomatic `dask.bag` programs, the faster here is "
            f"*{BY_KEY[dask].label.replace('`', '')}* ({wall_of(m, dask):.1f} s against "
            f"{wall_of(m, other):.1f} s); it is the dask figure the targets compare with."
            if m.of(other)
            else ""
        )
    parts = [
        "## N-gram totals: aiomr against the usual ways",
        "",
        f"{m.machine} aiomr {m.aiomr}." if m.aiomr else m.machine,
        "",
        f"The workload of `examples/ngram.py`: total the `match_count` of every word of a "
        f"Google Books 1-gram file generated by `examples/ngram_data.py` (seed {SEED}: "
        f"{e.size_bytes / 1e6:,.0f} MB, {e.lines:,} lines, {e.words:,} distinct words, "
        f"sorted by word), already in the page cache. Every contender uses {WORKERS} worker "
        "processes where it has workers. The baselines are the single-process loop and the "
        "asyncio program of Matthew Fowler's *Python Concurrency with asyncio* (listings 6.7 "
        f"and 6.8: `readlines()`, {CHUNK_LINES:,}-line chunks, `run_in_executor` on a "
        "`ProcessPoolExecutor`, `gather`, `functools.reduce`), `multiprocessing.Pool.map` and "
        "`aiomultiprocess`'s `Pool.map` over the same chunks, and `dask.bag.read_text` in "
        f"{DASK_BLOCKSIZE >> 20} MiB partitions (processes scheduler) counted two ways. The "
        "*practical limit* is a short hand-written program that cuts the file into two "
        "newline-aligned byte ranges and runs the tight loop of `examples/ngram.py` on each "
        "in its own process (`multiprocessing.Pool`, fork), then merges the two dicts; aiomr's "
        "split path runs the same loop. The *practical limit for the idiomatic mapper* is that "
        "program with the key-value job's mapper in place of the tight loop (decode each block, "
        "call `word_and_count` per line, add its pair into a dict): the fastest that mapper "
        "can run on two processes, with no framework around it.",
        "",
        f"{runs_note}, each run in a fresh Python process, interleaved round by round in "
        "rotating order; the table gives medians. Wall time runs from just before the contender "
        "reads anything or starts a worker to the moment it holds the full `{word: total}` "
        "dict of text (imports excluded; worker start-up and decoding included). *CPU s* is "
        "user + system time of the contender's process and all its descendants over that "
        "span. Memory is sampled by the parent with psutil every "
        f"{SAMPLE_SECONDS * 1e3:.0f} ms: *caller* is the contender's main process, *all "
        "processes* the sum of RSS over its process tree at each sample, maximum over samples "
        "(summed RSS counts pages shared by forked processes once per process, so it "
        "overstates for the fork-based baselines). *Speed-up vs loop* is the median over "
        "rounds of the loop's wall time over the contender's in the same round. The aiomr "
        "contenders run on `aiomr.run` (uvloop when installed) and use the library's defaults "
        "besides `max_workers`. Every contender's totals equalled the single-process loop's "
        "for every word (and `Aardvark has appeared "
        f"{e.totals.get('Aardvark', 0)} times`, as the generator wrote)." + dask_note,
        "",
        "![Median wall time per contender](benchmarks-ngram.png)",
        "",
        main_table(m),
        "",
        f"Event-loop lag of the aiomr contenders: a coroutine sleeps {TICK_SECONDS * 1e3:.0f} ms "
        "at a time on the contender's event loop during the job and records how late each "
        "wake-up is.",
        "",
        lag_table(m),
        "",
        "### Against the targets",
        "",
        target_table(m),
        "",
        f"The whole benchmark took {m.seconds / 60:.0f} minutes. Reproduce with:",
        "",
        "```console",
        "flock /tmp/aiomr-bench.lock python3 benchmarks/ngram.py --write-docs",
        "```",
    ]
    return "\n".join(parts)


# Saving and loading measurements ---------------------------------------------------------------


def save(m: Measurements, path: Path) -> None:
    data = dataclasses.asdict(m)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def load(path: Path) -> Measurements:
    data = json.loads(path.read_text(encoding="utf-8"))
    data["expected"] = Expected(**data["expected"])
    data["runs"] = [Run(**r) for r in data["runs"]]
    return Measurements(**data)


# Command line ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--size", default=None, help=f"input size (default {DEFAULT_SIZE})")
    p.add_argument("--runs", type=int, default=None, help="timed runs per contender (default 3)")
    p.add_argument(
        "--slow-runs",
        type=int,
        default=None,
        help="timed runs of the slow baselines (default: as --runs)",
    )
    p.add_argument("--only", default=None, help="comma-separated contenders to run (default: all)")
    p.add_argument("--quick", action="store_true", help=f"a smoke run on {QUICK_SIZE}, once")
    p.add_argument(
        "--write-docs",
        action="store_true",
        help=f"write the section of {_common.DOCS_PAGE.relative_to(_common.REPO_ROOT)} "
        f"and {CHART.relative_to(_common.REPO_ROOT)}",
    )
    p.add_argument(
        "--save", type=Path, default=None, help="save the raw measurements to this JSON file"
    )
    p.add_argument(
        "--load", type=Path, default=None, help="report measurements saved by --save, run nothing"
    )
    p.add_argument("--contender", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        p.error("--runs must be >= 1")
    if args.slow_runs is not None and args.slow_runs < 1:
        p.error("--slow-runs must be >= 1")
    if args.quick and args.write_docs:
        p.error("--quick figures are not for the docs; drop --write-docs")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.contender:
        contender_main(*args.contender)
        return 0
    if args.load is not None:
        m = load(args.load)
    else:
        sys.path.insert(0, str(_common.REPO_ROOT / "examples"))
        from ngram_data import parse_size

        size = parse_size(args.size or (QUICK_SIZE if args.quick else DEFAULT_SIZE))
        runs = args.runs or (1 if args.quick else 3)
        slow_runs = min(args.slow_runs or runs, runs)
        contenders = list(CONTENDERS)
        if args.only:
            wanted = [k.strip() for k in args.only.split(",")]
            unknown = [k for k in wanted if k not in BY_KEY]
            if unknown:
                raise SystemExit(
                    f"unknown contenders: {', '.join(unknown)}; try {', '.join(BY_KEY)}"
                )
            contenders = [c for c in CONTENDERS if c.key in wanted]
        expected = ensure_input(size)
        m = measure(contenders, expected, runs, slow_runs)
        if args.save is not None:
            save(m, args.save)
    body = render(m)
    print(body)
    if args.write_docs:
        draw_chart(m, CHART)
        _common.write_extra_section(SECTION, body)
        _common.progress(
            f"wrote {_common.DOCS_PAGE.relative_to(_common.REPO_ROOT)} and "
            f"{CHART.relative_to(_common.REPO_ROOT)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
