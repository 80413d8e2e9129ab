"""Lost workers: the n-gram jobs with a worker SIGKILLed every few seconds, against clean runs.

Every run is checked (totals, `JobStats` accounting, nothing left behind); docs/benchmarks.md
says what is measured and how.

    flock /tmp/aiomr-bench.lock python3 benchmarks/faults.py --write-docs
    python3 benchmarks/faults.py --quick        # a smoke run on 100 MB, a kill every 0.5 s
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import _faults
import _harness as h
import _isolated
import _machine
import _ngram_workload as workload
from _faults import Kill, KillSchedule

RUN_TIMEOUT = 600.0
TARGET_SLOWDOWN = 1.5
JOBS = {
    "aiomr-split": 'byte-range splits, tight loop (`mode="blocks"`)',
    "aiomr-keyed": "idiomatic key-value job (`map_reduce_by_key`)",
}
STATS: tuple[str, ...] = ("records", "records_reduced", "records_skipped", "chunks", "chunks_done")
STATS += ("chunks_retried", "workers_replaced", "partitions_done", "task_seconds")
STATS += ("started_at", "finished_at")


@dataclass(frozen=True)
class Variant:
    """One job, clean (``every is None``) or with a kill every ``every`` seconds."""

    job: str
    every: float | None = None
    extra: bool = False

    @property
    def key(self) -> str:
        return f"{self.job}:clean" if self.every is None else f"{self.job}:every-{self.every:g}"

    @property
    def label(self) -> str:
        how = "clean" if self.every is None else f"a worker killed every {self.every:g} s"
        return f"{JOBS[self.job]}, {how}"


def contender(args: list[str]) -> dict[str, Any]:
    """Run one job once in this (fresh) process: ``JOB PATH FD``; ``started_at`` and
    ``finished_at`` go to ``FD`` as aiomr stamps them, to start and stop the kill schedule."""
    import aiomr

    key, path, fd = args

    def signal(name: str, value: Any) -> None:
        if name in ("started_at", "finished_at") and value is not None:
            os.write(int(fd), f"{name} {value!r}\n".encode("ascii"))

    stats = _faults.watched_stats(signal)
    job = workload.split_job if key == "aiomr-split" else workload.keyed_job
    cpu, started, error = _machine.tree_cpu(), time.perf_counter(), None
    totals: workload.Totals = {}
    lags: list[float] = []
    try:
        totals, lags = aiomr.run(workload.with_lag(job(path, stats=stats)))
    except Exception as exc:
        error = _machine.describe_error(exc)
    wall, cpu = time.perf_counter() - started, _machine.tree_cpu() - cpu
    report = {"totals": totals, "job_error": error, "wall": wall, "cpu": cpu, "lags": lags}
    report["stats"] = {name: getattr(stats, name) for name in STATS}
    return report | {"workers_left": _machine.workers_left()}


@dataclass
class Run(_isolated.Run):
    job_seconds: float = math.nan
    """From ``started_at`` to ``finished_at``."""
    kills: list[Kill] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    """The job's `aiomr.JobStats` figures (`STATS`)."""

    @property
    def landed(self) -> int:
        return sum(k.landed for k in self.kills)

    def stat(self, name: str) -> Any:
        """One figure of the job's `aiomr.JobStats` (0 when the job did not report)."""
        return self.stats.get(name, 0)


def run_once(
    variant: Variant, round_: int, reference: workload.Totals, expected: workload.Expected
) -> Run:
    """Run ``variant`` once in a fresh Python process, under fire if it says so; check it."""
    run = Run(variant.key, round_)
    schedule = KillSchedule(variant.every, seed=round_)
    args = [variant.job, expected.path, str(schedule.write_fd)]
    child = _isolated.run_child(
        __file__,
        args,
        timeout=RUN_TIMEOUT,
        audit=True,
        pass_fds=[schedule.write_fd],
        watch=schedule.watching,
    )
    run.kills, run.others, run.error = schedule.kills, child.others, child.error
    run.problems += child.left
    if schedule.failure:
        run.problems.append(schedule.failure)
    if child.report is None or child.error:
        return run
    report = child.report
    run.wall, run.cpu, run.stats = report["wall"], report["cpu"], report["stats"]
    if run.stats["started_at"] is not None and run.stats["finished_at"] is not None:
        run.job_seconds = run.stats["finished_at"] - run.stats["started_at"]
    run.lags(report["lags"])
    if report["workers_left"]:
        run.problems.append(f"workers {report['workers_left']} alive after the job returned")
    if report["job_error"] is not None:
        run.error = report["job_error"]
        return run
    totals: workload.Totals = report["totals"]
    if workload.aardvark(totals) != workload.aardvark(reference):
        said, want = workload.aardvark(totals), workload.aardvark(reference)
        run.problems.append(f"{said!r}, but the reference says {want!r}")
    run.problems += h.differences(totals, reference, "the reference") + expected.problems(totals)
    run.problems += _faults.accounting(run.stats, expected.lines, "lines in the file")
    if (replaced := run.stat("workers_replaced")) < run.landed:
        run.problems.append(
            f"{run.landed} kills landed while the job ran, but only {replaced} were replaced"
        )
    return run


