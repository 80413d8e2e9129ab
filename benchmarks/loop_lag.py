"""Event-loop lag: how late a 10 ms ticker wakes while a CPU-bound job saturates both cores.

The ticker runs alone (the idle baseline), beside an aiomr job on a warm ``Engine`` whose 2
workers run at niceness 0, 5 and 10, and beside the book's pattern (the input as a list,
60,000-record chunks, one ``run_in_executor`` each on a warm ``ProcessPoolExecutor(2)``,
``gather``). The job is calibrated to keep both cores busy for about 10 s; every job must
return the same answer. ``--help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import operator
import os
import sys
import time
from dataclasses import dataclass, field

import _harness as h
import _machine

import aiomr

WORKERS, BOOK_CHUNK, NICENESS = 2, 60_000, (0, 5, 10)
TARGET_P99_MS, TARGET_MAX_MS = 5.0, 20.0
IDLE = "idle (ticker alone)"
BOOK = "the book's pattern: list, 60,000-record chunks, run_in_executor, gather"


def work(x: int) -> int:
    """Map one record with a few microseconds of pure-Python arithmetic."""
    acc = x
    for i in range(100):
        acc = (acc * 31 + i) & 0xFFFF
    return acc


def work_chunk(records: list[int]) -> int:
    """Map and reduce one chunk: the task of the book's pattern."""
    return sum(map(work, records))


