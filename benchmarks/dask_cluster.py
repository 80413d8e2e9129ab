"""The n-gram job on a two-worker Dask LocalCluster against the process pool on the same machine.

The workload is the one of ``benchmarks/ngram.py`` and ``examples/ngram.py``: total the
``match_count`` of every word of the generated Google Books 1-gram file in
``/tmp/aiomr-bench/`` (1 GB, seed 0, generated once by ``examples/ngram_data.py`` if absent).
Two aiomr jobs, each on 2 workers, exactly as ``benchmarks/ngram.py`` runs them:

1. ``split``: byte-range splits read by the workers (``aiomr.sources.files(...,
   encoding=None)``, ``mode="blocks"``) counted with the tight loop;
2. ``keyed``: the idiomatic key-value job, ``aiomr.map_reduce_by_key``'s plan run with
   ``Engine.run_by_key`` over ``aiomr.sources.files``, a mapper yielding
   ``(word, match_count)`` per line, shuffled through files in the job's directory.

Each runs on two executors:

* ``process``: aiomr's default, a `ProcessExecutor` of 2 worker processes;
* ``dask``: a `DaskExecutor` connected to a ``distributed.LocalCluster`` of 2 worker
  processes with one thread each (``processes=True``), started by this (the parent) process
  for the run, so its scheduler runs here, outside the contender, as a deployed scheduler
  would.

The timed span is the job alone, on warm workers: the process pool is started (``async with
aiomr.Engine(...)``, which waits for every worker) and the Dask executor connected
(``await executor.start()``) before the clock starts; the clock stops when the caller holds
the full ``{word: total}`` dict of text. Those start-up costs are reported apart, with the
time the parent took to start the cluster. Each timed run starts a fresh Python process for
the contender and, for Dask, a fresh cluster; variants are interleaved round by round in
rotating order; figures are medians. The *overhead ratio* is the median over rounds of the
Dask run's wall time over the process pool's for the same job in the same round.

Also measured, in the contender: the event loop's lag (a 10 ms ticker, as in
``benchmarks/ngram.py``) and the caller's peak RSS (``VmHWM``); and the CPU seconds the
whole machine spent busy during the job (``/proc/stat``: the workers, the caller and, for
Dask, the scheduler).

Every run's totals are checked, word for word, against those of the practical-limit program
of ``benchmarks/ngram.py`` (no aiomr code), computed once, and against the generator's
figures, before any figure is reported.

Run it alone on the machine::

    flock /tmp/aiomr-bench.lock python3 benchmarks/dask_cluster.py --write-docs
    python3 benchmarks/dask_cluster.py --quick        # a smoke run on 20 MB

and ``python3 benchmarks/dask_cluster.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import operator
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import _common
import ngram

WORKERS = 2
JOBS = ("split", "keyed")
EXECUTORS = ("process", "dask")
DEFAULT_RUNS = 3
RUN_TIMEOUT = 900.0
"""Seconds after which a contender run is killed and the benchmark fails."""
TICK_SECONDS = 0.01
SECTION = "dask_cluster"
HEADING = "On a Dask cluster"
JOB_LABELS = {
    "split": 'byte-range splits, tight loop (`mode="blocks"`)',
    "keyed": "idiomatic key-value job (`run_by_key`, shuffle through files)",
}
EXECUTOR_LABELS = {
    "process": "process pool (`ProcessExecutor`, 2 processes)",
    "dask": "Dask `LocalCluster` (`DaskExecutor`, 2 processes of 1 thread)",
}

Totals = dict[str, int]


# In the contender's process ---------------------------------------------------------------------


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (``/proc/stat``)."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def vm_hwm() -> int:
    """This process's peak RSS in bytes."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


async def ticker(lags: list[float]) -> None:
    """Sleep 10 ms at a time and record how late each wake-up is."""
    clock = time.perf_counter
    while True:
        before = clock()
        await asyncio.sleep(TICK_SECONDS)
        lags.append(clock() - before - TICK_SECONDS)


