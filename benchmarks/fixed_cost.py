"""Fixed cost: the wall time of a tiny job, on a warm Engine and cold.

A job of 10 records is all fixed cost: shipping the code, one task round trip, folding one
partial, closing the job. Warm: ``Engine.map_reduce`` (from a ``range`` and from an async
generator) against one ``run_in_executor`` round trip on a warm ``ProcessPoolExecutor(2)``.
Cold: ``aiomr.map_reduce(..., max_workers=2)`` against starting a pool and both its workers,
one call each, shutting it down. Interleaved call by call; ``--help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import _harness as h
import _machine
from streaming import numbers, square, sum_squares

import aiomr

WORKERS, RECORDS, TARGET_MS = 2, 10, 5.0
EXPECTED = sum(x * x for x in range(RECORDS))
WARM_BASELINE = "one `run_in_executor` round trip, warm `ProcessPoolExecutor(2)`"
WARM_RANGE = "warm `Engine(max_workers=2)`, `range(10)`"
WARM_AGEN = "warm `Engine(max_workers=2)`, async generator of 10"
COLD_BASELINE = "start `ProcessPoolExecutor(2)` and both workers, one call, shut down"
COLD_AIOMR = "`aiomr.map_reduce(range(10), ..., max_workers=2)` (starts its own pool)"
WARM, COLD = (WARM_BASELINE, WARM_RANGE, WARM_AGEN), (COLD_BASELINE, COLD_AIOMR)


async def cold_pool_call() -> int:
    """Start a pool and both its workers (one call each, as ``Engine.start`` starts both),
    shut it down; pool start and shutdown in a helper thread, as in aiomr."""
    loop = asyncio.get_running_loop()
    pool = await asyncio.to_thread(_machine.process_pool, WORKERS, warm=False)
    try:
        calls = [loop.run_in_executor(pool, sum_squares, list(range(RECORDS))) for _ in "ab"]
        return (await asyncio.gather(*calls))[0]
    finally:
        await asyncio.to_thread(pool.shutdown)


@dataclass(kw_only=True)
class Result(h.Measurements):
    calls: int
    loops: dict[str, dict[str, list[float]]] = field(default_factory=dict)


async def measure_loop(loop_name: str, runs: int, calls: int, cold: int) -> dict[str, list[float]]:
    """Time every variant; return the seconds of each call, by variant."""
    times: dict[str, list[float]] = {name: [] for name in (*WARM, *COLD)}
    loop = asyncio.get_running_loop()
    pool = await asyncio.to_thread(_machine.process_pool, WORKERS)
    try:
        async with aiomr.Engine(max_workers=WORKERS) as engine:
            variants: dict[str, Callable[[], Awaitable[int]]] = {
                WARM_BASELINE: lambda: loop.run_in_executor(
                    pool, sum_squares, list(range(RECORDS))
                ),
                WARM_RANGE: lambda: engine.map_reduce(range(RECORDS), square, operator.add),
                WARM_AGEN: lambda: engine.map_reduce(numbers(RECORDS), square, operator.add),
                COLD_BASELINE: cold_pool_call,
                COLD_AIOMR: lambda: aiomr.map_reduce(
                    range(RECORDS), square, operator.add, max_workers=WORKERS
                ),
            }

            async def timed(names: tuple[str, ...], keep: bool, i: int = 0) -> None:
                for name in h.rotated(names, i):
                    started = time.perf_counter()
                    answer = await variants[name]()
                    seconds = time.perf_counter() - started
                    if answer != EXPECTED:
                        raise SystemExit(f"{name} on {loop_name}: wrong answer {answer}")
                    if keep:
                        times[name].append(seconds)

            await timed(COLD, keep=False)  # untimed: starts the forkserver process
            for _ in range(20):
                await timed(WARM, keep=False)
            for round_ in range(1, runs + 1):
                for i in range(calls):
                    await timed(WARM, True, i)
                for i in range(cold):
                    await timed(COLD, True, i)
                medians = (f"{h.fmt_ms(h.median(times[n][-calls:]))} ms {n}" for n in WARM)
                h.progress(f"  {loop_name} round {round_}/{runs}: " + ", ".join(medians))
    finally:
        pool.shutdown()
    return times


def measure(args: argparse.Namespace) -> Result:
    r = Result(rounds=args.runs, calls=args.calls or (20 if args.quick else 200))
    for loop in h.loop_names(args.loop):
        h.progress(f"fixed cost on {loop}: {args.runs} rounds of {r.calls} calls")
        cold = 1 if args.quick else 2
        r.loops[loop] = h.run_on(loop, measure_loop(loop, args.runs, r.calls, cold))
    return r


def loop_table(times: dict[str, list[float]]) -> str:
    rows = []
    for name, values in times.items():
        med, p90 = h.median(values), h.percentile(values, 90)
        base = h.median(times[WARM_BASELINE if name in WARM else COLD_BASELINE])
        over = "" if name in (WARM_BASELINE, COLD_BASELINE) else h.fmt_ms(med - base)
        target = h.verdict(max(med, p90) * 1e3 <= TARGET_MS) if name in WARM[1:] else ""
        figures = [h.fmt_ms(med), h.fmt_ms(p90), h.fmt_ms(max(values)), over, target]
        rows.append([name, f"{len(values):,}", *figures])
    headers = ["call", "calls", "median ms", "p90 ms", "max ms", "over its baseline ms", "target"]
    return h.markdown_table(headers, rows)


def render(r: Result) -> str:
    """Return the docs section: a table per event loop."""
    parts = [
        r.machine,
        "",
        f"Warm calls: {r.rounds} rounds of {r.calls} calls of each variant.",
        "",
    ]
    for loop, times in r.loops.items():
        parts += [f"### {h.loop_label(loop)}", "", loop_table(times), ""]
    return "\n".join(parts).rstrip()


if __name__ == "__main__":
    parser = h.parser(__doc__, runs=5, loop="both")
    parser.add_argument("--calls", type=h.positive, help="warm calls per round (default 200)")
    sys.exit(h.main("fixed_cost", parser, measure, render))
