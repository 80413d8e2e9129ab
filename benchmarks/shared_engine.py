"""A shared engine: how the split size of a big file job sets a small job's wait beside it.

Method. One `aiomr.Engine` with 2 workers runs the example service's word count
(``examples/service/words.py``: a regular expression and a Counter per line). For each
split size of the big job:

1. ``big alone``: the word count of the first ``--prefix`` bytes of the generated 1 GB
   n-gram file, alone on the engine: seconds per 100 MB, as a measure of what smaller
   splits cost (more tasks, more partial results to send back and fold);
2. ``small alone``: a 4 MB text (1 MiB splits) alone on the engine;
3. ``small beside``: the same small job submitted one second after the word count of the
   whole 1 GB file started on the engine (which is cancelled once the small job is done):
   its time to its first finished split and to its end.

Split sizes: fixed (``split_size=``), or automatic: sized by time, the default on an
``Engine``, or by bytes alone (``Engine(split_seconds=None)``, 62 MiB for the 1 GB file on 2
workers, what the one-job functions use).

A task that runs cannot be preempted, so the small job's first worker comes free only when
one of the big job's running splits ends: the split size bounds that wait.

Run it alone on the machine::

    flock /tmp/aiomr-bench.lock python3 benchmarks/shared_engine.py --write-docs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _common
import ngram

import aiomr
from examples.service.words import count_words, merge_counts

SECTION = "shared-engine"
MIB = 1 << 20


async def word_count(
    engine: aiomr.Engine, path: str, split: int | None, stats: aiomr.JobStats
) -> Counter[str]:
    files = aiomr.sources.files([path], split_size=split, errors="replace")
    return await engine.map_reduce(files, count_words, merge_counts, initial=Counter(), stats=stats)


async def timed(engine: aiomr.Engine, path: str, split: int) -> tuple[float, float]:
    """Seconds to the job's first finished split and to its end."""
    files = aiomr.sources.files([path], split_size=split, errors="replace")
    started = time.perf_counter()
    first = None
    async with engine.open_stream(
        files,
        count_words,
        merge_counts,
        initial=Counter(),
        every_seconds=None,
        every_partials=1,
    ) as snapshots:
        async for _ in snapshots:
            if first is None:
                first = time.perf_counter() - started
    assert first is not None
    return first, time.perf_counter() - started


async def one_split_size(
    engine: aiomr.Engine, inputs: Inputs, split: int | None
) -> dict[str, float]:
    started = time.perf_counter()
    await word_count(engine, inputs.prefix, split, aiomr.JobStats())
    per_100mb = (time.perf_counter() - started) / (inputs.prefix_bytes / 100e6)
    _, alone = await timed(engine, inputs.small, MIB)
    big = aiomr.JobStats()
    running = asyncio.create_task(word_count(engine, inputs.big, split, big))
    try:
        await asyncio.sleep(1.0)
        first, beside = await timed(engine, inputs.small, MIB)
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


TIMED = "automatic, sized by time (the engine's default `split_seconds=0.5`)"
BY_BYTES = "automatic, by bytes (`Engine(split_seconds=None)`)"


def _label(split: str) -> str:
    if split == "timed":
        return TIMED
    if split == "bytes":
        return BY_BYTES
    return f"{int(split)} MiB"


@dataclass(frozen=True)
class Inputs:
    big: str
    prefix: str
    prefix_bytes: int
    small: str


def make_inputs(scratch: str, prefix_bytes: int) -> Inputs:
    """The 1 GB file, its first ``prefix_bytes`` (to a line end) and a 4 MB text."""
    big = ngram.ensure_input(1_000_000_000).path
    prefix = os.path.join(scratch, "prefix.tsv")
    with open(big, "rb") as src, open(prefix, "wb") as dst:
        dst.write(src.read(prefix_bytes))
        dst.write(src.readline())
    small = os.path.join(scratch, "small.txt")
    words = " ".join(f"word{n % 5000}" for n in range(700_000)).encode()
    with open(small, "wb") as f:
        f.write(b"\n".join(words[i : i + 80] for i in range(0, len(words), 80)))
    return Inputs(big, prefix, os.path.getsize(prefix), small)


async def main_async(args: argparse.Namespace, inputs: Inputs) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {}
    async with (
        aiomr.Engine(max_workers=2) as engine,
        aiomr.Engine(max_workers=2, split_seconds=None) as by_bytes,
    ):
        for round_ in range(args.rounds):
            for split in args.splits:
                on, size = (by_bytes, None) if split == "bytes" else (engine, None)
                if split not in ("timed", "bytes"):
                    size = int(split) * MIB
                row = await one_split_size(on, inputs, size)
                print(f"round {round_ + 1}, {_label(split)}: {row}", flush=True)
                results.setdefault(_label(split), []).append(row)
    return results


def render(results: dict[str, list[dict[str, float]]], prefix: int) -> str:
    lines = [
        "## A shared engine: split size against a small job's wait",
        "",
        "`benchmarks/shared_engine.py`: one engine with 2 workers running the example",
        "service's word count. *Big alone*: seconds per 100 MB to count the first "
        f"{prefix // MIB} MiB of the 1 GB n-gram file alone; *small*: a 4 MB text in 1 MiB "
        "splits, alone and submitted one second after the count of the whole 1 GB file "
        f"started beside it (medians of {len(next(iter(results.values())))} round(s)). "
        "*Big job's splits*: the mean size and task time of the whole-file job's splits that "
        "finished while it ran beside the small job.",
        "",
        "| big job's split size | big alone, s per 100 MB | big job's splits | small alone "
        "| small beside: first split done | small beside: done | slowdown |",
        "| :--- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, rows in results.items():
        med = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        lines.append(
            f"| {label} | {med['per_100mb']:.1f} "
            f"| {med['big_split_mb']:.1f} MB, {med['big_task_s']:.2f} s "
            f"| {med['alone']:.2f} s | {med['first']:.2f} s | {med['beside']:.2f} s "
            f"| {med['beside'] / med['alone']:.1f}x |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--prefix", type=int, default=128 * MIB, help="bytes for 'big alone'")
    parser.add_argument(
        "--splits",
        nargs="+",
        default=["1", "4", "16", "62", "timed", "bytes"],
        help="split sizes of the big job: MiB, 'timed' (the engine's default) or 'bytes'",
    )
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        results = asyncio.run(main_async(args, make_inputs(scratch, args.prefix)))
    text = render(results, args.prefix)
    print(text)
    if args.write_docs:
        _common.write_extra_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
