"""Stuck workers: a word count with worker processes SIGSTOPped idle, busy, both, and at random.

The six `SCENARIOS`; the contender's own event loop sends the stops. Every run is checked
(counts, `JobStats`, the stops and their handling, nothing left behind); docs/benchmarks.md
says what is measured and how.

    flock /tmp/aiomr-bench.lock python3 benchmarks/stuck_workers.py --write-docs
    python3 benchmarks/stuck_workers.py --quick     # every 4th file, one round

``--scenarios busy,random`` runs some scenarios only; ``--dump-stalls 0.05`` prints every
thread's stack whenever a contender's loop stalls longer than 50 ms (not for timed runs).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import operator
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import _faults
import _harness as h
import _isolated
import _machine
from _faults import Stop, Watch
from wordcount_jobs import stdlib_files, tokens

if TYPE_CHECKING:
    import aiomr

WORKERS, RUN_TIMEOUT, STOP_AT = 2, 300.0, 0.3
"""STOP_AT: the share of the files folded when a mid-job stop is due: well inside the map phase."""
TARGET_P99_MS, TARGET_MAX_MS = 5.0, 20.0


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    stop: str
    """``none``, ``idle``, ``busy-one``, ``busy-both`` or ``random``."""
    stall_timeout: float | None = None  # None: the executor's default
    task_timeout: float | None = None


SCENARIOS = (
    Scenario("clean", "clean: no worker stopped", "none"),
    Scenario("idle", "one worker stopped while idle, just before the job (never resumed)", "idle"),
    Scenario(
        "busy",
        "one worker stopped mid-job while busy (never resumed), `stall_timeout=5` (default)",
        "busy-one",
    ),
    Scenario("busy-stall-1", "the same, `stall_timeout=1`", "busy-one", stall_timeout=1.0),
    Scenario(
        "both-timeout-1",
        "both workers stopped mid-job while busy (never resumed), `RetryPolicy(task_timeout=1)`",
        "busy-both",
        task_timeout=1.0,
    ),
    Scenario(
        "random",
        "random stops: a worker every 0.3-0.8 s, half of them resumed 0.1-1.5 s later",
        "random",
    ),
)
BY_KEY = {s.key: s for s in SCENARIOS}


def words_of_file(path: str) -> Iterator[tuple[str, int]]:
    """Yield ``(word, 1)`` for every word of one file (in a worker)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            for word in tokens(line):
                yield word, 1


async def contend(
    scenario: Scenario,
    paths: list[str],
    seed: int,
    stats: aiomr.JobStats,
    due: asyncio.Event,
    w: Watch,
) -> dict[str, Any]:
    """Run the job once, with the scenario's stops, while the ticker runs."""
    import aiomr

    rng = random.Random(seed)
    retry = None
    if scenario.task_timeout is not None:
        retry = aiomr.RetryPolicy(task_timeout=scenario.task_timeout)
    options: dict[str, Any] = {}  # the executor's default stall_timeout, unless the scenario's
    if scenario.stall_timeout is not None:
        options["stall_timeout"] = scenario.stall_timeout
    dump = os.environ.get("AIOMR_BENCH_DUMP_STALLS")
    counts: dict[str, int] = {}
    async with _machine.ticking(dump_after=float(dump) if dump else None) as lateness:
        started, w.t0 = time.perf_counter(), time.monotonic()
        try:
            async with aiomr.executors.ProcessExecutor(WORKERS, **options) as executor:
                # Every scenario starts its workers first, so the idle stop is the only change.
                await executor.start()
                w.note(executor.worker_pids())
                if scenario.stop == "idle":
                    await w.stop_idle(executor, rng)
                async with asyncio.TaskGroup() as tg:
                    side = [tg.create_task(w.watch(executor))]
                    if scenario.stop.startswith("busy"):
                        count = 1 if scenario.stop == "busy-one" else WORKERS
                        side.append(tg.create_task(w.stop_busy(executor, due, count, rng)))
                    elif scenario.stop == "random":
                        side.append(tg.create_task(w.stop_at_random(executor, rng)))
                    try:
                        counts = await aiomr.map_reduce_by_key(
                            paths,
                            words_of_file,
                            operator.add,
                            executor=executor,
                            retry=retry,
                            stats=stats,
                        )
                    finally:
                        for task in side:
                            task.cancel()
                w.note(executor.worker_pids())
        finally:
            wall = time.perf_counter() - started
    loop = type(asyncio.get_running_loop()).__module__
    return {"counts": counts, "wall": wall, "lateness": lateness, "loop": loop}


