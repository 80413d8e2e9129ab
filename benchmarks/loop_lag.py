"""Event-loop lag: how late a 10 ms ticker wakes while a CPU-bound job saturates both cores.

A coroutine sleeps 10 ms in a loop and records how late each wake-up is, while one of these
runs on the same event loop:

* nothing (the idle baseline: what the machine and the loop cost on their own);
* an aiomr job on a warm ``aiomr.Engine`` with 2 worker processes, whose mapper does a few
  microseconds of pure-Python arithmetic per record over a ``range`` sized so that the job
  keeps both cores busy for about 10 s, with the workers' niceness raised by 0, 5 and 10
  (``aiomr.executors.ProcessExecutor(2, worker_niceness=N)``);
* the same work written the way "the book's asyncio program" does it: materialise the input
  as a list, cut it into 60,000-record chunks, ``run_in_executor`` every chunk on a warm
  ``ProcessPoolExecutor(2)``, ``gather``, reduce.

Scenarios are interleaved round by round (the order rotates), on the same event loop, and
every job must return the same answer. Pool start-up is outside every measurement.

Run ``python3 benchmarks/loop_lag.py --help`` for the options.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import multiprocessing
import operator
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import _common

import aiomr

WORKERS = 2
TICK_SECONDS = 0.010
JOB_SECONDS = 10.0
IDLE_SECONDS = 3.0
BOOK_CHUNK = 60_000
NICENESS = (0, 5, 10)
TARGET_P99_MS = 5.0
TARGET_MAX_MS = 20.0

IDLE = "idle (ticker alone)"
BOOK = "the book's pattern: list, 60,000-record chunks, run_in_executor, gather"


def aiomr_label(niceness: int) -> str:
    return f"aiomr, warm Engine, `worker_niceness={niceness}`"


def work(x: int) -> int:
    """Map one record with a few microseconds of pure-Python arithmetic."""
    acc = x
    for i in range(100):
        acc = (acc * 31 + i) & 0xFFFF
    return acc


def work_chunk(records: list[int]) -> int:
    """Map and reduce one chunk: the task of the book's pattern."""
    return sum(map(work, records))


def calibrate(job_seconds: float) -> tuple[int, float]:
    """Return a record count that keeps ``WORKERS`` cores busy for ``job_seconds``."""
    sample = list(range(20_000))
    best = min(_timed(work_chunk, sample) for _ in range(3))
    per_record = best / len(sample)
    return int(job_seconds * WORKERS / per_record), per_record


def _timed(fn: Callable[[list[int]], int], arg: list[int]) -> float:
    started = time.perf_counter()
    fn(arg)
    return time.perf_counter() - started


async def tick(stop: asyncio.Event, lateness: list[float]) -> None:
    """Sleep ``TICK_SECONDS`` again and again; record how late each wake-up is (>= 0)."""
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(TICK_SECONDS)
        lateness.append(max(0.0, time.perf_counter() - before - TICK_SECONDS))


@dataclass
class Run:
    """One measurement: the ticker's lateness while something ran."""

    lateness: list[float]
    seconds: float
    answer: int | None

    def pct(self, q: float) -> float:
        return _common.percentile(self.lateness, q)


async def observe(job: Callable[[], Awaitable[int]] | None, idle_seconds: float) -> Run:
    """Run ``job`` (or just wait ``idle_seconds``) while the ticker runs."""
    stop = asyncio.Event()
    lateness: list[float] = []
    async with asyncio.TaskGroup() as tg:
        tg.create_task(tick(stop, lateness))
        started = time.perf_counter()
        try:
            if job is None:
                await asyncio.sleep(idle_seconds)
                answer = None
            else:
                answer = await job()
        finally:
            seconds = time.perf_counter() - started
            stop.set()
    return Run(lateness, seconds, answer)


async def book_program(pool: concurrent.futures.Executor, n: int) -> int:
    """Materialise, chunk, submit everything, gather, reduce: the contrast."""
    loop = asyncio.get_running_loop()
    data = list(range(n))
    chunks = [data[i : i + BOOK_CHUNK] for i in range(0, n, BOOK_CHUNK)]
    futures = [loop.run_in_executor(pool, work_chunk, chunk) for chunk in chunks]
    results = await asyncio.gather(*futures)
    return functools.reduce(operator.add, results)