async def split_job(engine: Any, path: str) -> Totals:
    import aiomr.sources

    empty: dict[bytes, int] = {}
    totals = await engine.map_reduce(
        aiomr.sources.files(path, encoding=None, format="tsv", fields=4),
        ngram.count_blocks,
        ngram.merge_bytes_totals,
        initial=empty,
        mode="blocks",
    )
    decoded: Totals = await asyncio.to_thread(ngram.decode_totals, totals)
    return decoded


async def keyed_job(engine: Any, path: str) -> Totals:
    import aiomr.sources

    spec = aiomr.ReduceByKey(ngram.word_and_count, operator.add)
    totals: Totals = await engine.run_by_key(aiomr.sources.files(path), spec)
    return totals


JOB_FUNCTIONS: dict[str, Callable[[Any, str], Awaitable[Totals]]] = {
    "split": split_job,
    "keyed": keyed_job,
}


async def timed_job(engine: Any, job: str, path: str) -> dict[str, Any]:
    lags: list[float] = []
    tick = asyncio.create_task(ticker(lags))
    busy = machine_busy_seconds()
    started = time.perf_counter()
    try:
        totals = await JOB_FUNCTIONS[job](engine, path)
    finally:
        wall = time.perf_counter() - started
        busy = machine_busy_seconds() - busy
        tick.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick
    return {"totals": totals, "wall": wall, "busy": busy, "lags": lags}


async def contender(job: str, executor: str, path: str, address: str) -> dict[str, Any]:
    import aiomr
    from aiomr.executors import DaskExecutor

    started = time.perf_counter()
    if executor == "process":
        async with aiomr.Engine(max_workers=WORKERS) as engine:  # waits for both workers
            start_up = time.perf_counter() - started
            report = await timed_job(engine, job, path)
    else:
        async with DaskExecutor(address) as dask_executor:
            await dask_executor.start()
            start_up = time.perf_counter() - started
            if dask_executor.max_workers != WORKERS:
                raise SystemExit(f"the cluster runs {dask_executor.max_workers} tasks at once")
            async with aiomr.Engine(dask_executor) as engine:
                report = await timed_job(engine, job, path)
    report["start_up"] = start_up
    return report


def contender_main(job: str, executor: str, path: str, address: str, out: str) -> None:
    """Run one job once on one executor and write its totals and figures to ``out``."""
    import aiomr

    report = aiomr.run(contender(job, executor, path, address))
    report["vm_hwm"] = vm_hwm()
    with open(out, "wb") as f:
        pickle.dump(report, f, pickle.HIGHEST_PROTOCOL)


# In the parent ----------------------------------------------------------------------------------


@dataclass
class Run:
    job: str
    executor: str
    round: int
    wall: float
    busy: float
    start_up: float
    cluster_start: float
    caller_peak: int
    lag_p99: float
    lag_max: float


@dataclass
class Measurements:
    expected: ngram.Expected
    runs: list[Run] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0

    def of(self, job: str, executor: str) -> list[Run]:
        return [r for r in self.runs if r.job == job and r.executor == executor]


