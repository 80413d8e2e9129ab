"""A shared engine: how the split size of a big file job sets a small job's wait beside it.

One `aiomr.Engine` with 2 workers runs the example service's word count. For each split size
of the big job (fixed ``split_size=``; sized by time, the engine's default; or by bytes,
``Engine(split_seconds=None)``): the big job alone over the first ``--prefix`` bytes of the
generated n-gram file (seconds per 100 MB), a 4 MB text alone, and that text submitted one
second after the count of the whole file started beside it (to its first split and to its
end). A running task is never preempted: the big job's split size bounds the small one's wait.

    flock /tmp/aiomr-bench.lock python3 benchmarks/shared_engine.py --write-docs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

import _harness as h
import _ngram_workload as workload

import aiomr
from examples.service.words import count_words, merge_counts

MIB = 1 << 20


def small_text() -> bytes:
    """The small job's input: 700,000 words ``word0`` .. ``word4999`` cut into 80-byte lines."""
    words = " ".join(f"word{n % 5000}" for n in range(700_000)).encode()
    return b"\n".join(words[i : i + 80] for i in range(0, len(words), 80))


@functools.cache
def small_counts() -> Counter[str]:
    """The small job's answer, counted here line by line with the same function."""
    return sum(map(count_words, small_text().decode().split("\n")), Counter())


def size_label(size: int) -> str:
    """``1 GB``, ``20 MB``."""
    return f"{size / 1e9:g} GB" if size >= 1e9 else f"{size / 1e6:g} MB"


async def word_count(
    engine: aiomr.Engine, path: str, split: int | None, stats: aiomr.JobStats
) -> Counter[str]:
    files = aiomr.sources.files([path], split_size=split, errors="replace")
    return await engine.map_reduce(files, count_words, merge_counts, initial=Counter(), stats=stats)


async def small_job(engine: aiomr.Engine, path: str) -> tuple[float, float]:
    """Count the small text in 1 MiB splits; return the seconds to its first split and end."""
    files = aiomr.sources.files([path], split_size=MIB, errors="replace")
    started, first, final = time.perf_counter(), None, None
    initial: Counter[str] = Counter()
    async with engine.open_stream(
        files, count_words, merge_counts, initial=initial, every_seconds=None, every_partials=1
    ) as snapshots:
        async for snapshot in snapshots:
            first = first or time.perf_counter() - started
            final = snapshot.value if snapshot.final else None
    done = time.perf_counter() - started
    if first is None or final != small_counts():
        raise SystemExit("the small job counted wrong")
    return first, done


@dataclass(kw_only=True)
class Result(h.Measurements):
    prefix: int
    size: int
    splits: dict[str, list[dict[str, float]]] = field(default_factory=dict)


async def one_split_size(
    engine: aiomr.Engine, paths: dict[str, str], split: int | None, prefix: int
) -> dict[str, float]:
    started = time.perf_counter()
    await word_count(engine, paths["prefix"], split, aiomr.JobStats())
    per_100mb = (time.perf_counter() - started) / (prefix / 100e6)
    _, alone = await small_job(engine, paths["small"])
    big = aiomr.JobStats()
    running = asyncio.create_task(word_count(engine, paths["big"], split, big))
    try:
        await asyncio.sleep(1.0)
        first, beside = await small_job(engine, paths["small"])
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        # Its running splits go on to their end (a task is never interrupted): let them
        # finish, or they would slow down whatever is measured next.
        await asyncio.sleep(big.task_seconds_max + 0.5)
    done = max(1, big.chunks_done)
    return {
        "per_100mb": per_100mb,
        "alone": alone,
        "first": first,
        "beside": beside,
        "big_split_mb": big.bytes_done / done / 1e6,
        "big_task_s": big.task_seconds / done,
    }


def label(split: str) -> str:
    if split == "timed":
        return "automatic, sized by time (the engine's default `split_seconds=0.5`)"
    return (
        "automatic, by bytes (`Engine(split_seconds=None)`)"
        if split == "bytes"
        else f"{int(split)} MiB"
    )


async def measure_all(r: Result, paths: dict[str, str], splits: list[str]) -> None:
    async with (
        aiomr.Engine(max_workers=2) as engine,
        aiomr.Engine(max_workers=2, split_seconds=None) as by_bytes,
    ):
        for round_, split in h.interleaved(splits, r.rounds):
            on = by_bytes if split == "bytes" else engine
            size = None if split in ("timed", "bytes") else int(split) * MIB
            row = await one_split_size(on, paths, size, r.prefix)
            h.progress(f"round {round_ + 1}, {label(split)}: {row}")
            r.splits.setdefault(label(split), []).append(row)


def measure(args: argparse.Namespace) -> Result:
    size = workload.parse_size(args.size or ("100MB" if args.quick else "1GB"))
    prefix = args.prefix or (8 if args.quick else 128) * MIB
    r = Result(rounds=args.runs, prefix=prefix, size=size)
    big = workload.ensure_input(size).path
    with tempfile.TemporaryDirectory() as scratch:
        paths = {
            "big": big,
            "prefix": os.path.join(scratch, "prefix.tsv"),
            "small": os.path.join(scratch, "small.txt"),
        }
        with open(big, "rb") as src, open(paths["prefix"], "wb") as dst:
            dst.write(src.read(prefix) + src.readline())
        with open(paths["small"], "wb") as f:
            f.write(small_text())
        r.prefix = os.path.getsize(paths["prefix"])
        splits = args.splits or (
            ["1", "timed", "bytes"] if args.quick else ["1", "4", "16", "62", "timed", "bytes"]
        )
        asyncio.run(measure_all(r, paths, splits))
    return r


def render(r: Result) -> str:
    size = size_label(r.size)
    lines = [
        "`benchmarks/shared_engine.py`: one engine with 2 workers running the example",
        "service's word count. *Big alone*: seconds per 100 MB to count the first "
        f"{r.prefix // MIB} MiB of the {size} n-gram file alone; *small*: a 4 MB text in 1 MiB "
        f"splits, alone and submitted one second after the count of the whole {size} file "
        f"started beside it (medians of {r.rounds} round(s)). *Big job's splits*: the mean size "
        "and task time of the whole-file job's splits that finished while it ran beside the "
        "small job.",
        "",
        "| big job's split size | big alone, s per 100 MB | big job's splits | small alone "
        "| small beside: first split done | small beside: done | slowdown |",
        "| :--- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, rows in r.splits.items():
        med = {key: h.median(row[key] for row in rows) for key in rows[0]}
        lines.append(
            f"| {name} | {med['per_100mb']:.1f} "
            f"| {med['big_split_mb']:.1f} MB, {med['big_task_s']:.2f} s "
            f"| {med['alone']:.2f} s | {med['first']:.2f} s | {med['beside']:.2f} s "
            f"| {med['beside'] / med['alone']:.1f}x |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = h.parser(__doc__, runs=1)
    parser.add_argument("--size", help="the generated n-gram file (default 1GB)")
    parser.add_argument("--prefix", type=h.positive, help="bytes for 'big alone' (default 128 MiB)")
    parser.add_argument(
        "--splits", nargs="+", help="split sizes of the big job: MiB, 'timed' or 'bytes'"
    )
    sys.exit(h.main("shared-engine", parser, measure, render))