def start_pool() -> concurrent.futures.ProcessPoolExecutor:
    """Start a warm ProcessPoolExecutor: every worker has run one task."""
    pool = concurrent.futures.ProcessPoolExecutor(
        WORKERS, mp_context=multiprocessing.get_context("forkserver")
    )
    concurrent.futures.wait([pool.submit(time.sleep, 0.05) for _ in range(WORKERS)])
    return pool


def worker_nice_values(engine: aiomr.Engine) -> set[int]:
    """Read the scheduling niceness of the engine's worker processes."""
    executor = engine.executor
    assert isinstance(executor, aiomr.executors.ProcessExecutor)
    return {os.getpriority(os.PRIO_PROCESS, pid) for pid in executor.worker_pids()}


@dataclass
class Scenario:
    """The runs of one scenario on one event loop."""

    label: str
    runs: list[Run] = field(default_factory=list)
    worker_nice: set[int] = field(default_factory=set)
    niceness: int | None = None


async def measure(
    loop_name: str, runs: int, n: int, idle_seconds: float
) -> tuple[list[Scenario], int]:
    """Run every scenario ``runs`` times, interleaved; return them and the common answer."""
    scenarios = [Scenario(IDLE)]
    scenarios += [Scenario(aiomr_label(nice), niceness=nice) for nice in NICENESS]
    scenarios.append(Scenario(BOOK))
    pool = await asyncio.to_thread(start_pool)
    answers: set[int] = set()
    try:
        async with contextlib.AsyncExitStack() as stack:
            engines: dict[int, aiomr.Engine] = {}
            for nice in NICENESS:
                executor = aiomr.executors.ProcessExecutor(WORKERS, worker_niceness=nice)
                await stack.enter_async_context(executor)  # the Engine does not close it
                engines[nice] = await stack.enter_async_context(aiomr.Engine(executor))

            def job_of(scenario: Scenario) -> Callable[[], Awaitable[int]] | None:
                if scenario.label == IDLE:
                    return None
                if scenario.label == BOOK:
                    return lambda: book_program(pool, n)
                engine = engines[scenario.niceness or 0]
                return lambda: engine.map_reduce(range(n), work, operator.add)

            for round_ in range(1, runs + 1):
                for scenario in _common.rotated(scenarios, round_):
                    run = await observe(job_of(scenario), idle_seconds)
                    scenario.runs.append(run)
                    if run.answer is not None:
                        answers.add(run.answer)
                    p50, p99, worst = run.pct(50), run.pct(99), max(run.lateness)
                    _common.progress(
                        f"  {loop_name} round {round_}/{runs}: p50 {_common.fmt_ms(p50)} "
                        f"p99 {_common.fmt_ms(p99)} max {_common.fmt_ms(worst)} ms, "
                        f"{run.seconds:.1f} s  {scenario.label}"
                    )
            # Read after the jobs: a worker may still be starting right after Engine.start().
            for scenario in scenarios:
                if scenario.niceness is not None:
                    scenario.worker_nice = worker_nice_values(engines[scenario.niceness])
    finally:
        pool.shutdown()
    if len(answers) != 1:
        raise SystemExit(f"the jobs on {loop_name} disagree: {sorted(answers)}")
    return scenarios, answers.pop()


def _median_of(scenario: Scenario, q: float | None) -> float:
    """Median over runs of a per-run percentile (``None``: the maximum)."""
    return _common.median(max(r.lateness) if q is None else r.pct(q) for r in scenario.runs)


def meets_target(scenario: Scenario) -> bool:
    return (
        _median_of(scenario, 99) * 1e3 <= TARGET_P99_MS
        and _median_of(scenario, None) * 1e3 <= TARGET_MAX_MS
    )


def loop_table(scenarios: list[Scenario], n: int) -> str:
    rows = []
    for s in scenarios:
        ticks = sum(len(r.lateness) for r in s.runs)
        worst = max(max(r.lateness) for r in s.runs)
        if s.label == IDLE:
            job, rate, target = "", "", ""
        else:
            seconds = _common.median(r.seconds for r in s.runs)
            job = f"{seconds:.1f}"
            rate = _common.fmt_rate(n / seconds)
            target = _common.verdict(meets_target(s)) if s.niceness is not None else "n/a"
        nice = ", ".join(str(v) for v in sorted(s.worker_nice)) if s.worker_nice else ""
        rows.append(
            [
                s.label,
                nice,
                f"{ticks:,}",
                _common.fmt_ms(_median_of(s, 50)),
                _common.fmt_ms(_median_of(s, 99)),
                _common.fmt_ms(_median_of(s, None), 1),
                _common.fmt_ms(worst, 1),
                job,
                rate,
                target,
            ]
        )
    headers = [
        "while the ticker runs",
        "workers' nice",
        "ticks",
        "p50 ms",
        "p99 ms",
        "max ms",
        "worst max ms",
        "job s",
        "records/s",
        "target",
    ]
    return _common.markdown_table(headers, rows)


