"""N-gram totals: aiomr against the book's programs, worker pools, dask.bag and the limit.

The workload of ``examples/ngram.py`` (``_ngram_workload.py``); every contender (`CONTENDERS`)
runs in a fresh process per run and its totals are checked word for word. docs/benchmarks.md
says what is measured and how.

    flock /tmp/aiomr-bench.lock python3 benchmarks/ngram.py --write-docs
    python3 benchmarks/ngram.py --quick        # a smoke run on 20 MB
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import functools
import importlib
import multiprocessing
import operator
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _chart
import _harness as h
import _isolated
import _machine
from _ngram_workload import (
    WORKERS,
    Expected,
    Totals,
    aardvark,
    add_match_count,
    chunks_of,
    count_lines,
    count_lines_async,
    ensure_input,
    field_0,
    keyed_job,
    merge_partials,
    merge_totals,
    parse_size,
    read_lines,
    run_limit,
    run_limit_mapper,
    split_job,
    with_lag,
)

DASK_BLOCKSIZE = 32 * 1024 * 1024
"""Bytes per dask.bag partition: about 15 partitions per worker on 1 GB."""
RUN_TIMEOUT = 900.0
SPLIT_TO_LIMIT, KEYED_SPEEDUP, CALLER_PEAK_MB, LAG_P99_MS = 1.10, 1.5, 150.0, 5.0
"""The targets: the split path's time at most 1.1x the limit's; the key-value job 1.5x
faster than the loop; the caller's peak RSS and the loop lag of both."""


def run_loop(path: str) -> Totals:
    """1. The book's single-process loop (listing 6.7)."""
    freqs: Totals = {}
    for line in read_lines(path):
        data = line.split("\t")
        word = data[0]
        count = int(data[2])
        if word in freqs:
            freqs[word] = freqs[word] + count
        else:
            freqs[word] = count
    return freqs


async def book_asyncio(path: str) -> Totals:
    """2. The book's asyncio program (listing 6.8; its default start method: fork).

    It reads the whole file on the event loop, as the program does: that is what is measured.
    """
    contents = read_lines(path)
    loop = asyncio.get_running_loop()
    with concurrent.futures.ProcessPoolExecutor(WORKERS) as pool:
        tasks = [
            loop.run_in_executor(pool, functools.partial(count_lines, chunk))
            for chunk in chunks_of(contents)
        ]
        return functools.reduce(merge_totals, await asyncio.gather(*tasks))


def run_pool_map(path: str) -> Totals:
    """3. ``multiprocessing.Pool.map`` over line chunks (the default start method: fork)."""
    lines = read_lines(path)
    with multiprocessing.Pool(WORKERS) as pool:
        return functools.reduce(merge_totals, pool.map(count_lines, chunks_of(lines)))


def dask_lines(path: str) -> Any:
    bag = importlib.import_module("dask.bag")  # untyped: through a module object
    return bag.read_text(path, blocksize=DASK_BLOCKSIZE, encoding="utf-8")


def dask_compute(collection: Any) -> Any:
    dask = importlib.import_module("dask")
    return dask.compute(collection, scheduler="processes", num_workers=WORKERS)[0]


async def aiomultiprocess_map(path: str) -> Totals:
    """5. ``aiomultiprocess.Pool.map`` over line chunks (its own start method: spawn)."""
    import aiomultiprocess

    contents = read_lines(path)
    async with aiomultiprocess.Pool(WORKERS) as pool:
        partials = await pool.map(count_lines_async, chunks_of(contents))
    return functools.reduce(merge_totals, partials)


def aiomr_run(job: Callable[[str], Awaitable[Totals]]) -> Callable[[str], Any]:
    """An aiomr contender: the job on `aiomr.run`, with the loop's lag measured."""
    return lambda path: importlib.import_module("aiomr").run(with_lag(job(path)))


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    run: Callable[[str], Any]  # returns the totals, or the totals and the loop's lag
    modules: tuple[str, ...] = ()  # imported before the clock starts: modules or names
    slow: bool = False  # a baseline that may run fewer times (--slow-runs)

    @property
    def aiomr(self) -> bool:
        return self.key.startswith("aiomr")


