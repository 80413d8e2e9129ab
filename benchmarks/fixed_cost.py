"""Fixed cost: the wall time of a tiny job, on a warm Engine and cold.

A job of 10 records (squared and summed) is all fixed cost: shipping the job's code to the
workers, one task round trip, folding one partial and closing the job's resources. Measured,
on the same event loop and interleaved call by call:

* warm: ``Engine.map_reduce`` on a warm ``aiomr.Engine(max_workers=2)``, from a ``range``
  and from an async generator, against one ``loop.run_in_executor`` round trip on a warm
  ``ProcessPoolExecutor(2)`` doing the same work (the floor of any process-pool call);
* cold: the module-level ``aiomr.map_reduce(..., max_workers=2)``, which starts and stops its
  own pool of 2 workers, against starting a ``ProcessPoolExecutor(2)`` with both its workers,
  making one call on each and shutting it down.

Both pools use the ``forkserver`` start method, whose server process is already running
(an untimed warm-up starts it). Every answer is checked.

Run ``python3 benchmarks/fixed_cost.py --help`` for the options.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import operator
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import _common

import aiomr

WORKERS = 2
RECORDS = 10
CALLS = 200
COLD_CALLS = 2
TARGET_MS = 5.0
EXPECTED = sum(x * x for x in range(RECORDS))

WARM_BASELINE = "one `run_in_executor` round trip, warm `ProcessPoolExecutor(2)`"
WARM_RANGE = "warm `Engine(max_workers=2)`, `range(10)`"
WARM_AGEN = "warm `Engine(max_workers=2)`, async generator of 10"
COLD_BASELINE = "start `ProcessPoolExecutor(2)` and both workers, one call, shut down"
COLD_AIOMR = "`aiomr.map_reduce(range(10), ..., max_workers=2)` (starts its own pool)"
WARM = (WARM_BASELINE, WARM_RANGE, WARM_AGEN)
COLD = (COLD_BASELINE, COLD_AIOMR)
TARGETED = (WARM_RANGE, WARM_AGEN)


async def numbers(n: int) -> AsyncIterator[int]:
    """Yield ``0 .. n-1``."""
    for i in range(n):
        yield i


def square(x: int) -> int:
    """Map one record."""
    return x * x


def sum_squares(batch: list[int]) -> int:
    """Map and reduce a batch in one call: the baseline's task."""
    return sum(x * x for x in batch)


def new_pool() -> concurrent.futures.ProcessPoolExecutor:
    return concurrent.futures.ProcessPoolExecutor(
        WORKERS, mp_context=multiprocessing.get_context("forkserver")
    )


def start_pool() -> concurrent.futures.ProcessPoolExecutor:
    """Start a warm ProcessPoolExecutor: every worker has run one task."""
    pool = new_pool()
    concurrent.futures.wait([pool.submit(time.sleep, 0.05) for _ in range(WORKERS)])
    return pool


async def cold_pool_call() -> int:
    """Start a pool and all its workers, make one call, shut the pool down.

    A pool starts one worker per submitted call while none is idle, so the second call
    starts the second worker, as ``Engine.start`` does. Pool start and shutdown run in a
    helper thread, as in aiomr.
    """
    loop = asyncio.get_running_loop()
    pool = await asyncio.to_thread(new_pool)
    try:
        calls = [
            loop.run_in_executor(pool, sum_squares, list(range(RECORDS))) for _ in range(WORKERS)
        ]
        answers = await asyncio.gather(*calls)
        return answers[0]
    finally:
        await asyncio.to_thread(pool.shutdown)