def render(
    results: dict[str, list[Scenario]], runs: int, n: int, per_record: float, idle: float
) -> str:
    parts = [
        "## Event-loop lag under a CPU-bound job",
        "",
        _common.machine_line(),
        "",
        f"A coroutine sleeps {TICK_SECONDS * 1e3:.0f} ms in a loop and records how late each "
        f"wake-up is, while a job maps {n:,} records on {WORKERS} worker processes (about "
        f"{per_record * 1e6:.1f} µs of pure-Python arithmetic per record, calibrated so the job "
        f"keeps both cores busy for about {n * per_record / WORKERS:.0f} s), or, for the idle "
        f"baseline, for {idle:.0f} s while nothing else runs. Each scenario ran {runs} times, "
        "interleaved with the others in rotating order. The p50, p99 and max columns are "
        "medians over the runs of each run's percentile; *worst max* is the largest lateness "
        "seen in any run; *job s* is the median wall time of the job. All jobs returned the "
        "same answer. Pool start-up is outside every measurement (the pools are warm).",
        "",
        f"Target for aiomr: p99 ≤ {TARGET_P99_MS:.0f} ms and max ≤ {TARGET_MAX_MS:.0f} ms "
        "(medians over the runs). The book's pattern is shown for contrast and has no target.",
        "",
    ]
    for loop_name, scenarios in results.items():
        parts += [f"### {_common.loop_label(loop_name)}", "", loop_table(scenarios, n), ""]
    parts += ["### Which niceness meets the target", ""]
    for loop_name, scenarios in results.items():
        meeting = [str(s.niceness) for s in scenarios if s.niceness is not None and meets_target(s)]
        missing = [
            str(s.niceness) for s in scenarios if s.niceness is not None and not meets_target(s)
        ]
        parts.append(
            f"- {_common.loop_label(loop_name)}: met with `worker_niceness` "
            f"{', '.join(meeting) or 'none'}; missed with {', '.join(missing) or 'none'}."
        )
    parts += [
        "",
        "### Where the lateness comes from",
        "",
        "With both cores saturated, the event loop's thread competes for the CPU with the "
        "workers, and so do the caller's helper threads: aiomr's pool thread, which writes "
        "tasks to the workers' pipes and reads and unpickles their replies, or the standard "
        "pool's feeder and manager threads in the book's pattern. When one of those threads "
        "is descheduled while it holds the GIL, the loop waits for it as well: this shows as "
        "occasional stalls of several milliseconds, in aiomr and in any other program that "
        "feeds a process pool from its loop. Raising the workers' niceness lets the "
        "caller's threads take a core as soon as they wake; the *job s* column shows what it "
        "costs the job. The book's pattern adds stalls of its own: it builds the whole input "
        "list and cuts it into chunks on the loop before submitting anything, which is its "
        "large *max*.",
        "",
    ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = _common.parser(__doc__.splitlines()[0], default_runs=5)
    parser.add_argument(
        "--job-seconds",
        type=float,
        default=None,
        help=f"how long the job should keep both cores busy (default {JOB_SECONDS:.0f})",
    )
    args = parser.parse_args(argv)
    job_seconds = args.job_seconds or (1.5 if args.quick else JOB_SECONDS)
    idle_seconds = 1.0 if args.quick else IDLE_SECONDS
    runs = 1 if args.quick and args.runs == parser.get_default("runs") else args.runs
    n, per_record = calibrate(job_seconds)
    results: dict[str, list[Scenario]] = {}
    for loop_name in _common.loop_names(args.loop):
        _common.progress(f"loop lag on {loop_name}: {n:,} records per job, {runs} runs")
        scenarios, _ = _common.run_on(loop_name, measure(loop_name, runs, n, idle_seconds))
        results[loop_name] = scenarios
    text = render(results, runs, n, per_record, idle_seconds)
    print(text)
    if args.write_docs:
        _common.write_section("loop_lag", text)


if __name__ == "__main__":
    main()
