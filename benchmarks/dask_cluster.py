"""The n-gram job on a two-worker Dask LocalCluster against the process pool on the same machine.

The split and key-value jobs of ``benchmarks/ngram.py`` run on aiomr's `ProcessExecutor` and
on a `DaskExecutor` connected to a ``distributed.LocalCluster`` of 2 worker processes of one
thread, started by this (the parent) process for each run. The timed span is the job alone on
warm workers; start-up is reported apart. Each run is a fresh contender process, interleaved
round by round; every run's totals are checked against the practical-limit program's.

    flock /tmp/aiomr-bench.lock python3 benchmarks/dask_cluster.py --write-docs
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import dataclass
from typing import Any

import _harness as h
import _isolated
import _machine
import _ngram_workload as workload

WORKERS, RUN_TIMEOUT = 2, 900.0
JOBS = {
    "split": 'byte-range splits, tight loop (`mode="blocks"`)',
    "keyed": "idiomatic key-value job (`run_by_key`, shuffle through files)",
}
EXECUTORS = {
    "process": "process pool (`ProcessExecutor`, 2 processes)",
    "dask": "Dask `LocalCluster` (`DaskExecutor`, 2 processes of 1 thread)",
}


async def timed_job(job: str, executor: str, path: str, address: str) -> dict[str, Any]:
    """Start the executor's workers, then run the job alone on them, timed."""
    import aiomr
    from aiomr.executors import DaskExecutor

    run = workload.split_job if job == "split" else workload.keyed_job
    started = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        if executor == "process":  # entering the Engine waits for both workers
            engine = await stack.enter_async_context(aiomr.Engine(max_workers=WORKERS))
            start_up = time.perf_counter() - started
        else:
            dask = await stack.enter_async_context(DaskExecutor(address))
            await dask.start()
            start_up = time.perf_counter() - started
            if dask.max_workers != WORKERS:
                raise SystemExit(f"the cluster runs {dask.max_workers} tasks at once")
            engine = await stack.enter_async_context(aiomr.Engine(dask))
        async with _machine.ticking() as lags:
            busy, started = _machine.busy_cpu_seconds(), time.perf_counter()
            totals = await run(path, engine)
            wall, busy = time.perf_counter() - started, _machine.busy_cpu_seconds() - busy
    return {"totals": totals, "wall": wall, "busy": busy, "lags": lags, "start_up": start_up}


def contender(args: list[str]) -> dict[str, Any]:
    """Run one job once on one executor in this (fresh) process: ``JOB EXECUTOR PATH ADDRESS``."""
    import aiomr

    return aiomr.run(timed_job(*args))


@dataclass
class Run(_isolated.Run):
    busy: float = 0.0
    """CPU seconds the whole machine spent busy during the job."""
    start_up: float = 0.0
    cluster_start: float = 0.0


@dataclass(kw_only=True)
class Result(h.Measurements):
    expected: workload.Expected
    jobs: list[str]

    def overhead(self, job: str) -> float:
        """Median over rounds of the Dask run's wall time over the process pool's."""
        return h.median(h.by_round(self.of(f"{job}:dask"), self.of(f"{job}:process")))


def measure(args: argparse.Namespace) -> Result:
    jobs = [job for job in JOBS if job in args.jobs.split(",")]
    expected = workload.ensure_input(
        workload.parse_size(args.size or ("20MB" if args.quick else "1GB"))
    )
    m = Result(rounds=args.runs, expected=expected, jobs=jobs)
    h.progress("computing the reference totals with the practical-limit program")
    reference = workload.run_limit(expected.path)
    if problems := expected.problems(reference):
        raise SystemExit(f"the reference: {'; '.join(problems)}")
    _machine.warm_page_cache([expected.path])
    variants = [f"{job}:{executor}" for job in jobs for executor in EXECUTORS]
    for round_, key in h.interleaved(variants, args.runs):
        job, executor = key.split(":")
        cluster, cluster_start = None, 0.0
        if executor == "dask":
            import distributed

            started = time.perf_counter()
            cluster = distributed.LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=":0"
            )
            cluster_start = time.perf_counter() - started
        try:
            address = cluster.scheduler_address if cluster is not None else "-"
            child = _isolated.run_child(
                __file__, [job, executor, expected.path, address], timeout=RUN_TIMEOUT
            )
        finally:
            if cluster is not None:
                cluster.close()
        report = child.require(key)
        problems = expected.problems(report["totals"])
        problems += h.differences(report["totals"], reference, "the reference")
        if problems:
            raise SystemExit(f"{key}: wrong answer: {'; '.join(problems)}")
        run = Run(key, round_, report["wall"], busy=report["busy"], start_up=report["start_up"])
        run.cluster_start, run.caller_peak = cluster_start, report["vm_hwm"]
        run.lags(report["lags"])
        lag = f"lag p99 {run.lag_p99 * 1e3:.1f} ms"
        m.add(run, f"{run.wall:.2f} s (start-up {run.start_up:.2f} s, {lag})")
    return m


def render(m: Result) -> str:
    e = m.expected
    rows = []
    for job in m.jobs:
        for executor, label in EXECUTORS.items():
            ran = m.of(f"{job}:{executor}")
            ratio = "1.00 (baseline)" if executor == "process" else f"{m.overhead(job):.2f}"
            rows.append(
                [
                    JOBS[job],
                    label,
                    str(len(ran)),
                    f"{h.median(r.wall for r in ran):.2f} s",
                    h.span([r.wall for r in ran], ".2f", " s"),
                    ratio,
                    f"{h.median(r.busy for r in ran):.1f}",
                    f"{h.median(r.lag_p99 for r in ran) * 1e3:.1f} ms",
                    h.mb(h.median(r.caller_peak for r in ran)),
                ]
            )
    headers = ["job", "executor", "runs", "wall (median)", "range", "overhead ratio"]
    headers += ["machine CPU s", "loop lag p99", "caller peak RSS"]
    process = [r for r in m.runs if r.key.endswith(":process")]
    dask = [r for r in m.runs if r.key.endswith(":dask")]
    starts = [
        [
            "process pool: start 2 workers and wait for both (`Engine` entered)",
            f"{h.median(r.start_up for r in process):.2f} s",
        ],
        [
            "Dask: start the `LocalCluster` (in the parent)",
            f"{h.median(r.cluster_start for r in dask):.2f} s",
        ],
        [
            "Dask: connect the executor's client (`await executor.start()`)",
            f"{h.median(r.start_up for r in dask):.2f} s",
        ],
    ]
    ratios = ", ".join(f"{m.overhead(job):.2f}x for the {job} job" for job in m.jobs)
    runs = max(len(m.of(key)) for key in {r.key for r in m.runs})
    parts = [m.machine, ""]
    parts.append(
        f"Input: {e.size_bytes / 1e6:,.0f} MB, {e.lines:,} lines, {e.words:,} distinct words; "
        f"each variant ran {h.times(runs)}."
    )
    parts += ["", h.markdown_table(headers, rows, left=(0, 1)), ""]
    parts += [h.markdown_table(["start-up, outside the timed span", "median"], starts), ""]
    return "\n".join([*parts, f"The overhead ratio: {ratios}."])


if __name__ == "__main__":
    parser = h.parser(__doc__, runs=3)
    parser.add_argument("--size", help="input size (default 1GB; 20MB with --quick)")
    parser.add_argument("--jobs", default=",".join(JOBS), help="jobs to run (default: both)")
    sys.exit(h.main("dask_cluster", parser, measure, render, contender=contender))