async def measure(loop_name: str, runs: int, calls: int, cold_calls: int) -> dict[str, list[float]]:
    """Time every variant; return the seconds of each call, by variant."""
    times: dict[str, list[float]] = {name: [] for name in (*WARM, *COLD)}
    loop = asyncio.get_running_loop()
    pool = await asyncio.to_thread(start_pool)
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

            async def timed(name: str, keep: bool) -> None:
                started = time.perf_counter()
                answer = await variants[name]()
                seconds = time.perf_counter() - started
                if answer != EXPECTED:
                    raise SystemExit(f"{name} on {loop_name}: wrong answer {answer}")
                if keep:
                    times[name].append(seconds)

            for name in COLD:  # untimed: starts the forkserver process
                await timed(name, keep=False)
            for _ in range(20):
                for name in WARM:
                    await timed(name, keep=False)
            for round_ in range(1, runs + 1):
                for i in range(calls):
                    for name in _common.rotated(WARM, i):
                        await timed(name, keep=True)
                for i in range(cold_calls):
                    for name in _common.rotated(COLD, i):
                        await timed(name, keep=True)
                _common.progress(
                    f"  {loop_name} round {round_}/{runs}: "
                    + ", ".join(
                        f"{_common.fmt_ms(_common.median(times[n][-calls:]))} ms {n}" for n in WARM
                    )
                )
    finally:
        pool.shutdown()
    return times


def loop_table(times: dict[str, list[float]]) -> str:
    rows = []
    floor = _common.median(times[WARM_BASELINE])
    cold_floor = _common.median(times[COLD_BASELINE])
    for name in (*WARM, *COLD):
        values = times[name]
        med = _common.median(values)
        base = floor if name in WARM else cold_floor
        target = ""
        if name in TARGETED:
            target = _common.verdict(max(med, _common.percentile(values, 90)) * 1e3 <= TARGET_MS)
        rows.append(
            [
                name,
                f"{len(values):,}",
                _common.fmt_ms(med),
                _common.fmt_ms(_common.percentile(values, 90)),
                _common.fmt_ms(max(values)),
                "" if name in (WARM_BASELINE, COLD_BASELINE) else _common.fmt_ms(med - base),
                target,
            ]
        )
    headers = ["call", "calls", "median ms", "p90 ms", "max ms", "over its baseline ms", "target"]
    return _common.markdown_table(headers, rows)


def render(results: dict[str, dict[str, list[float]]], runs: int, calls: int) -> str:
    parts = [
        "## Fixed cost of a job",
        "",
        _common.machine_line(),
        "",
        f"A job of {RECORDS} records (squared and summed) on {WORKERS} worker processes. "
        f"Warm calls: {runs} rounds of {calls} calls of each variant, interleaved call by "
        "call after 20 untimed calls each; cold calls: a few per round, interleaved. "
        "The median, 90th percentile and maximum are over all timed calls; *over its "
        "baseline* is the median minus the median of the baseline of the same kind (warm or "
        "cold), measured in the same run. Every answer was checked.",
        "",
        f"Target: a tiny job on a warm `Engine` takes ≤ {TARGET_MS:.0f} ms (median and p90). The "
        "cold rows include starting and stopping the worker processes (the `forkserver` "
        "server itself was already running) and are shown for contrast.",
        "",
    ]
    for loop_name, times in results.items():
        parts += [f"### {_common.loop_label(loop_name)}", "", loop_table(times), ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = _common.parser(__doc__.splitlines()[0], default_runs=5)
    parser.add_argument(
        "--calls",
        type=int,
        default=None,
        help=f"warm calls of each variant per round (default {CALLS})",
    )
    args = parser.parse_args(argv)
    calls = args.calls or (20 if args.quick else CALLS)
    runs = 1 if args.quick and args.runs == parser.get_default("runs") else args.runs
    cold_calls = 1 if args.quick else COLD_CALLS
    results: dict[str, dict[str, list[float]]] = {}
    for loop_name in _common.loop_names(args.loop):
        _common.progress(f"fixed cost on {loop_name}: {runs} rounds of {calls} calls")
        results[loop_name] = _common.run_on(loop_name, measure(loop_name, runs, calls, cold_calls))
    text = render(results, runs, calls)
    print(text)
    if args.write_docs:
        _common.write_section("fixed_cost", text)


if __name__ == "__main__":
    main()
