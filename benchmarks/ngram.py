"""N-gram totals: aiomr against the book's programs, worker pools, dask.bag and the limit.

The workload of ``examples/ngram.py``: total the ``match_count`` of every word of a 1-gram file
generated once by ``examples/ngram_data.py`` (1 GB, seed 0) into ``/tmp/aiomr-bench/``. Each
contender (`CONTENDERS`) runs in a fresh process per run, 2 workers where it has workers,
interleaved round by round; every result is checked word for word against the single-process
loop's and against the generator's figures. The section says what is measured and how.

    flock /tmp/aiomr-bench.lock python3 benchmarks/ngram.py --write-docs
    python3 benchmarks/ngram.py --quick        # a smoke run on 20 MB
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import functools
import importlib
import math
import multiprocessing
import operator
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _harness as h
import _isolated
import _machine
from _ngram_workload import (
    SEED,
    WORKERS,
    Expected,
    Totals,
    aardvark,
    ensure_input,
    keyed_job,
    merge_totals,
    parse_size,
    run_limit,
    run_limit_mapper,
    split_job,
    with_lag,
)

CHUNK_LINES = 60_000
"""Lines per task of the book's chunks."""
DASK_BLOCKSIZE = 32 * 1024 * 1024
"""Bytes per dask.bag partition: about 15 partitions per worker on 1 GB."""
RUN_TIMEOUT = 900.0
SPLIT_TO_LIMIT, KEYED_SPEEDUP, CALLER_PEAK_MB, LAG_P99_MS = 1.10, 1.5, 150.0, 5.0
"""The targets: the split path's time at most 1.1x the limit's; the key-value job 1.5x
faster than the loop; the caller's peak RSS and the loop lag of both."""


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


# The other contenders --------------------------------------------------------------------------


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


def field_0(row: list[str]) -> str:
    return row[0]


def add_match_count(total: int, row: list[str]) -> int:
    return total + int(row[2])


def merge_partials(partials: Iterable[Totals]) -> Totals:
    return functools.reduce(merge_totals, partials, {})


async def count_lines_async(chunk: list[str]) -> Totals:
    return count_lines(chunk)


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
    run: Callable[[str], Any]
    """Returns the totals, or the totals and the loop's lag."""
    modules: tuple[str, ...] = ()
    """Imported before the clock starts: modules, or the names a contender calls."""
    slow: bool = False
    """A baseline that may run fewer times (``--slow-runs``)."""

    @property
    def aiomr(self) -> bool:
        return self.key.startswith("aiomr")


DASK = ("dask", "dask.bag", "dask.multiprocessing")
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
        "`dask.bag`: `read_text` + `foldby`",  # split every line, fold by word per partition
        lambda path: dict(
            dask_compute(
                dask_lines(path)
                .str.split("\t")
                .foldby(field_0, add_match_count, 0, operator.add, 0)
            )
        ),
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
BASELINES = (
    "loop",
    "book-asyncio",
    "pool-map",
    "dask-foldby",
    "dask-partitions",
    "aiomultiprocess",
)
"""The contenders aiomr's split path and key-value job must both beat."""


def contender(args: list[str]) -> dict[str, Any]:
    """Run one contender once in this (fresh) process: ``KEY PATH``."""
    key, path = args
    c = BY_KEY[key]
    _machine.import_names(c.modules)
    if c.aiomr:  # aiomr.run's loop, when installed
        with contextlib.suppress(ImportError):
            _machine.import_names(["uvloop"])
    import psutil  # noqa: F401  (before the clock starts: tree_cpu uses it after it stops)

    cpu = _machine.tree_cpu()
    started = time.perf_counter()
    outcome = c.run(path)
    wall = time.perf_counter() - started
    totals, lags = outcome if c.aiomr else (outcome, None)
    return {"totals": totals, "wall": wall, "cpu": _machine.tree_cpu() - cpu, "lags": lags}


# Measuring -------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Result(h.Measurements):
    expected: Expected
    keys: list[str]
    slow_runs: int

    def speedup(self, key: str, baseline: str) -> float:
        """Median over rounds of ``baseline``'s wall time over ``key``'s, in the same round;
        the ratio of the medians when no round ran both (a slow baseline ran fewer times)."""
        paired = h.by_round(self.of(baseline), self.of(key))
        return h.median(paired) if paired else self.wall(baseline) / self.wall(key)