@dataclass
class Scenario:
    """The runs of one scenario on one event loop: each run's lateness, seconds, answer."""

    label: str
    niceness: int | None = None
    lateness: list[list[float]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    worker_nice: set[int] = field(default_factory=set)

    def lag(self, q: float | None) -> float:
        """Median over runs of a per-run percentile (``None``: the maximum)."""
        return h.median(max(r) if q is None else h.percentile(r, q) for r in self.lateness)

    def met(self) -> bool:
        return self.lag(99) * 1e3 <= TARGET_P99_MS and self.lag(None) * 1e3 <= TARGET_MAX_MS


@dataclass(kw_only=True)
class Result(h.Measurements):
    records: int
    per_record: float
    idle: float
    loops: dict[str, list[Scenario]] = field(default_factory=dict)


async def measure_loop(loop: str, runs: int, n: int, idle_seconds: float) -> list[Scenario]:
    """Run every scenario ``runs`` times, interleaved; check that all jobs agree."""
    scenarios = [
        Scenario(IDLE),
        *(Scenario(f"aiomr, warm Engine, `worker_niceness={nice}`", nice) for nice in NICENESS),
        Scenario(BOOK),
    ]
    answers: set[int | None] = set()
    pool = await asyncio.to_thread(_machine.process_pool, WORKERS)
    try:
        async with contextlib.AsyncExitStack() as stack:
            engines = {}
            for nice in NICENESS:
                executor = aiomr.executors.ProcessExecutor(WORKERS, worker_niceness=nice)
                await stack.enter_async_context(executor)  # the Engine does not close it
                engines[nice] = await stack.enter_async_context(aiomr.Engine(executor))

            async def job(s: Scenario) -> int | None:
                if s.label == IDLE:
                    await asyncio.sleep(idle_seconds)
                    return None
                if s.label == BOOK:  # materialise, chunk, submit everything, gather, reduce
                    data = list(range(n))
                    chunks = [data[i : i + BOOK_CHUNK] for i in range(0, n, BOOK_CHUNK)]
                    running = asyncio.get_running_loop()
                    return sum(
                        await asyncio.gather(
                            *(running.run_in_executor(pool, work_chunk, c) for c in chunks)
                        )
                    )
                return await engines[s.niceness or 0].map_reduce(range(n), work, operator.add)

            for round_, s in h.interleaved(scenarios, runs + 1, first=1):
                async with _machine.ticking() as lateness:
                    started = time.perf_counter()
                    answers.add(await job(s))
                    s.seconds.append(time.perf_counter() - started)
                s.lateness.append(lateness)
                p50, p99, worst = (
                    h.fmt_ms(x)
                    for x in (h.percentile(lateness, 50), h.percentile(lateness, 99), max(lateness))
                )
                h.progress(
                    f"  {loop} round {round_}/{runs}: p50 {p50} p99 {p99} max {worst} ms, "
                    f"{s.seconds[-1]:.1f} s  {s.label}"
                )
            # Read after the jobs: a worker may still be starting right after Engine.start().
            for s in scenarios:
                if s.niceness is not None:
                    workers = engines[s.niceness].executor
                    assert isinstance(workers, aiomr.executors.ProcessExecutor)
                    s.worker_nice = {
                        os.getpriority(os.PRIO_PROCESS, pid) for pid in workers.worker_pids()
                    }
    finally:
        pool.shutdown()
    if len(answers - {None}) != 1:
        raise SystemExit(f"the jobs on {loop} disagree: {answers - {None}}")
    return scenarios


def measure(args: argparse.Namespace) -> Result:
    job_seconds = args.job_seconds or (1.5 if args.quick else 10.0)
    best = float("inf")
    for _ in range(3):  # calibrate: the record count that keeps WORKERS cores busy so long
        started = time.perf_counter()
        work_chunk(list(range(20_000)))
        best = min(best, time.perf_counter() - started)
    per_record = best / 20_000
    n = int(job_seconds * WORKERS / per_record)
    r = Result(rounds=args.runs, records=n, per_record=per_record, idle=1.0 if args.quick else 3.0)
    for loop in h.loop_names(args.loop):
        h.progress(f"loop lag on {loop}: {n:,} records per job, {args.runs} runs")
        r.loops[loop] = h.run_on(loop, measure_loop(loop, args.runs, n, r.idle))
    return r


def loop_table(scenarios: list[Scenario], n: int) -> str:
    rows = []
    for s in scenarios:
        job = rate = target = ""
        if s.label != IDLE:
            seconds = h.median(s.seconds)
            job, rate = f"{seconds:.1f}", h.fmt_rate(n / seconds)
            target = h.verdict(s.met()) if s.niceness is not None else "n/a"
        nice = ", ".join(str(v) for v in sorted(s.worker_nice))
        ticks = f"{sum(map(len, s.lateness)):,}"
        lags = [h.fmt_ms(s.lag(50)), h.fmt_ms(s.lag(99)), h.fmt_ms(s.lag(None), 1)]
        worst = h.fmt_ms(max(max(r) for r in s.lateness), 1)
        rows.append([s.label, nice, ticks, *lags, worst, job, rate, target])
    headers = ["while the ticker runs", "workers' nice", "ticks", "p50 ms", "p99 ms", "max ms"]
    headers += ["worst max ms", "job s", "records/s", "target"]
    return h.markdown_table(headers, rows)


def render(r: Result) -> str:
    """Return the docs section: a table per event loop, and which niceness met the target."""
    parts = [
        r.machine,
        "",
        f"{r.records:,} records, about {r.per_record * 1e6:.1f} µs each (both cores busy for "
        f"about {r.records * r.per_record / WORKERS:.0f} s); the idle baseline ticks for "
        f"{r.idle:.0f} s; each scenario ran {h.times(r.rounds)}.",
        "",
    ]
    for loop, scenarios in r.loops.items():
        parts += [f"### {h.loop_label(loop)}", "", loop_table(scenarios, r.records), ""]
    parts += ["### Which niceness meets the target", ""]
    for loop, scenarios in r.loops.items():
        nice = [s for s in scenarios if s.niceness is not None]
        met = ", ".join(str(s.niceness) for s in nice if s.met()) or "none"
        missed = ", ".join(str(s.niceness) for s in nice if not s.met()) or "none"
        parts.append(
            f"- {h.loop_label(loop)}: met with `worker_niceness` {met}; missed with {missed}."
        )
    return "\n".join(parts)


if __name__ == "__main__":
    parser = h.parser(__doc__, runs=5, loop="both")
    parser.add_argument(
        "--job-seconds", type=float, help="how long the job keeps both cores busy (default 10)"
    )
    sys.exit(h.main("loop_lag", parser, measure, render))
