"""Lost workers: the 1 GB n-gram job with a worker SIGKILLed every few seconds, against clean runs.

The split and key-value jobs of ``benchmarks/ngram.py`` run clean and *under fire*: this (the
parent) process SIGKILLs one of the job's workers (a live child of its forkserver, drawn by a
generator seeded by the round) every ``--every`` seconds from ``JobStats.started_at`` until
``JobStats.finished_at``, which the contender reports through a pipe. Every run is checked:
its totals word for word against the practical-limit program's and the generator's figures,
its ``JobStats`` accounting (nothing lost, nothing counted twice, a replacement per kill), and
that no worker process and no ``aiomr-*`` directory outlived it. A run that fails a check is
reported with the reason, left out of the figures, and makes the exit status 1.

    flock /tmp/aiomr-bench.lock python3 benchmarks/faults.py --write-docs
    python3 benchmarks/faults.py --quick        # a smoke run on 100 MB, a kill every 0.5 s
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import _harness as h
import _isolated
import _machine
import _ngram_workload as workload

RUN_TIMEOUT = 600.0
VICTIM_POLL = 0.01
"""How often the parent looks again for a live worker when a kill is due and none is alive."""
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

    class SignallingStats(aiomr.JobStats):
        def __setattr__(self, name: str, value: Any) -> None:
            super().__setattr__(name, value)
            if name in ("started_at", "finished_at") and value is not None:
                os.write(int(fd), f"{name} {value!r}\n".encode("ascii"))

    stats = SignallingStats()
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
class Kill:
    """One SIGKILL sent to a worker."""

    at: float
    """Seconds after the job started reading."""
    pid: int
    state: str
    """The victim's process state just before: running, sleeping, disk-sleep."""
    landed: bool = False
    """Sent while the job ran (between ``started_at`` and ``finished_at``)."""


def live_workers(root: Any) -> list[Any]:
    """The live workers of ``root``: children of its forkserver, not zombies."""
    import psutil

    workers = []
    for child in root.children():
        with contextlib.suppress(psutil.Error):
            if any("multiprocessing.forkserver" in part for part in child.cmdline()):
                for worker in child.children():
                    with contextlib.suppress(psutil.Error):
                        if worker.status() != psutil.STATUS_ZOMBIE:
                            workers.append(worker)
    return workers


