"""Streaming throughput: small records from an async generator through two worker processes.

The job: 2,000,000 ints from an async generator, each squared, all summed, on 2 workers.
Every variant below runs in the same process, interleaved round by round (the order rotates
each round), on the same event loop:

* ``plain async for``: one process sums as it iterates; the ceiling for anything that
  streams its input through the caller;
* ``hand-written batched loop``: 10,000 records per ``loop.run_in_executor`` call on a
  ``ProcessPoolExecutor(2)``, at most 4 calls in flight (a sliding window); each call sums
  ``square(x)`` over its batch;
* ``one run_in_executor per record``: the naive way, on fewer records (it is slow), with a
  window of 64 calls in flight;
* ``aiomr.map_reduce`` (module-level: it starts and stops its own pool inside the timing),
  compared with the batched loop on a pool started and shut down inside the timing too;
* ``Engine.map_reduce`` on a warm ``aiomr.Engine(max_workers=2)``, with the default adaptive
  chunking and with ``chunk_size=10_000``.

Pool start-up is excluded from every warm variant: the baseline's ``ProcessPoolExecutor`` and
the ``Engine`` start and run a task on every worker before any timing; it is included in both
cold variants. Both pools use the ``forkserver`` start method. Every answer is checked against
the closed form of the sum.

Run ``python3 benchmarks/streaming.py --help`` for the options.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import operator
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import _common

import aiomr

WORKERS = 2
RECORDS = 2_000_000
PER_RECORD_RECORDS = 20_000
BATCH = 10_000
WINDOW = 4
PER_RECORD_WINDOW = 64
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
    """Map one record."""
    return x * x


def sum_squares(batch: list[int]) -> int:
    """Map and reduce one batch: the task of the hand-written batched loop.

    It calls the same ``square`` as aiomr's mapper, so both pay the same per-record cost in
    the workers and the comparison measures what surrounds the mapper.
    """
    return sum(map(square, batch))


def expected_sum(n: int) -> int:
    """Return the sum of squares of ``0 .. n-1``."""
    return (n - 1) * n * (2 * n - 1) // 6


async def plain_loop(n: int) -> int:
    """Sum as the records stream in, in this process: the ceiling."""
    total = 0
    async for x in numbers(n):
        total += x * x
    return total


async def batched_loop(pool: concurrent.futures.Executor, n: int) -> int:
    """Send batches of ``BATCH`` records, at most ``WINDOW`` in flight: the baseline."""
    loop = asyncio.get_running_loop()
    total = 0
    in_flight: set[asyncio.Future[int]] = set()
    batch: list[int] = []
    async for x in numbers(n):
        batch.append(x)
        if len(batch) == BATCH:
            if len(in_flight) >= WINDOW:
                done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                total += sum(f.result() for f in done)
            in_flight.add(loop.run_in_executor(pool, sum_squares, batch))
            batch = []
    if batch:
        in_flight.add(loop.run_in_executor(pool, sum_squares, batch))
    return total + sum(await asyncio.gather(*in_flight))


async def per_record_loop(pool: concurrent.futures.Executor, n: int) -> int:
    """Send every record on its own, at most ``PER_RECORD_WINDOW`` in flight."""
    loop = asyncio.get_running_loop()
    total = 0
    in_flight: set[asyncio.Future[int]] = set()
    async for x in numbers(n):
        if len(in_flight) >= PER_RECORD_WINDOW:
            done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            total += sum(f.result() for f in done)
        in_flight.add(loop.run_in_executor(pool, square, x))
    return total + sum(await asyncio.gather(*in_flight))


@dataclass
class Samples:
    """Timed runs of one variant on one event loop."""

    records: int
    seconds: list[float] = field(default_factory=list)
    chunk_sizes: list[int] = field(default_factory=list)

    def rates(self) -> list[float]:
        return [self.records / s for s in self.seconds]


def new_pool() -> concurrent.futures.ProcessPoolExecutor:
    return concurrent.futures.ProcessPoolExecutor(
        WORKERS, mp_context=multiprocessing.get_context("forkserver")
    )


def start_pool() -> concurrent.futures.ProcessPoolExecutor:
    """Start a warm ProcessPoolExecutor: every worker has run one task."""
    pool = new_pool()
    concurrent.futures.wait([pool.submit(time.sleep, 0.05) for _ in range(WORKERS)])
    return pool


async def batched_loop_cold(n: int) -> int:
    """The batched loop on a pool started and shut down inside the call, like aiomr's."""
    pool = new_pool()
    try:
        return await batched_loop(pool, n)
    finally:
        await asyncio.to_thread(pool.shutdown)