def measure(args: argparse.Namespace) -> Result:
    """Run every contender ``--runs`` times (slow baselines ``--slow-runs``), interleaved."""
    keys = [k.strip() for k in args.only.split(",")] if args.only else list(BY_KEY)
    if unknown := [k for k in keys if k not in BY_KEY]:
        raise SystemExit(f"unknown contenders: {', '.join(unknown)}; try {', '.join(BY_KEY)}")
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
        unchecked.append((key, totals))  # until the single-process loop has run
        if key == "loop" and reference is None:
            reference = totals
        for other, earlier in unchecked if reference is not None else []:
            assert reference is not None
            if aardvark(earlier) != aardvark(reference):
                raise SystemExit(
                    f"{other}: {aardvark(earlier)!r}, the loop: {aardvark(reference)!r}"
                )
            if problems := h.differences(earlier, reference, "the single-process loop's"):
                raise SystemExit(f"{other}: {problems[0]}")
        if reference is not None or "loop" not in keys:
            unchecked.clear()
        run = _isolated.Run(key, round_, report["wall"], report["cpu"])
        run.caller_peak, run.tree_peak = child.caller_peak, child.tree_peak
        run.lags(report["lags"])
        lag = f", loop lag p99 {run.lag_p99 * 1e3:.1f} ms" if run.ticks else ""
        m.add(run, f"{run.wall:.2f} s, CPU {run.cpu:.1f} s, caller {h.mb(run.caller_peak)}{lag}")
    return m


# Reporting -------------------------------------------------------------------------------------


def main_table(m: Result) -> str:
    headers = ["contender", "runs", "wall (median)", "range", "MB/s", "CPU s", "caller peak RSS"]
    rows = []
    for key in (k for k in m.keys if m.of(k)):
        runs, wall = m.of(key), m.wall(key)
        speedup = m.speedup(key, "loop") if m.of("loop") else math.nan
        rows.append(
            [
                BY_KEY[key].label,
                str(len(runs)),
                f"{wall:.1f} s",
                h.span([r.wall for r in runs], ".1f", " s"),
                f"{m.expected.size_bytes / 1e6 / wall:.0f}",
                f"{h.median(r.cpu for r in runs):.1f}",
                h.mb(h.median(r.caller_peak for r in runs)),
                h.mb(h.median(r.tree_peak for r in runs)),
                f"{h.fmt_ratio(speedup)}x" if not math.isnan(speedup) else "n/a",
            ]
        )
    return h.markdown_table([*headers, "all processes peak RSS", "speed-up vs loop"], rows)