class LogRecorder(logging.Handler):
    """Keep aiomr's warnings (the pool says why it killed a worker), with their time."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((time.monotonic(), record.getMessage()))


def contender(args: list[str]) -> dict[str, Any]:
    """Run one scenario once in this (fresh) process: ``KEY PATHS_FILE SEED``."""
    import aiomr

    # aiomr loads its names on first use: load them before the clock starts, or the imports
    # would show as loop lag.
    names = ["run", "map_reduce_by_key", "JobStats", "RetryPolicy", "executors.ProcessExecutor"]
    _machine.import_names(f"aiomr.{name}" for name in names)
    key, paths_file, seed = args
    with open(paths_file, encoding="utf-8") as f:
        paths = f.read().splitlines()
    recorder = LogRecorder()
    logging.getLogger("aiomr").addHandler(recorder)
    w, due = Watch(), asyncio.Event()

    def set_due(name: str, value: Any) -> None:  # once STOP_AT of the files are folded
        if name == "records_reduced" and value >= math.ceil(STOP_AT * len(paths)):
            due.set()

    stats = _faults.watched_stats(set_due)
    report: dict[str, Any] = {"job_error": None}
    try:
        report.update(aiomr.run(contend(BY_KEY[key], paths, int(seed), stats, due, w)))
    except BaseException as exc:
        report["job_error"] = _machine.describe_error(exc)
    names = ["records", "records_reduced", "records_skipped", "chunks", "chunks_retried"]
    names += ["partitions_retried", "workers_replaced"]
    report |= {name: getattr(stats, name) for name in names}
    report |= {"task_pids": sorted(stats.worker_pids), "stops": w.stops, "skipped": w.skipped}
    report["job_started"] = stats.started_at - w.t0 if stats.started_at else math.nan
    report["replaced_at"], report["workers_left"] = w.replaced_at, _machine.workers_left()
    report["messages"] = [(round(at - w.t0, 4), message) for at, message in recorder.records]
    return report


# In the parent ---------------------------------------------------------------------------------


@dataclass
class Run(_isolated.Run):
    job_started: float = math.nan
    """Seconds from the executor's creation to ``JobStats.started_at``."""
    records: int = 0
    records_reduced: int = 0
    records_skipped: int = 0
    chunks: int = 0
    chunks_retried: int = 0
    partitions_retried: int = 0
    workers_replaced: int = 0
    task_pids: list[int] = field(default_factory=list)
    """The workers that ran the job's tasks (``JobStats.worker_pids``)."""
    stops: list[Stop] = field(default_factory=list)
    skipped: int = 0
    replaced_at: list[float] = field(default_factory=list)
    loop: str = ""
    log: list[str] = field(default_factory=list)
    """What the contender wrote to stderr."""
    messages: list[tuple[float, str]] = field(default_factory=list)
    """aiomr's warnings, with their time in seconds after the executor was created."""

    def detection(self) -> float:
        """Seconds from the stops until the pool had replaced every stopped worker."""
        if not self.stops or len(self.replaced_at) < len(self.stops):
            return math.nan
        return self.replaced_at[len(self.stops) - 1] - self.stops[-1].at


def stop_problems(run: Run, scenario: Scenario) -> list[str]:
    """Check that the scenario's stops happened, and were handled, as it says."""
    wanted = {"idle": 1, "busy-one": 1, "busy-both": WORKERS}.get(scenario.stop, 0)
    problems = []
    if wanted and len(run.stops) != wanted:
        problems.append(f"{len(run.stops)} workers stopped, {wanted} meant to be")
    if scenario.stop.startswith("busy"):
        if idle := [f"{s.pid} ({s.state})" for s in run.stops if s.state != "R"]:
            problems.append(f"stopped workers not busy: {', '.join(idle)}")
        # A stopped worker's running task is lost and retried; one it had not started is
        # not. Fewer retries than stops: a victim was between two tasks, not inside one.
        if (retried := run.chunks_retried + run.partitions_retried) < len(run.stops):
            problems.append(
                f"{len(run.stops)} workers stopped mid-job, but only {retried} tasks retried: "
                "a victim had not started its task"
            )
        if run.workers_replaced < len(run.stops):
            problems.append(
                f"{len(run.stops)} workers stopped for good, but only {run.workers_replaced} "
                "replaced while the job ran"
            )
    # A stopped idle worker's tasks go to the other once its heartbeat is missed: the job may
    # end before stall_timeout finds it out, but the stopped worker must have run nothing.
    if scenario.stop == "idle" and (ran := [s.pid for s in run.stops if s.pid in run.task_pids]):
        problems.append(f"the stopped worker {ran[0]} ran a task of the job")
    return problems