DASK = ("dask", "dask.bag", "dask.multiprocessing")
FOLD_BY_WORD = (field_0, add_match_count, 0, operator.add, 0)
"""``foldby``'s arguments: split every line, fold by word per partition, then across them."""
CONTENDERS = (
    Contender("loop", "the book's single-process loop (listing 6.7)", run_loop, slow=True),
    Contender(
        "book-asyncio",
        "the book's asyncio program (listing 6.8)",
        lambda path: asyncio.run(book_asyncio(path)),
        slow=True,
    ),
    Contender("pool-map", "`multiprocessing.Pool.map` over line chunks", run_pool_map, slow=True),
    Contender(
        "dask-foldby",
        "`dask.bag`: `read_text` + `foldby`",
        lambda path: dict(dask_compute(dask_lines(path).str.split("\t").foldby(*FOLD_BY_WORD))),
        DASK,
        slow=True,
    ),
    Contender(
        "dask-partitions",
        "`dask.bag`: `read_text` + per-partition dict, `reduction`",
        lambda path: dask_compute(dask_lines(path).reduction(count_lines, merge_partials)),
        DASK,
    ),
    Contender(
        "aiomultiprocess",
        "`aiomultiprocess` `Pool.map` over line chunks",
        lambda path: asyncio.run(aiomultiprocess_map(path)),
        ("aiomultiprocess",),
        slow=True,
    ),
    Contender(
        "aiomr-split",
        'aiomr: byte-range splits, tight loop (`mode="blocks"`)',
        aiomr_run(split_job),
        ("aiomr.map_reduce", "aiomr.run", "aiomr.sources.files"),
    ),
    Contender(
        "aiomr-keyed",
        "aiomr: idiomatic key-value job (`map_reduce_by_key`)",
        aiomr_run(keyed_job),
        ("aiomr.map_reduce_by_key", "aiomr.run", "aiomr.sources.files"),
    ),
    Contender(
        "aiomr-lines",
        "aiomr: key-value job fed by `sources.lines`",
        aiomr_run(functools.partial(keyed_job, lines=True)),
        ("aiomr.map_reduce_by_key", "aiomr.run", "aiomr.sources.lines"),
    ),
    Contender("limit", "practical limit: 2 byte ranges, tight loop, 2 processes", run_limit),
    Contender(
        "limit-mapper",
        "practical limit, idiomatic mapper: 2 byte ranges, 2 processes",
        run_limit_mapper,
    ),
)
BY_KEY = {c.key: c for c in CONTENDERS}
BASELINES = tuple(BY_KEY)[:6]
"""The contenders aiomr's split path and key-value job must both beat: loop to aiomultiprocess."""


def contender(args: list[str]) -> dict[str, Any]:
    """Run one contender once in this (fresh) process: ``KEY PATH``."""
    key, path = args
    c = BY_KEY[key]
    _machine.import_names(c.modules, uvloop=c.aiomr)  # aiomr.run's loop, when installed
    import psutil  # noqa: F401  (before the clock starts: tree_cpu uses it after it stops)

    cpu = _machine.tree_cpu()
    started = time.perf_counter()
    outcome = c.run(path)
    wall = time.perf_counter() - started
    totals, lags = outcome if c.aiomr else (outcome, None)
    return {"totals": totals, "wall": wall, "cpu": _machine.tree_cpu() - cpu, "lags": lags}


@dataclass(kw_only=True)
class Result(h.Measurements):
    expected: Expected
    keys: list[str]
    slow_runs: int


def measure(args: argparse.Namespace) -> Result:
    """Run every contender ``--runs`` times (slow baselines ``--slow-runs``), interleaved."""
    keys = h.choose(args.only, BY_KEY, "contenders")
    expected = ensure_input(parse_size(args.size or ("20MB" if args.quick else "1GB")))
    slow_runs = min(args.slow_runs or args.runs, args.runs)
    m = Result(rounds=args.runs, expected=expected, keys=keys, slow_runs=slow_runs)
    h.progress(f"warming the page cache with {expected.path}")
    _machine.warm_page_cache([expected.path])
    reference: Totals | None = None
    unchecked: list[tuple[str, Totals]] = []
    for round_, key in h.interleaved([k for k in BY_KEY if k in keys], args.runs):
        if BY_KEY[key].slow and round_ >= slow_runs:
            continue
        child = _isolated.run_child(__file__, [key, expected.path], timeout=RUN_TIMEOUT)
        report = child.require(key)
        totals: Totals = report["totals"]
        if problems := expected.problems(totals):
            raise SystemExit(f"{key}: wrong answer: {'; '.join(problems)}")
        unchecked.append((key, totals))  # checked once the single-process loop has run
        reference = reference or (totals if key == "loop" else None)
        for other, earlier in unchecked if reference is not None else []:
            problems = h.differences(earlier, reference, "the single-process loop's")
            if aardvark(earlier) != aardvark(reference):
                problems = [f"{aardvark(earlier)!r}, the loop: {aardvark(reference)!r}"]
            if problems:
                raise SystemExit(f"{other}: {problems[0]}")
        if reference is not None or "loop" not in keys:
            unchecked.clear()
        _isolated.record(m, key, round_, child, report)
    return m


def main_table(m: Result) -> str:
    labels = {key: BY_KEY[key].label for key in m.keys}
    return h.wall_table(m, labels, m.expected.size_bytes, "loop", "speed-up vs loop", 1)