def start_cluster() -> tuple[Any, float]:
    """Start a LocalCluster of 2 worker processes (one thread each); return it and the time."""
    import distributed

    started = time.perf_counter()
    cluster = distributed.LocalCluster(
        n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    return cluster, time.perf_counter() - started


def run_once(job: str, executor: str, path: str, round_: int) -> tuple[Run, Totals]:
    """Run ``job`` on ``executor`` in a fresh process (and, for Dask, a fresh cluster)."""
    cluster, cluster_start = (None, 0.0) if executor == "process" else start_cluster()
    try:
        address = cluster.scheduler_address if cluster is not None else "-"
        with tempfile.TemporaryDirectory(prefix="aiomr-dask-bench-") as tmp:
            out = os.path.join(tmp, "report.pkl")
            command = [sys.executable, __file__, "--contender", job, executor, path, address, out]
            try:
                subprocess.run(command, stdout=sys.stderr, timeout=RUN_TIMEOUT, check=True)
            except subprocess.TimeoutExpired:
                raise SystemExit(
                    f"{job} on {executor}: no result after {RUN_TIMEOUT:.0f} s"
                ) from None
            except subprocess.CalledProcessError as exc:
                raise SystemExit(
                    f"{job} on {executor}: the contender exited with {exc.returncode}"
                ) from None
            with open(out, "rb") as f:
                report = pickle.load(f)
    finally:
        if cluster is not None:
            cluster.close()
    lags: list[float] = report["lags"]
    run = Run(
        job,
        executor,
        round_,
        report["wall"],
        report["busy"],
        report["start_up"],
        cluster_start,
        report["vm_hwm"],
        _common.percentile(lags, 99),
        max(lags, default=float("nan")),
    )
    return run, report["totals"]


def check_against_reference(key: str, totals: Totals, reference: Totals) -> None:
    """Fail unless every word's total equals the practical-limit program's."""
    if totals != reference:
        wrong = sorted(
            w for w in reference.keys() | totals.keys() if totals.get(w) != reference.get(w)
        )
        shown = ", ".join(f"{w!r}: {totals.get(w)} != {reference.get(w)}" for w in wrong[:5])
        raise SystemExit(f"{key}: {len(wrong):,} words differ from the reference: {shown}")


def measure(jobs: Sequence[str], expected: ngram.Expected, runs: int) -> Measurements:
    m = Measurements(expected)
    _common.progress("computing the reference totals with the practical-limit program")
    reference, _ = ngram.run_limit(expected.path)
    ngram.check_against_generator("reference", reference, expected)
    ngram.warm_page_cache(expected.path)
    variants = [(job, executor) for job in jobs for executor in EXECUTORS]
    for round_ in range(runs):
        for job, executor in _common.rotated(variants, round_):
            run, totals = run_once(job, executor, expected.path, round_)
            key = f"{job} on {executor}"
            ngram.check_against_generator(key, totals, expected)
            check_against_reference(key, totals, reference)
            m.runs.append(run)
            _common.progress(
                f"round {round_ + 1}/{runs}: {key}: {run.wall:.2f} s "
                f"(start-up {run.start_up:.2f} s, lag p99 {run.lag_p99 * 1e3:.1f} ms)"
            )
    m.seconds = time.monotonic() - m.started
    return m


def overhead_ratio(m: Measurements, job: str) -> float:
    """Median over rounds of the Dask run's wall time over the process pool's."""
    process = {r.round: r.wall for r in m.of(job, "process")}
    ratios = [r.wall / process[r.round] for r in m.of(job, "dask") if r.round in process]
    return _common.median(ratios) if ratios else float("nan")


def _med(runs: Sequence[Run], name: str) -> float:
    return _common.median(getattr(r, name) for r in runs)


def render(m: Measurements, jobs: Sequence[str]) -> str:
    e = m.expected
    runs = max(len(m.of(job, ex)) for job in jobs for ex in EXECUTORS)
    rows = []
    for job in jobs:
        for executor in EXECUTORS:
            ran = m.of(job, executor)
            walls = [r.wall for r in ran]
            ratio = "1.00 (baseline)" if executor == "process" else f"{overhead_ratio(m, job):.2f}"
            rows.append(
                [
                    JOB_LABELS[job],
                    EXECUTOR_LABELS[executor],
                    str(len(ran)),
                    f"{_common.median(walls):.2f} s",
                    f"{min(walls):.2f} to {max(walls):.2f} s",
                    ratio,
                    f"{_med(ran, 'busy'):.1f}",
                    f"{_med(ran, 'lag_p99') * 1e3:.1f} ms",
                    f"{_med(ran, 'caller_peak') / 1e6:,.0f} MB",
                ]
            )
    table = _common.markdown_table(
        [
            "job",
            "executor",
            "runs",
            "wall (median)",
            "range",
            "overhead ratio",
            "machine CPU s",
            "loop lag p99",
            "caller peak RSS",
        ],
        rows,
        left=(0, 1),
    )
    start_rows = [
        [
            "process pool: start 2 workers and wait for both (`Engine` entered)",
            f"{_common.median(r.start_up for r in m.runs if r.executor == 'process'):.2f} s",
        ],
        [
            "Dask: start the `LocalCluster` (in the parent)",
            f"{_common.median(r.cluster_start for r in m.runs if r.executor == 'dask'):.2f} s",
        ],
        [
            "Dask: connect the executor's client (`await executor.start()`)",
            f"{_common.median(r.start_up for r in m.runs if r.executor == 'dask'):.2f} s",
        ],
    ]
    starts = _common.markdown_table(["start-up, outside the timed span", "median"], start_rows)
    ratios = ", ".join(f"{overhead_ratio(m, job):.2f}x for the {job} job" for job in jobs)
    return "\n".join(
        [
            f"## {HEADING}",
            "",
            _common.machine_line(),
            "",
            "The n-gram workload of `benchmarks/ngram.py` (the generated 1-gram file: "
            f"{e.size_bytes / 1e6:,.0f} MB, {e.lines:,} lines, {e.words:,} distinct words, in "
            "the page cache), run by the same aiomr code on the process pool and on a Dask "
            "`LocalCluster` on the same machine, each with 2 worker processes. The cluster's "
            "scheduler runs in the benchmark's parent process, outside the contender; a fresh "
            "cluster and a fresh contender process serve each run. The timed span is the job "
            "alone on warm workers (pool started, client connected); start-up costs are below. "
            f"Each variant ran {'once' if runs == 1 else f'{runs} times'}, interleaved round "
            "by round in rotating order; medians. The *overhead ratio* is the median over "
            "rounds of the Dask run's wall time over the process pool's in the same round. "
            "*Machine CPU s* is the CPU time the whole machine spent busy during the job: "
            "workers, caller and, for Dask, the scheduler, but also any other load, which the "
            "load average above hints at. *Loop lag* is how late a 10 ms ticker on the "
            "caller's event loop woke up. Every run's totals equalled, word for word, those "
            "of the practical-limit program of `benchmarks/ngram.py` and the generator's "
            "figures.",
            "",
            table,
            "",
            starts,
            "",
            f"The overhead ratio: {ratios}. On one machine Dask adds its scheduler's round "
            "trips and CPU to every task; across machines it adds workers, which the process "
            "pool cannot.",
            "",
            f"The benchmark took {m.seconds / 60:.0f} minutes. Reproduce with:",
            "",
            "```console",
            "flock /tmp/aiomr-bench.lock python3 benchmarks/dask_cluster.py --write-docs",
            "```",
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, help=f"rounds (default {DEFAULT_RUNS}, 1 with --quick)")
    p.add_argument("--size", help=f"input size (default {ngram.DEFAULT_SIZE})")
    p.add_argument("--quick", action="store_true", help=f"a smoke run on {ngram.QUICK_SIZE}")
    p.add_argument("--jobs", default=",".join(JOBS), help="jobs to run (default: both)")
    p.add_argument("--write-docs", action="store_true", help="write the section of the docs")
    p.add_argument("--contender", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        p.error("--runs must be >= 1")
    if args.quick and args.write_docs:
        p.error("--quick figures are not for the docs; drop --write-docs")
    unknown = set(args.jobs.split(",")) - set(JOBS)
    if unknown:
        p.error(f"unknown jobs: {', '.join(sorted(unknown))}; try {', '.join(JOBS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.contender:
        contender_main(*args.contender)
        return 0
    sys.path.insert(0, str(_common.REPO_ROOT / "examples"))
    from ngram_data import parse_size

    size = parse_size(args.size or (ngram.QUICK_SIZE if args.quick else ngram.DEFAULT_SIZE))
    jobs = [job for job in JOBS if job in args.jobs.split(",")]
    expected = ngram.ensure_input(size)
    m = measure(jobs, expected, args.runs or (1 if args.quick else DEFAULT_RUNS))
    body = render(m, jobs)
    print(body)
    if args.write_docs:
        _common.write_extra_section(SECTION, body)
        _common.progress(f"wrote {_common.DOCS_PAGE.relative_to(_common.REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