def run_once(
    scenario: Scenario, round_: int, paths_file: str, files: int, reference: dict[str, int]
) -> Run:
    """Run ``scenario`` once in a fresh Python process and check it."""
    run = Run(scenario.key, round_)
    seed = str(1000 * round_ + SCENARIOS.index(scenario))
    child = _isolated.run_child(
        __file__, [scenario.key, paths_file, seed], timeout=RUN_TIMEOUT, audit=True
    )
    run.log, run.others, run.error, run.problems = child.log, child.others, child.error, child.left
    if (report := child.report) is None:
        return run
    for name in ("job_started", "stops", "skipped", "replaced_at", "messages"):
        setattr(run, name, report[name])
    if report["workers_left"]:
        run.problems.append(f"processes {report['workers_left']} alive after the executor closed")
    if report["job_error"] is not None or child.error:
        run.error = run.error or report["job_error"]
        return run
    names = ["wall", "loop", "records", "records_reduced", "records_skipped", "chunks"]
    for name in [*names, "chunks_retried", "partitions_retried", "workers_replaced", "task_pids"]:
        setattr(run, name, report[name])
    run.lags(report["lateness"])
    run.problems += h.differences(report["counts"], reference, "the reference")
    run.problems += _faults.accounting(report, files, "files")
    run.problems += stop_problems(run, scenario)
    return run


def describe(run: Run) -> str:
    since = run.job_started
    stops = ", ".join(
        f"{s.pid} at {s.at - since:.2f} s ({s.state}"
        + (f", resumed {s.resumed_after:.2f} s later)" if s.resumed_after is not None else ")")
        for s in run.stops
    )
    text = (
        f"{run.wall:.2f} s, lag p99 {h.fmt_ms(run.lag_p99, 1)} max {h.fmt_ms(run.lag_max, 1)} ms, "
        f"replaced {run.workers_replaced}, retried {run.chunks_retried}+{run.partitions_retried}, "
        f"others' load {run.others:.2f}; stops: {stops or 'none'}"
        + (f" ({run.skipped} skipped)" if run.skipped else "")
    )
    if run.replaced_at:
        text += f"; replaced at {', '.join(f'{t - since:.2f}' for t in run.replaced_at)} s"
    text += h.failed(run)
    text += "".join(f"\n  {at - since:6.2f} s  {message}" for at, message in run.messages)
    return text + "".join(f"\n  | {line}" for line in run.log)


@dataclass(kw_only=True)
class Result(h.Measurements):
    files: int
    step: int
    words: int
    distinct: int


def measure(args: argparse.Namespace) -> Result:
    """Run every scenario ``--runs`` times, interleaved in rotating order; check every run."""
    keys = h.choose(args.scenarios, BY_KEY, "scenarios")
    if args.dump_stalls is not None and args.write_docs:
        raise SystemExit("--dump-stalls perturbs the figures; drop --write-docs")
    if args.dump_stalls is not None:
        os.environ["AIOMR_BENCH_DUMP_STALLS"] = str(args.dump_stalls)
    _machine.byte_compile()
    step = args.step or (4 if args.quick else 1)
    paths = stdlib_files()[::step]
    h.progress(f"counting the words of {len(paths):,} files with a plain loop")
    reference = dict(Counter(word for path in paths for word, _ in words_of_file(path)))
    words, distinct = sum(reference.values()), len(reference)
    m = Result(rounds=args.runs, files=len(paths), step=step, words=words, distinct=distinct)
    paths_file = h.DATA_DIR / "stuck-workers-paths.txt"
    paths_file.parent.mkdir(parents=True, exist_ok=True)
    paths_file.write_text("\n".join(paths) + "\n", encoding="utf-8")
    for round_, scenario in h.interleaved([s for s in SCENARIOS if s.key in keys], args.runs):
        run = run_once(scenario, round_, str(paths_file), len(paths), reference)
        m.add(run, describe(run))
    return m