def lag_table(m: Result) -> str:
    rows = [
        [
            BY_KEY[key].label,
            str(len(runs)),
            f"{h.median(r.ticks for r in runs):,.0f}",
            f"{h.fmt_ms(h.median(r.lag_p99 for r in runs), 1)} ms",
            f"{h.fmt_ms(max(r.lag_max for r in runs), 1)} ms",
        ]
        for key in m.keys
        if (runs := [r for r in m.of(key) if r.ticks])
    ]
    headers = ["contender", "runs", "ticks per run", "lag p99 (median of runs)"]
    return h.markdown_table([*headers, "lag max (worst run)"], rows)


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
    """Draw median wall time per contender as horizontal bars, with the range of the runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.artist import Artist
    from matplotlib.patches import Patch

    keys = [k for k in m.keys if m.of(k)]
    walls = [m.wall(k) for k in keys]
    low = [w - min(r.wall for r in m.of(k)) for k, w in zip(keys, walls, strict=True)]
    high = [max(r.wall for r in m.of(k)) - w for k, w in zip(keys, walls, strict=True)]
    colours = {"aiomr": "#1f77b4", "limit": "#2ca02c", "baselines": "#9a9a9a"}
    kinds = [
        "aiomr" if BY_KEY[k].aiomr else "limit" if k.startswith("limit") else "baselines"
        for k in keys
    ]
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(keys) + 1.6), dpi=110)
    positions = list(range(len(keys)))[::-1]
    ax.barh(
        positions,
        walls,
        color=[colours[k] for k in kinds],
        xerr=[low, high],
        capsize=3,
        ecolor="#444444",
    )
    ax.set_yticks(positions, [BY_KEY[k].label.replace("`", "") for k in keys])
    ax.tick_params(axis="y", labelsize=9)
    loop = m.wall("loop") if m.of("loop") else math.nan
    top = max(w + x for w, x in zip(walls, high, strict=True))
    for y, key, wall, extra in zip(positions, keys, walls, high, strict=True):
        text = f"{wall:.1f} s"
        if not math.isnan(loop) and key != "loop":
            text += f"  (speed-up {m.speedup(key, 'loop'):.2f}x)"
        box = {"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1}
        ax.text(wall + extra + top * 0.01, y, text, va="center", fontsize=8.5, bbox=box)
    names = {"aiomr": "aiomr", "limit": "practical limit", "baselines": "baselines"}
    handles: list[Artist] = [Patch(color=colours[k], label=names[k]) for k in colours]
    if not math.isnan(loop):
        style = {"color": "#d62728", "linestyle": "--", "linewidth": 1}
        handles.append(ax.axvline(loop, label="single-process loop", **style))
    legend = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.1), "fontsize": 8.5}
    ax.legend(handles=handles, ncol=len(handles), frameon=False, **legend)
    ax.set_xlim(0, top * 1.32)
    ax.set_xlabel("wall time, seconds (median; whiskers: fastest to slowest run) — lower is better")
    size = m.expected.size_bytes / 1e9
    title = f"Total match_count per word, {size:.2f} GB 1-gram file, {WORKERS} workers"
    ax.set_title(title, fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    fig.tight_layout()
    fig.savefig(directory / "benchmarks-ngram.png", bbox_inches="tight")
    plt.close(fig)


def render(m: Result) -> str:
    """Return the docs section: what was measured, the chart and the tables."""
    e = m.expected
    runs_note = f"Each contender ran {m.rounds} time{'s' if m.rounds > 1 else ''}"
    if m.slow_runs < m.rounds and any(BY_KEY[k].slow for k in m.keys):
        slow = ", ".join(BY_KEY[k].label for k in m.keys if BY_KEY[k].slow)
        runs_note += f" ({m.slow_runs} times for the slow baselines: {slow})"
    dask_note = ""
    if m.of("dask-foldby") and m.of("dask-partitions"):
        faster, other = sorted(("dask-foldby", "dask-partitions"), key=m.wall)
        dask_note = (
            f" Of the two idiomatic `dask.bag` programs, the faster here is "
            f"*{BY_KEY[faster].label.replace('`', '')}* ({m.wall(faster):.1f} s against "
            f"{m.wall(other):.1f} s); it is the dask figure the targets compare with."
        )
    rows = [[what, measured, h.verdict(met)] for what, measured, met in targets(m)]
    parts = [
        "## N-gram totals: aiomr against the usual ways",
        "",
        f"{m.machine} aiomr {m.aiomr}.",
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
        f"{_isolated.SAMPLE_SECONDS * 1e3:.0f} ms: *caller* is the contender's main process, "
        "*all processes* the sum of RSS over its process tree at each sample, maximum over "
        "samples (summed RSS counts pages shared by forked processes once per process, so it "
        "overstates for the fork-based baselines). *Speed-up vs loop* is the median over "
        "rounds of the loop's wall time over the contender's in the same round. The aiomr "
        "contenders run on `aiomr.run` (uvloop when installed) and use the library's defaults "
        "besides `max_workers`. Every contender's totals equalled the single-process loop's "
        f"for every word (and `{aardvark(e.totals)}`, as the generator wrote)." + dask_note,
        "",
        "![Median wall time per contender](benchmarks-ngram.png)",
        "",
        main_table(m),
        "",
        "Event-loop lag of the aiomr contenders: a coroutine sleeps 10 ms at a time on the "
        "contender's event loop during the job and records how late each wake-up is.",
        "",
        lag_table(m),
        "",
        "### Against the targets",
        "",
        h.markdown_table(["target", "measured", "verdict"], rows, left=(0, 1)),
        "",
        f"The whole benchmark took {m.seconds / 60:.0f} minutes. Reproduce with:",
        "",
        "```console",
        "flock /tmp/aiomr-bench.lock python3 benchmarks/ngram.py --write-docs",
        "```",
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    parser = h.parser(__doc__, runs=3)
    parser.add_argument("--size", help="input size (default 1GB; 20MB with --quick)")
    parser.add_argument("--slow-runs", type=h.positive, help="runs of the slow baselines")
    parser.add_argument("--only", help="comma-separated contenders to run (default: all)")
    sys.exit(h.main("ngram", parser, measure, render, contender=contender, also_write=draw_chart))