class KillSchedule:
    """With ``every``, SIGKILL a worker of the contender every ``every`` seconds of its job.

    Reads the ``started_at`` and ``finished_at`` lines the contender writes to its pipe; the
    first kill is due ``every`` seconds after ``started_at``, none after ``finished_at``.
    """

    def __init__(self, every: float | None, seed: int) -> None:
        self._fd, self.write_fd = os.pipe()
        self._every, self._random = every, random.Random(seed)
        self._buffer, self._eof = b"", False
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.kills: list[Kill] = []
        self.failure: str | None = None

    @contextlib.contextmanager
    def watching(self, pid: int) -> Iterator[None]:
        """Run the schedule in a thread while the contender ``pid`` runs."""
        import psutil

        os.close(self.write_fd)  # the contender holds it now: its end is our end of file
        thread = threading.Thread(target=self._run, args=(psutil.Process(pid),), daemon=True)
        thread.start()
        try:
            yield
        finally:
            thread.join()
            os.close(self._fd)
            for kill in self.kills:
                end = self.finished_at
                kill.landed = (
                    end is None or self.started_at is None or kill.at + self.started_at <= end
                )

    def _run(self, root: Any) -> None:
        try:
            k = 1
            while not self._eof:
                firing = self.started_at is not None and self.finished_at is None
                if self._every is None or not firing or self.started_at is None:
                    self._read(None)
                    continue
                due = self.started_at + k * self._every
                if (wait := due - time.monotonic()) > 0:
                    self._read(wait)
                elif self._kill_one(root):
                    k = int((time.monotonic() - self.started_at) // self._every) + 1
                else:
                    self._read(VICTIM_POLL)
        except Exception as exc:  # reported with the run; never a silent thread death
            self.failure = f"the kill schedule failed: {type(exc).__name__}: {exc}"

    def _read(self, timeout: float | None) -> None:
        if not select.select([self._fd], [], [], timeout)[0]:
            return
        data = os.read(self._fd, 4096)
        self._eof = not data
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            name, _, value = line.decode("ascii").partition(" ")
            if name in ("started_at", "finished_at") and getattr(self, name) is None:
                setattr(self, name, float(value))

    def _kill_one(self, root: Any) -> bool:
        import psutil

        try:
            workers = sorted(live_workers(root), key=lambda p: p.pid)  # the draw needs an order
        except psutil.Error:
            return False
        self._random.shuffle(workers)
        for victim in workers:
            try:
                state = victim.status()
                victim.send_signal(signal.SIGKILL)
            except psutil.Error:
                continue
            at = time.monotonic() - (self.started_at or 0.0)
            self.kills.append(Kill(round(at, 4), victim.pid, state))
            return True
        return False


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
    stats = run.stats
    if stats["records"] != stats["records_reduced"] + stats["records_skipped"]:
        run.problems.append(
            f"records {stats['records']:,} != records_reduced {stats['records_reduced']:,} + "
            f"records_skipped {stats['records_skipped']:,}"
        )
    if stats["records"] != expected.lines:
        run.problems.append(
            f"records {stats['records']:,}, but the file has {expected.lines:,} lines"
        )
    if stats["workers_replaced"] < run.landed:
        run.problems.append(
            f"{run.landed} kills landed while the job ran, but only {stats['workers_replaced']} "
            "workers were replaced"
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
    return text + "".join(f"\n  FAILED: {p}" for p in [run.error, *run.problems] if p)


def measure(args: argparse.Namespace) -> Result:
    """Run every variant ``--runs`` times, interleaved in rotating order; check every run."""
    requested = [j.strip() for j in args.jobs.split(",")]
    if unknown := [j for j in requested if j not in JOBS]:
        raise SystemExit(f"unknown jobs: {', '.join(unknown)}; try {', '.join(JOBS)}")
    jobs = [j for j in JOBS if j in requested]
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
                f"{len(runs)} of {len(m.of(v.key, ok=False))}",
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
    """Return the docs section: what was measured, the tables and what a kill costs."""
    e = m.expected
    main = [v for v in m.variants if not v.extra]
    extra = [v for v in m.variants if v.extra]
    all_ok = all(r.ok for r in m.runs)
    short = {"aiomr-split": "split", "aiomr-keyed": "key-value"}
    costs = " and ".join(
        f"{h.na(m.cost_per_kill(Variant(job, m.every)), '.2f', ' s')} for the {short[job]} job"
        for job in m.jobs
    )
    tasks, landed = notes(m)
    extra_note = (
        f" Runs killing a worker every {', '.join(f'{x:g}' for x in m.extra_every)} s are an "
        f"extra, to show what repeated kills cost; the target is for the {m.every:g}-second "
        "schedule."
    )
    parts = [
        "## Lost workers",
        "",
        f"{m.machine} aiomr {m.aiomr}.",
        "",
        "The workload of the n-gram benchmark above (`examples/ngram.py`): total the "
        f"`match_count` of every word of the generated 1-gram file (seed {workload.SEED}: "
        f"{e.size_bytes / 1e6:,.0f} MB, {e.lines:,} lines, {e.words:,} distinct words), "
        f"already in the page cache, on {workload.WORKERS} worker processes, with two aiomr "
        "jobs exactly as that benchmark runs them: the byte-range split job (the default way "
        "of `examples/ngram.py`) and the idiomatic key-value job (`map_reduce_by_key` over "
        "`aiomr.sources.files`). Each runs clean and *under fire*: the benchmark's process "
        f"sends SIGKILL to one of the job's worker processes every {m.every:g} seconds, the "
        f"first {m.every:g} s after the job starts reading (the moment aiomr stamps "
        "`JobStats.started_at`: workers up, code shipped, first split about to be planned), "
        "none once the job has ended (`JobStats.finished_at`). The victim is one of the live "
        "workers (children of the job's `forkserver`, never the forkserver itself), drawn at "
        "random with a generator seeded by the round." + extra_note * bool(extra),
        "",
        f"Each variant ran {m.rounds} time{'s' if m.rounds > 1 else ''}, each run in a fresh "
        "Python process, interleaved round by round in rotating order; figures are medians. "
        "Wall time runs from just before the job is called (workers not started) until the "
        "caller holds the full `{word: total}` dict of text. *Slowdown* is the median over "
        "rounds of the under-fire run's wall time over the clean run's of the same round; "
        "*cost of one kill* the median over rounds of that difference divided by the kills "
        "that landed. *Kills per run*, *chunks retried* and *workers replaced* give the median "
        "and every run's figure (the last two from `JobStats`). *Others' load* is how many "
        "cores processes outside the benchmark kept busy, on average, during the run.",
        "",
        f"{'Every run' if all_ok else 'Every run but those listed at the end'}, clean or "
        "under fire, found exactly the clean answer: every word's total equalled that of the "
        "n-gram benchmark's practical-limit program (no aiomr code), and so did the line "
        f"`{workload.aardvark(e.totals)}`. Its `JobStats` had `records == records_reduced + "
        f"records_skipped == {e.lines:,}` (the file's lines: none lost, none counted twice) "
        "and at least as many `workers_replaced` as kills that landed; no worker process and "
        "no `aiomr-*` directory (in `/dev/shm` or `/tmp`) outlived it. Runs that failed a "
        "check are left out of the figures." + _isolated.load_note(m, "slowdowns"),
        "",
        variant_table(m, main),
        "",
    ]
    if extra:
        parts += ["Extra: more frequent kills.", "", variant_table(m, extra), ""]
    parts += [
        "### Against the target",
        "",
        f"Target: with a worker killed every {m.every:g} s the job finishes with the exact "
        f"answer in less than {TARGET_SLOWDOWN}x the time of a clean run.",
        "",
        slowdown_table(m),
        "",
        "### What a kill costs, and why",
        "",
        "Each of aiomr's workers has pipes of its own. When one dies, only the task it was "
        "running fails; a task queued in its pipe that it had not started goes to the other "
        "worker, which goes on undisturbed, and a new worker forked from the forkserver takes "
        "the dead one's place (`workers_replaced`: one per kill). The lost task runs again "
        "(`chunks_retried`: at most one per kill; none when the victim was between two "
        "tasks). Partials already folded are kept, and the lost task had delivered nothing, "
        "so nothing is counted twice. A kill therefore costs the work done so far on the one "
        "task that was running, on average half a task, plus starting the new worker. With "
        f"a kill every {m.every:g} s, one kill cost {costs}. " + tasks,
        "",
        landed,
        "",
    ]
    if not all_ok:
        parts += ["### Runs that failed a check", "", failure_table(m), ""]
        if poisoned := [r for r in m.runs if r.error and "max_attempts" in r.error]:
            parts += [
                f"{len(poisoned)} of these failures are aiomr giving up on a chunk after "
                "counting 3 failed runs of it (`max_attempts=3`, the default) and reporting it "
                "as a poison chunk with `BrokenWorkerError`, though no chunk of this job ever "
                "kills its worker.",
                "",
            ]
    parts += [
        f"The whole benchmark took {m.seconds / 60:.0f} minutes. Reproduce with:",
        "",
        "```console",
        "flock /tmp/aiomr-bench.lock python3 benchmarks/faults.py --write-docs",
        "```",
    ]
    return "\n".join(parts)


def all_ok(m: Result) -> bool:
    return all(r.ok for r in m.runs)


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
    sys.exit(h.main("faults", parser, measure, render, contender=contender, ok=all_ok))