def meets_target(runs: Sequence[Run]) -> bool:
    return (
        bool(runs)
        and h.median(r.lag_p99 for r in runs) * 1e3 <= TARGET_P99_MS
        and h.median(r.lag_max for r in runs) * 1e3 <= TARGET_MAX_MS
    )


def scenario_table(m: Result) -> str:
    clean = m.of("clean")
    rows = []
    for s in SCENARIOS:
        runs = m.of(s.key)
        walls, stops = [r.wall for r in runs], [len(r.stops) for r in runs]
        if s.stop == "random":
            resumed = [sum(x.resumed_after is not None for x in r.stops) for r in runs]
            stops_text = f"{h.per_run(stops)}, resumed {h.per_run(resumed)}"
        else:
            stops_text = str(stops[0]) if stops and len(set(stops)) == 1 else h.per_run(stops)
        ratio = h.na(h.median(h.by_round(runs, clean)), ".2f", "x")
        detection = h.na(h.median(r.detection() for r in runs), ".2f", " s")
        rows.append(
            [
                s.label,
                m.runs_ok(s.key),
                h.na(h.median(walls), ".2f", " s"),
                h.span(walls, ".2f", " s"),
                "1 (baseline)" if s.key == "clean" else ratio,
                f"{h.fmt_ms(h.median(r.lag_p99 for r in runs), 1)} / "
                f"{h.fmt_ms(h.median(r.lag_max for r in runs), 1)} ms",
                h.na(max((r.lag_max for r in runs), default=math.nan) * 1e3, ".1f", " ms"),
                h.verdict(meets_target(runs)) if runs else "n/a",
                stops_text,
                h.per_run([r.workers_replaced for r in runs]),
                h.per_run([r.chunks_retried + r.partitions_retried for r in runs]),
                detection if s.stop.startswith("busy") else "",
            ]
        )
    headers = ["scenario", "runs ok", "wall (median)", "range", "ratio to clean"]
    target = f"target: p99 ≤ {TARGET_P99_MS:g}, max ≤ {TARGET_MAX_MS:g} ms"
    headers += ["loop lag p99 / max (median)", "worst max", target]
    headers += ["stops per run", "workers replaced", "chunks retried", "stop to replaced"]
    return h.markdown_table(headers, rows)


def render(m: Result) -> str:
    """Return the docs section: the table, and the runs that failed a check."""
    loops = sorted({r.loop for r in m.runs if r.loop})
    clean = h.median(r.wall for r in m.of("clean"))
    which = "every `.py` file" if m.step == 1 else f"every {m.step}th `.py` file (sorted)"
    parts = [
        f"{m.machine} aiomr {m.aiomr}; event loop: {', '.join(loops) or 'n/a'}.",
        "",
        f"Input: {which} of the standard library ({m.files:,} files, {m.words:,} words, "
        f"{m.distinct:,} distinct); a clean run takes {h.na(clean, '.1f', ' s')}; every "
        f"scenario ran {h.times(m.rounds)}." + _isolated.load_note(m, "the ratios"),
        "",
        scenario_table(m),
    ]
    if not m.all_ok():
        labels = {s.key: s.label for s in SCENARIOS}
        parts += ["", "### Runs that failed a check", ""]
        parts.append(_isolated.failure_table(m, labels, "scenario"))
    return "\n".join(parts)


if __name__ == "__main__":
    parser = h.parser(__doc__, runs=5)
    parser.add_argument("--step", type=h.positive, help="count every STEP-th file (default 1)")
    parser.add_argument("--scenarios", help=f"some of {', '.join(BY_KEY)} (default: all)")
    parser.add_argument("--dump-stalls", type=float, metavar="SECONDS", help="see above")
    main = h.main("stuck_workers", parser, measure, render, contender=contender, ok=Result.all_ok)
    sys.exit(main)