async def measure(loop_name: str, runs: int, n: int, n_per_record: int) -> dict[str, Samples]:
    """Run every variant ``runs`` times (after one untimed warm-up round) on the running loop."""
    samples = {name: Samples(n_per_record if name == PER_RECORD else n) for name in VARIANTS}
    pool = await asyncio.to_thread(start_pool)
    try:
        async with aiomr.Engine(max_workers=WORKERS) as engine:

            def variant(name: str, size: int) -> Callable[[aiomr.JobStats], Awaitable[int]]:
                if name == PLAIN:
                    return lambda _: plain_loop(size)
                if name == BATCHED:
                    return lambda _: batched_loop(pool, size)
                if name == BATCHED_COLD:
                    return lambda _: batched_loop_cold(size)
                if name == PER_RECORD:
                    return lambda _: per_record_loop(pool, size)
                if name == COLD:
                    return lambda st: aiomr.map_reduce(
                        numbers(size), square, operator.add, max_workers=WORKERS, stats=st
                    )
                chunk_size = BATCH if name == WARM_10K else None
                return lambda st: engine.map_reduce(
                    numbers(size), square, operator.add, chunk_size=chunk_size, stats=st
                )

            for round_ in range(runs + 1):
                warm_up = round_ == 0
                for name in _common.rotated(VARIANTS, round_):
                    size = samples[name].records
                    if warm_up:
                        size = min(size, 100_000)
                    stats = aiomr.JobStats()
                    started = time.perf_counter()
                    answer = await variant(name, size)(stats)
                    seconds = time.perf_counter() - started
                    if answer != expected_sum(size):
                        raise SystemExit(f"{name} on {loop_name}: wrong answer {answer}")
                    if warm_up:
                        continue
                    samples[name].seconds.append(seconds)
                    if stats.chunk_sizes:
                        samples[name].chunk_sizes.append(max(s for _, s in stats.chunk_sizes))
                    _common.progress(
                        f"  {loop_name} round {round_}/{runs}: "
                        f"{_common.fmt_rate(size / seconds):>11}  {name}"
                    )
    finally:
        pool.shutdown()
    return samples


def paired_ratio(samples: dict[str, Samples], name: str, baseline: str = BATCHED) -> float:
    """Median over rounds of this variant's records/s over the baseline's, same round."""
    ours, theirs = samples[name].rates(), samples[baseline].rates()
    return _common.median(a / b for a, b in zip(ours, theirs, strict=True))


def loop_table(samples: dict[str, Samples]) -> str:
    rows = []
    for name in VARIANTS:
        s = samples[name]
        rates = s.rates()
        baseline = BASELINE_OF.get(name, BATCHED)
        notes = []
        if name == PER_RECORD:
            notes.append(f"{s.records:,} records only")
        if s.chunk_sizes:
            notes.append(f"largest chunk {max(s.chunk_sizes):,}")
        if baseline != BATCHED:
            notes.append("ratio to the batched loop with pool start included")
        rows.append(
            [
                name,
                f"{s.records:,}",
                _common.fmt_rate(_common.median(rates)),
                f"{_common.fmt_rate(min(rates))} to {_common.fmt_rate(max(rates))}",
                _common.fmt_ratio(paired_ratio(samples, name, baseline)),
                "; ".join(notes),
            ]
        )
    return _common.markdown_table(
        ["variant", "records", "median records/s", "range", "vs batched loop", "notes"],
        rows,
        left=(0, 5),
    )


def summary_table(results: dict[str, dict[str, Samples]]) -> str:
    rows = []
    for loop_name, samples in results.items():
        for name, baseline in BASELINE_OF.items():
            ratio = paired_ratio(samples, name, baseline)
            rows.append(
                [
                    _common.loop_label(loop_name),
                    name,
                    baseline,
                    f"{ratio:.2f}",
                    _common.verdict(round(ratio, 2) >= TARGET_RATIO),
                ]
            )
    return _common.markdown_table(
        ["event loop", "aiomr", "compared with", "ratio of records/s", "target ≥ 0.85"],
        rows,
        left=(0, 1, 2),
    )


def render(results: dict[str, dict[str, Samples]], runs: int, n: int) -> str:
    per_record = results[next(iter(results))][PER_RECORD].records
    parts = [
        "## Streaming throughput",
        "",
        _common.machine_line(),
        "",
        f"{n:,} small ints from an async generator, each squared, all summed, on "
        f"{WORKERS} worker processes. Each variant ran {runs} times (after one untimed "
        "warm-up round), interleaved with the others in rotating order; the table gives the "
        "median records/s, the range over the runs, and the median over rounds of the ratio to "
        "the hand-written batched loop measured in the same round. The batched loop's tasks "
        "and aiomr's mapper call the same `square` function, so the workers do the same work "
        "in both. Every answer was checked against the closed form of the sum.",
        "",
        "Pool start-up is treated the same on both sides of every comparison. It is "
        "**excluded** from the warm rows: the batched loop, the per-record loop and the warm "
        "`Engine` run on pools that were started, with a task run on every worker, before "
        "timing. It is **included** in the two cold rows: the module-level "
        "`aiomr.map_reduce` starts and stops its own pool inside the timing, and so does the "
        "batched loop it is compared with (both use `forkserver`, whose server process was "
        f"already running). The per-record row ran on {per_record:,} records only (it is slow); "
        "its rate is per second like the others.",
        "",
    ]
    for loop_name, samples in results.items():
        parts += [f"### {_common.loop_label(loop_name)}", "", loop_table(samples), ""]
    parts += [
        "### Against the target",
        "",
        f"Target: aiomr reaches at least {TARGET_RATIO} of the hand-written batched loop's "
        "records/s, warm compared with warm and cold with cold.",
        "",
        summary_table(results),
        "",
    ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = _common.parser(__doc__.splitlines()[0], default_runs=7)
    parser.add_argument("--records", type=int, default=None, help=f"default {RECORDS:,}")
    args = parser.parse_args(argv)
    n = args.records or (200_000 if args.quick else RECORDS)
    n_per_record = 2_000 if args.quick else PER_RECORD_RECORDS
    runs = 2 if args.quick and args.runs == parser.get_default("runs") else args.runs
    results: dict[str, dict[str, Samples]] = {}
    for loop_name in _common.loop_names(args.loop):
        _common.progress(f"streaming on {loop_name}: {n:,} records, {runs} runs")
        results[loop_name] = _common.run_on(loop_name, measure(loop_name, runs, n, n_per_record))
    text = render(results, runs, n)
    print(text)
    if args.write_docs:
        _common.write_section("streaming", text)


if __name__ == "__main__":
    main()