def targets(m: Result) -> list[tuple[str, str, bool]]:
    """Check aiomr's split path and key-value job against their targets."""
    out, have = [], {k for k in m.keys if m.of(k)}
    if {"aiomr-split", "limit"} <= have:
        ratio = 1 / m.speedup("aiomr-split", "limit")
        what = f"split path within {SPLIT_TO_LIMIT - 1:.0%} of the practical limit's time"
        out.append((what, f"{ratio:.2f}x the limit's time", ratio <= SPLIT_TO_LIMIT))
    if {"aiomr-keyed", "loop"} <= have:
        speedup = m.speedup("aiomr-keyed", "loop")
        what = f"key-value job ≥ {KEYED_SPEEDUP}x faster than the single-process loop"
        out.append((what, f"{speedup:.2f}x", speedup >= KEYED_SPEEDUP))
    if {"limit-mapper", "loop"} <= have:
        ceiling = m.speedup("limit-mapper", "loop")
        what = (
            "(diagnostic) the idiomatic mapper's own ceiling: its practical limit against "
            "the single-process loop"
        )
        out.append((what, f"{ceiling:.2f}x", ceiling >= KEYED_SPEEDUP))
    if {"aiomr-keyed", "limit-mapper"} <= have:
        ratio = 1 / m.speedup("aiomr-keyed", "limit-mapper")
        what = "(diagnostic) key-value job within 10% of the idiomatic mapper's practical limit"
        out.append((what, f"{ratio:.2f}x that limit's time", ratio <= SPLIT_TO_LIMIT))
    jobs = [(k, n) for k, n in (("aiomr-split", "split path"), ("aiomr-keyed", "key-value job"))]
    baselines = [b for b in BASELINES if b in have]
    for key, name in jobs:
        if key in have and baselines:
            best = min(baselines, key=m.wall)
            ratio = m.wall(best) / m.wall(key)
            measured = (
                f"{m.wall(key):.1f} s against {m.wall(best):.1f} s for the fastest, "
                f"{BY_KEY[best].label} ({ratio:.2f}x its speed)"
            )
            out.append((f"{name} ahead of every other baseline", measured, ratio > 1.0))
    for key, name in jobs:
        if key in have:
            peak = h.median(r.caller_peak for r in m.of(key)) / 1e6
            what = f"{name}: caller peak RSS < {CALLER_PEAK_MB:.0f} MB"
            out.append((what, f"{peak:.0f} MB", peak < CALLER_PEAK_MB))
            p99 = h.median(r.lag_p99 for r in m.of(key)) * 1e3
            what = f"{name}: event-loop lag p99 ≤ {LAG_P99_MS:.0f} ms"
            out.append((what, f"{p99:.1f} ms", p99 <= LAG_P99_MS))
    return out


def draw_chart(m: Result, directory: Path) -> None:
    """Draw median wall time per contender as bars, with the range of the runs."""
    keys = [k for k in m.keys if m.of(k)]
    kinds = {"aiomr": "aiomr", "limit": "practical limit"}
    _chart.wall_bars(
        directory / "benchmarks-ngram.png",
        [(BY_KEY[k].label.replace("`", ""), [r.wall for r in m.of(k)]) for k in keys],
        [kinds.get(k.split("-")[0], "baselines") for k in keys],
        baseline=("single-process loop", [r.wall for r in m.of("loop")]),
        speedup=lambda i: None if keys[i] == "loop" else m.speedup(keys[i], "loop"),
        title=f"Total match_count per word, {m.expected.size_bytes / 1e9:.2f} GB 1-gram file, "
        f"{WORKERS} workers",
    )


def render(m: Result) -> str:
    """Return the docs section: the chart and the tables."""
    e = m.expected
    runs = f"each contender ran {h.times(m.rounds)}"
    if m.slow_runs < m.rounds and any(BY_KEY[k].slow for k in m.keys):
        slow = ", ".join(BY_KEY[k].label for k in m.keys if BY_KEY[k].slow)
        runs += f" ({h.times(m.slow_runs)} for the slow baselines: {slow})"
    dask = ""
    if m.of("dask-foldby") and m.of("dask-partitions"):
        faster, other = sorted(("dask-foldby", "dask-partitions"), key=m.wall)
        dask = (
            f" The faster `dask.bag` program here: *{BY_KEY[faster].label.replace('`', '')}* "
            f"({m.wall(faster):.1f} s against {m.wall(other):.1f} s)."
        )
    rows = [[what, measured, h.verdict(met)] for what, measured, met in targets(m)]
    parts = [
        f"{m.machine} aiomr {m.aiomr}.",
        "",
        f"Input: {e.size_bytes / 1e6:,.0f} MB, {e.lines:,} lines, {e.words:,} distinct words; "
        f"{runs}.{dask}",
        "",
        "![Median wall time per contender](benchmarks-ngram.png)",
        "",
        main_table(m),
        "",
        "Event-loop lag of the aiomr contenders:",
        "",
        h.lag_table(m, {key: BY_KEY[key].label for key in m.keys}),
        "",
        "### Against the targets",
        "",
        h.markdown_table(["target", "measured", "verdict"], rows, left=(0, 1)),
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    parser = h.parser(__doc__, runs=3)
    parser.add_argument("--size", help="input size (default 1GB; 20MB with --quick)")
    parser.add_argument("--slow-runs", type=h.positive, help="runs of the slow baselines")
    parser.add_argument("--only", help="comma-separated contenders to run (default: all)")
    sys.exit(h.main("ngram", parser, measure, render, contender=contender, also_write=draw_chart))
