"""Streaming throughput: small records from an async generator through two worker processes.

2,000,000 ints, each squared, all summed on 2 workers, by a plain ``async for`` (the ceiling),
a hand-written batched ``run_in_executor`` loop (the baseline), one ``run_in_executor`` per
record, and aiomr, warm (``Engine``) and cold (``aiomr.map_reduce``, compared with the batched
loop on a pool started inside the timing too). ``--help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import operator
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import _harness as h
import _machine

import aiomr

WORKERS, BATCH, WINDOW, PER_RECORD_WINDOW = 2, 10_000, 4, 64
TARGET_RATIO = 0.85

PLAIN = "plain `async for` in one process"
BATCHED = "hand-written batched loop (10,000 per call, window 4)"
BATCHED_COLD = "hand-written batched loop, pool start included"
PER_RECORD = "one `run_in_executor` per record (window 64)"
COLD = "`aiomr.map_reduce(..., max_workers=2)`, adaptive (pool start included)"
WARM = "warm `Engine(max_workers=2)`, adaptive"
WARM_10K = "warm `Engine(max_workers=2)`, `chunk_size=10_000`"
VARIANTS = (PLAIN, BATCHED, PER_RECORD, WARM, WARM_10K, BATCHED_COLD, COLD)
BASELINE_OF = {WARM: BATCHED, WARM_10K: BATCHED, COLD: BATCHED_COLD}
"""Each aiomr variant and the baseline it is compared with: warm with warm, cold with cold."""


async def numbers(n: int) -> AsyncIterator[int]:
    """Yield ``0 .. n-1``: the streaming source of every variant."""
    for i in range(n):
        yield i


def square(x: int) -> int:
    """Map one record: aiomr's mapper, and what the batched loop's task calls."""
    return x * x


def sum_squares(batch: list[int]) -> int:
    """Map and reduce one batch: the task of the batched loop (the same work as aiomr's)."""
    return sum(map(square, batch))


async def plain_loop(n: int) -> int:
    total = 0
    async for x in numbers(n):
        total += x * x
    return total


async def windowed(pool: concurrent.futures.Executor, n: int, batch: int, window: int) -> int:
    """Send batches of ``batch`` records (one by one: ``batch == 1``), ``window`` in flight."""
    loop = asyncio.get_running_loop()
    total, in_flight, records = 0, set[asyncio.Future[int]](), list[int]()
    async for x in numbers(n):
        records.append(x)
        if len(records) == batch:
            if len(in_flight) >= window:
                done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                total += sum(f.result() for f in done)
            if batch == 1:
                in_flight.add(loop.run_in_executor(pool, square, x))
            else:
                in_flight.add(loop.run_in_executor(pool, sum_squares, records))
            records = []
    if records:
        in_flight.add(loop.run_in_executor(pool, sum_squares, records))
    return total + sum(await asyncio.gather(*in_flight))


async def batched_cold(n: int) -> int:
    """The batched loop on a pool started and shut down inside the call, like aiomr's."""
    pool = _machine.process_pool(WORKERS, warm=False)
    try:
        return await windowed(pool, n, BATCH, WINDOW)
    finally:
        await asyncio.to_thread(pool.shutdown)


@dataclass
class Samples:
    records: int
    seconds: list[float] = field(default_factory=list)
    chunk_sizes: list[int] = field(default_factory=list)

    def rates(self) -> list[float]:
        return [self.records / s for s in self.seconds]


@dataclass(kw_only=True)
class Result(h.Measurements):
    records: int
    loops: dict[str, dict[str, Samples]] = field(default_factory=dict)


async def measure_loop(loop: str, runs: int, n: int, n_slow: int) -> dict[str, Samples]:
    """Run every variant ``runs`` times (after one untimed warm-up round) on the running loop."""
    samples = {name: Samples(n_slow if name == PER_RECORD else n) for name in VARIANTS}
    pool = await asyncio.to_thread(_machine.process_pool, WORKERS)
    try:
        async with aiomr.Engine(max_workers=WORKERS) as engine:
            jobs: dict[str, Callable[[int, aiomr.JobStats], Awaitable[int]]] = {
                PLAIN: lambda size, _: plain_loop(size),
                BATCHED: lambda size, _: windowed(pool, size, BATCH, WINDOW),
                BATCHED_COLD: lambda size, _: batched_cold(size),
                PER_RECORD: lambda size, _: windowed(pool, size, 1, PER_RECORD_WINDOW),
                COLD: lambda size, st: aiomr.map_reduce(
                    numbers(size), square, operator.add, max_workers=WORKERS, stats=st
                ),
                WARM: lambda size, st: engine.map_reduce(
                    numbers(size), square, operator.add, stats=st
                ),
                WARM_10K: lambda size, st: engine.map_reduce(
                    numbers(size), square, operator.add, chunk_size=BATCH, stats=st
                ),
            }
            for round_, name in h.interleaved(VARIANTS, runs + 1):
                size = samples[name].records if round_ else min(samples[name].records, 100_000)
                stats = aiomr.JobStats()
                started = time.perf_counter()
                answer = await jobs[name](size, stats)
                seconds = time.perf_counter() - started
                if answer != (size - 1) * size * (2 * size - 1) // 6:  # the closed form
                    raise SystemExit(f"{name} on {loop}: wrong answer {answer}")
                if round_ == 0:
                    continue  # the warm-up round
                samples[name].seconds.append(seconds)
                if stats.chunk_sizes:
                    samples[name].chunk_sizes.append(max(s for _, s in stats.chunk_sizes))
                h.progress(
                    f"  {loop} round {round_}/{runs}: {h.fmt_rate(size / seconds):>11}  {name}"
                )
    finally:
        pool.shutdown()
    return samples


def measure(args: argparse.Namespace) -> Result:
    n = args.records or (200_000 if args.quick else 2_000_000)
    result = Result(rounds=args.runs, records=n)
    for loop in h.loop_names(args.loop):
        h.progress(f"streaming on {loop}: {n:,} records, {args.runs} runs")
        n_slow = 2_000 if args.quick else 20_000
        result.loops[loop] = h.run_on(loop, measure_loop(loop, args.runs, n, n_slow))
    return result


def ratio(samples: dict[str, Samples], name: str, baseline: str = BATCHED) -> float:
    """Median over rounds of this variant's records/s over the baseline's, same round."""
    return h.median(h.ratios(samples[name].rates(), samples[baseline].rates()))


def loop_table(samples: dict[str, Samples]) -> str:
    rows = []
    for name, s in samples.items():
        rates, baseline = s.rates(), BASELINE_OF.get(name, BATCHED)
        notes = [f"{s.records:,} records only"] if name == PER_RECORD else []
        notes += [f"largest chunk {max(s.chunk_sizes):,}"] if s.chunk_sizes else []
        if baseline != BATCHED:
            notes.append("ratio to the batched loop with pool start included")
        rate = f"{h.fmt_rate(min(rates))} to {h.fmt_rate(max(rates))}"
        ratio_text = h.fmt_ratio(ratio(samples, name, baseline))
        rows.append([name, f"{s.records:,}", h.fmt_rate(h.median(rates)), rate, ratio_text])
        rows[-1].append("; ".join(notes))
    headers = ["variant", "records", "median records/s", "range", "vs batched loop", "notes"]
    return h.markdown_table(headers, rows, left=(0, 5))


def render(r: Result) -> str:
    """Return the docs section: a table per event loop, and the target."""
    slow = next(iter(r.loops.values()))[PER_RECORD].records
    parts = [
        r.machine,
        "",
        f"{r.records:,} records a job ({slow:,} for the per-record row); each variant ran "
        f"{h.times(r.rounds)} after one untimed warm-up round.",
        "",
    ]
    for loop, samples in r.loops.items():
        parts += [f"### {h.loop_label(loop)}", "", loop_table(samples), ""]
    rows = []
    for loop, samples in r.loops.items():
        for name, base in BASELINE_OF.items():
            x = ratio(samples, name, base)
            rows.append(
                [h.loop_label(loop), name, base, f"{x:.2f}", h.verdict(round(x, 2) >= TARGET_RATIO)]
            )
    headers = ["event loop", "aiomr", "compared with", "ratio of records/s", "target ≥ 0.85"]
    parts += ["### Against the target", "", h.markdown_table(headers, rows, left=(0, 1, 2))]
    return "\n".join(parts)


if __name__ == "__main__":
    parser = h.parser(__doc__, runs=7, quick_runs=2, loop="both")
    parser.add_argument("--records", type=h.positive, help="records per job (default 2,000,000)")
    sys.exit(h.main("streaming", parser, measure, render))