@dataclass(kw_only=True)
class Result(h.Measurements):
    expected: workload.Expected
    every: float
    extra_every: list[float]
    jobs: list[str]

    @property
    def variants(self) -> list[Variant]:
        out = []
        for job in self.jobs:
            out += [Variant(job), Variant(job, self.every)]
            out += [Variant(job, e, extra=True) for e in self.extra_every if e != self.every]
        return out

    def paired(self, v: Variant) -> list[tuple[Run, Run]]:
        """The (clean, under fire) pairs of one round each, both successful."""
        clean = {r.round: r for r in self.of(Variant(v.job).key)}
        return [(clean[r.round], r) for r in self.of(v.key) if r.round in clean]

    def cost_per_kill(self, v: Variant) -> float:
        """Median over rounds of (under-fire wall - clean wall) / kills that landed."""
        return h.median([(f.wall - c.wall) / f.landed for c, f in self.paired(v) if f.landed])


def describe(run: Run) -> str:
    kills = ", ".join(
        f"{k.at:.2f} s ({k.state}{'' if k.landed else ', after the end'})" for k in run.kills
    )
    text = (
        f"{run.wall:.2f} s, CPU {run.cpu:.1f} s, others' load {run.others:.2f}, "
        f"kills: {kills or 'none'}; retried {run.stat('chunks_retried')}, "
        f"replaced {run.stat('workers_replaced')}, records {run.stat('records'):,}"
    )
    if run.ticks:
        text += f", loop lag p99 {run.lag_p99 * 1e3:.1f} ms max {run.lag_max * 1e3:.1f} ms"
    return text + h.failed(run)


def measure(args: argparse.Namespace) -> Result:
    """Run every variant ``--runs`` times, interleaved in rotating order; check every run."""
    jobs = h.choose(args.jobs, JOBS, "jobs")
    extra = args.extra_every if args.extra_every is not None else ([] if args.quick else [2.0])
    every = args.every or (0.5 if args.quick else 5.0)
    expected = workload.ensure_input(
        workload.parse_size(args.size or ("100MB" if args.quick else "1GB"))
    )
    m = Result(rounds=args.runs, expected=expected, every=every, extra_every=extra, jobs=jobs)
    h.progress(f"warming the page cache with {expected.path}")
    _machine.warm_page_cache([expected.path])
    h.progress("computing the reference totals with the practical-limit program")
    reference = workload.run_limit(expected.path)
    if problems := expected.problems(reference):
        raise SystemExit(f"the reference: {'; '.join(problems)}")
    for round_, variant in h.interleaved(m.variants, args.runs):
        run = run_once(variant, round_, reference, expected)
        m.add(run, describe(run))
        h.save(m, h.DATA_DIR / "last-faults.pickle")  # a crash keeps the runs so far
    return m


def variant_table(m: Result, variants: list[Variant]) -> str:
    rows = []
    for v in variants:
        runs, walls = m.of(v.key), [r.wall for r in m.of(v.key)]
        lag = f"{h.na(h.median(r.lag_p99 for r in runs) * 1e3, '.1f')} / "
        lag += f"{h.na(max((r.lag_max for r in runs), default=math.nan) * 1e3, '.1f')} ms"
        rows.append(
            [
                v.label,
                m.runs_ok(v.key),
                h.na(h.median(walls), ".2f", " s"),
                h.span(walls, ".2f", " s"),
                h.na(h.median(r.cpu for r in runs), ".1f"),
                h.per_run([r.landed for r in runs]) if v.every is not None else "0",
                h.per_run([r.stat("chunks_retried") for r in runs]),
                h.per_run([r.stat("workers_replaced") for r in runs]),
                lag,
                h.na(h.median(r.others for r in runs), ".2f"),
            ]
        )
    headers = ["job", "runs ok", "wall (median)", "range", "CPU s", "kills per run"]
    headers += ["chunks retried", "workers replaced", "loop lag p99 / max", "others' load"]
    return h.markdown_table(headers, rows)


def slowdown_table(m: Result) -> str:
    rows = []
    for v in m.variants:
        if v.every is None:
            continue
        ratios = [f.wall / c.wall for c, f in m.paired(v)]
        groups = [m.of(Variant(v.job).key, ok=False), m.of(v.key, ok=False)]
        failed = sum(not r.ok for group in groups for r in group)
        target = (
            "n/a (extra)"
            if v.extra
            else h.verdict(not failed and h.median(ratios) < TARGET_SLOWDOWN)
        )
        if failed and not v.extra:
            target += f" ({failed} run{'s' if failed > 1 else ''} failed)"
        rows.append(
            [
                JOBS[v.job] + " (extra)" * v.extra,
                f"{v.every:g} s",
                ", ".join(f"{sum(r.ok for r in group)} of {len(group)}" for group in groups),
                h.na(h.median(ratios), ".2f", "x"),
                h.span(ratios, ".2f", "x"),
                h.na(m.cost_per_kill(v), ".2f", " s"),
                target,
            ]
        )
    headers = ["job", "kill every", "runs ok (clean, under fire)", "slowdown (median)", "range"]
    return h.markdown_table(
        [*headers, "cost of one kill", f"target: exact, < {TARGET_SLOWDOWN}x"], rows
    )


def failure_table(m: Result) -> str:
    """One row per run that failed: when its kills came and what went wrong."""
    labels = {v.key: v.label for v in m.variants}
    rows = []
    for run in (r for r in m.runs if not r.ok):
        # The data file's full path, twice in every message about a split, says nothing more.
        name = os.path.basename(m.expected.path)
        reasons = "; ".join(
            p.replace(m.expected.path, name) for p in [run.error, *run.problems] if p
        )
        kills = ", ".join(f"{k.at:.2f}" for k in run.kills) or "none"
        rows.append(
            [str(run.round + 1), labels.get(run.key, run.key), kills, reasons.replace("|", "\\|")]
        )
    return h.markdown_table(["round", "run", "kills at (s)", "what failed"], rows, left=(1, 3))


def notes(m: Result) -> tuple[str, str]:
    """Say how long the clean runs' tasks took, and when the kills that landed came."""
    tasks = []
    for job in m.jobs:
        runs = m.of(Variant(job).key)
        if runs:
            splits = h.median(r.stat("chunks") for r in runs)
            done = [
                (r.stat("task_seconds"), r.stat("chunks_done") + r.stat("partitions_done"))
                for r in runs
            ]
            mean = h.median(seconds / tasks for seconds, tasks in done if tasks)
            split_mb = m.expected.size_bytes / splits / 1e6
            what = f"its {splits:.0f} map tasks (one per split of about {split_mb:.0f} MB)"
            what += " and its reduce tasks (one per partition)" * (job == "aiomr-keyed")
            name = "split" if job == "aiomr-split" else "key-value"
            tasks.append(f"the {name} job ran {what} in {mean:.2f} s each on average")
    late = [
        k.at - round(k.at / v.every) * v.every
        for v in m.variants
        if v.every is not None
        for r in m.of(v.key, ok=False)
        for k in r.kills
        if k.landed
    ]
    landed = "No kill landed."
    if late:
        landed = (
            f"{len(late)} kills landed in all, each between {min(late) * 1e3:.0f} and "
            f"{max(late) * 1e3:.0f} ms after its due time."
        )
    return (f"In the clean runs, {'; '.join(tasks)}." if tasks else ""), landed


def render(m: Result) -> str:
    """Return the docs section: the tables, and what a kill cost."""
    e, every = m.expected, m.every
    main = [v for v in m.variants if not v.extra]
    extra = [v for v in m.variants if v.extra]
    short = {"aiomr-split": "split", "aiomr-keyed": "key-value"}
    costs = " and ".join(
        f"{h.na(m.cost_per_kill(Variant(job, every)), '.2f', ' s')} for the {short[job]} job"
        for job in m.jobs
    )
    tasks, landed = notes(m)
    parts = [
        f"{m.machine} aiomr {m.aiomr}.",
        "",
        f"Input: {e.size_bytes / 1e6:,.0f} MB, {e.lines:,} lines, {e.words:,} distinct words; "
        f"every variant ran {h.times(m.rounds)}; a kill every {every:g} s, the first "
        f"{every:g} s after `started_at`." + _isolated.load_note(m, "slowdowns"),
        "",
        variant_table(m, main),
        "",
    ]
    if extra:
        parts += ["Extra: more frequent kills.", "", variant_table(m, extra), ""]
    parts += ["### Against the target", "", slowdown_table(m), ""]
    parts += [f"With a kill every {every:g} s, one kill cost {costs}. {tasks}", "", landed]
    if not m.all_ok():
        parts += ["", "### Runs that failed a check", "", failure_table(m)]
        if poisoned := [r for r in m.runs if r.error and "max_attempts" in r.error]:
            parts += [
                "",
                f"{len(poisoned)} of these failures are aiomr giving up on a chunk after 3 "
                "failed runs (`max_attempts=3`) though no chunk of this job kills its worker.",
            ]
    return "\n".join(parts)


def seconds_list(text: str) -> list[float]:
    """``2,1.5`` or ``none``: extra kill intervals."""
    if text.strip().lower() in ("", "none"):
        return []
    values = [float(part) for part in text.split(",")]
    if not all(v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"not a list of positive seconds: {text!r}")
    return values


if __name__ == "__main__":
    parser = h.parser(__doc__, runs=5)
    parser.add_argument("--size", help="input size (default 1GB; 100MB with --quick)")
    parser.add_argument("--every", type=float, help="seconds between kills (default 5)")
    parser.add_argument("--extra-every", type=seconds_list, help="extra intervals (default 2)")
    parser.add_argument("--jobs", default=",".join(JOBS), help="jobs to run (default: both)")
    sys.exit(h.main("faults", parser, measure, render, contender=contender, ok=Result.all_ok))
