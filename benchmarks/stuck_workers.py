"""Stuck workers: a word count with worker processes SIGSTOPped idle, busy, both, and at random.

The key-value word count of ``examples/wordcount.py`` over every ``--step``-th ``.py`` file of
the standard library, on a `ProcessExecutor` of 2 workers under `aiomr.run`, in the six
`SCENARIOS`. The contender's own event loop sends the stops: a mid-job victim once `STOP_AT` of
the files are folded and ``/proc`` shows it inside a task (state ``R`` and `BUSY_RUN_NS` on a
CPU since the look 1 ms before; a worker just woken by a task in its pipe is runnable too,
but has not started it). Every run is checked: its counts against a plain loop's, its
``JobStats``, that its stops happened as meant and were handled (mid-job victims replaced; an
idle victim ran no task), and that no process or ``aiomr-*`` directory outlived it.

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
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import _harness as h
import _isolated
import _machine
from wordcount_jobs import stdlib_files, tokens

if TYPE_CHECKING:
    import aiomr
    from aiomr.executors import ProcessExecutor

WORKERS, RUN_TIMEOUT = 2, 300.0
STOP_AT = 0.3
"""Share of the files folded when a mid-job stop is due: well inside the map phase."""
BUSY_RUN_NS = 500_000
"""CPU time a victim's main thread must have had in the last 1 ms to count as inside a task."""
BUSY_WAIT = 2.0
"""Seconds a mid-job stop waits for its victim to be inside a task (else the run fails)."""
RANDOM_EVERY, RANDOM_RESUME, RANDOM_RESUMED_SHARE = (0.3, 0.8), (0.1, 1.5), 0.5
WATCH_SECONDS = 0.02
"""How often the contender lists the pool's workers and reads its count of replaced ones."""
TARGET_P99_MS, TARGET_MAX_MS = 5.0, 20.0


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    stop: str
    """``none``, ``idle``, ``busy-one``, ``busy-both`` or ``random``."""
    stall_timeout: float | None = None
    """``None``: the executor's default."""
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


# Inside a contender's process: the stops -------------------------------------------------------


def proc(pid: int) -> tuple[str, int] | None:
    """``(state letter, start time in clock ticks)`` of ``pid`` from ``/proc``, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[19])


def ran_ns(pid: int) -> int | None:
    """Nanoseconds the main thread of ``pid`` has spent on a CPU (``/proc``), or None."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Stop:
    """One SIGSTOP sent to a worker."""

    at: float
    """Seconds after the executor was created."""
    pid: int
    state: str
    """The victim's state just before: R running a task, S waiting for one."""
    resumed_after: float | None = None


@dataclass
class Watch:
    """What the contender's loop saw of the pool, and the stops it sent."""

    t0: float = field(default_factory=time.monotonic)
    """When the executor was created."""
    seen: dict[int, int] = field(default_factory=dict)
    """Every worker pid seen, with its start time (clock ticks since boot)."""
    stops: list[Stop] = field(default_factory=list)
    skipped: int = 0
    """Random stops due when no worker could be stopped."""
    replaced_at: list[float] = field(default_factory=list)
    """When ``workers_replaced`` was seen to rise, in seconds after the executor was made."""

    def note(self, pids: Sequence[int]) -> None:
        for pid in pids:
            if pid not in self.seen and (found := proc(pid)) is not None:
                self.seen[pid] = found[1]

    def signal(self, pid: int, how: int) -> str | None:
        """Send ``how`` to ``pid`` if it is still the worker seen; return its state before."""
        self.note([pid])
        found = proc(pid)
        if found is None or found[1] != self.seen.get(pid) or found[0] in "ZX":
            return None
        try:
            os.kill(pid, how)
        except ProcessLookupError:
            return None
        return found[0]

    def stop(self, pid: int) -> Stop | None:
        state = self.signal(pid, signal.SIGSTOP)
        if state is None:
            return None
        self.stops.append(Stop(round(time.monotonic() - self.t0, 4), pid, state))
        return self.stops[-1]

    async def watch(self, executor: ProcessExecutor) -> None:
        """List the workers and note every replacement, every `WATCH_SECONDS`."""
        replaced = executor.workers_replaced
        while True:
            self.note(executor.worker_pids())
            now = executor.workers_replaced
            self.replaced_at += [round(time.monotonic() - self.t0, 4)] * (now - replaced)
            replaced = now
            await asyncio.sleep(WATCH_SECONDS)

    async def stop_idle(self, executor: ProcessExecutor, rng: random.Random) -> None:
        """SIGSTOP one worker once it waits for a task (state ``S``: its first one)."""
        victim = rng.choice(sorted(executor.worker_pids()))
        for _ in range(int(BUSY_WAIT / 0.001)):
            if (found := proc(victim)) is None or found[0] == "S":
                break
            await asyncio.sleep(0.001)
        self.stop(victim)

    async def stop_busy(
        self, executor: ProcessExecutor, due: asyncio.Event, count: int, rng: random.Random
    ) -> None:
        """Once ``due`` is set, SIGSTOP ``count`` workers, each as soon as it is in a task."""
        await due.wait()
        pids = sorted(executor.worker_pids())
        victims = rng.sample(pids, min(count, len(pids)))
        ran = {pid: ran_ns(pid) for pid in victims}
        deadline = time.monotonic() + BUSY_WAIT
        while victims and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
            for pid in list(victims):
                found, now = proc(pid), ran_ns(pid)
                before, ran[pid] = ran[pid], now
                if found is None or now is None or before is None:
                    victims.remove(pid)  # gone: nothing to stop
                elif found[0] == "R" and now - before >= BUSY_RUN_NS:
                    victims.remove(pid)
                    self.stop(pid)
        for pid in victims:  # never seen inside a task: stopped anyway; the run fails its check
            self.stop(pid)

    async def stop_at_random(self, executor: ProcessExecutor, rng: random.Random) -> None:
        """SIGSTOP a random worker every 0.3-0.8 s; resume about half of them later."""
        async with asyncio.TaskGroup() as tg:
            while True:
                # Every draw is made whatever happens, so a seed gives the same schedule.
                wait, pick = rng.uniform(*RANDOM_EVERY), rng.random()
                resume, later = rng.random() < RANDOM_RESUMED_SHARE, rng.uniform(*RANDOM_RESUME)
                await asyncio.sleep(wait)
                pids = sorted(executor.worker_pids())
                self.note(pids)
                ready = [p for p in pids if (found := proc(p)) is not None and found[0] not in "Tt"]
                stop = self.stop(ready[int(pick * len(ready))]) if ready else None
                if stop is None:
                    self.skipped += 1
                elif resume:
                    tg.create_task(self.resume_later(stop, later))

    async def resume_later(self, stop: Stop, after: float) -> None:
        await asyncio.sleep(after)
        if self.signal(stop.pid, signal.SIGCONT) is not None:
            stop.resumed_after = round(time.monotonic() - self.t0 - stop.at, 4)


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

    class WatchedStats(aiomr.JobStats):  # sets ``due`` once STOP_AT of the files are folded
        def __setattr__(self, name: str, value: Any) -> None:
            super().__setattr__(name, value)
            if name == "records_reduced" and value >= math.ceil(STOP_AT * len(paths)):
                due.set()

    stats = WatchedStats()
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
    if run.records != run.records_reduced + run.records_skipped:
        run.problems.append(
            f"records {run.records:,} != records_reduced {run.records_reduced:,} + "
            f"records_skipped {run.records_skipped:,}"
        )
    if run.records != files:
        run.problems.append(f"records {run.records:,}, but there are {files:,} files")
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
    text += "".join(f"\n  FAILED: {p}" for p in [run.error, *run.problems] if p)
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
    keys = [k.strip() for k in args.scenarios.split(",")] if args.scenarios else list(BY_KEY)
    if unknown := [k for k in keys if k not in BY_KEY]:
        raise SystemExit(f"unknown scenarios: {', '.join(unknown)}; try {', '.join(BY_KEY)}")
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
                f"{len(runs)} of {len(m.of(s.key, ok=False))}",
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
    all_ok = all(r.ok for r in m.runs)
    loops = sorted({r.loop for r in m.runs if r.loop})
    clean = h.median(r.wall for r in m.of("clean"))
    which = "every `.py` file" if m.step == 1 else f"every {m.step}th `.py` file (sorted)"
    parts = [
        "## Stuck workers",
        "",
        f"{m.machine} aiomr {m.aiomr}; event loop: {', '.join(loops) or 'n/a'}.",
        "",
        "What a worker process that stops without dying costs a job, and its caller's event "
        "loop. The job is the key-value word count of `examples/wordcount.py`: "
        f"{which} of the Python standard library ({m.files:,} files, {m.words:,} words, "
        f"{m.distinct:,} distinct), one file per record, `aiomr.map_reduce_by_key` with a "
        f"mapper yielding `(word, 1)` and `operator.add`, on `ProcessExecutor({WORKERS})`, "
        f"under `aiomr.run`; a clean run takes {h.na(clean, '.1f', ' s')} here. The workers "
        "are stopped with SIGSTOP and never resumed (but for the random stops): one while "
        "idle, once both workers are up and wait for a task, right before the job is called; "
        f"one or both *mid-job*, once {STOP_AT:.0%} of the files were mapped, each victim as "
        "soon as `/proc` shows it inside a task (running, and on a CPU for "
        f"{BUSY_RUN_NS / 1e6:g} ms of the last 1 ms); or at random: every 0.3 to 0.8 s from "
        "the moment the job is called, one of the workers not stopped at that moment (none "
        "when both are), half of them resumed (SIGCONT) 0.1 to 1.5 s later. Victims and "
        "random schedules are drawn by a generator seeded by the round; the contender's own "
        "event loop sends the signals.",
        "",
        f"Each scenario ran {h.times(m.rounds)}, each run in a fresh Python process, "
        "interleaved round by round in rotating order; figures are medians. Wall time runs "
        "from just before the executor is created until it is closed (every worker ended) "
        "with the full `{word: count}` dict in hand. *Ratio to clean* is the median over "
        "rounds of the run's wall time over the clean run's of the same round. *Loop lag* is "
        "how late a 10 ms ticker on the job's event loop woke, over the whole wall time: each "
        "run's p99 and max, then their medians; *worst max* is the largest lateness of any "
        "run. *Workers replaced* and *chunks retried* (map and reduce tasks submitted again) "
        "come from `JobStats`, with every run's figure; *stop to replaced* is the median time "
        "from the stop until the pool had replaced the stopped worker(s) (seen every "
        f"{WATCH_SECONDS * 1e3:.0f} ms).",
        "",
        f"{'Every run' if all_ok else 'Every run but those listed at the end'} found exactly "
        "the answer of a plain loop over the same files with the same mapper (no aiomr "
        f"code), had `records == records_reduced + records_skipped == {m.files:,}` in its "
        "`JobStats`, made the stops it was meant to (mid-job ones on busy workers) and, when "
        "they were for good, had every worker stopped mid-job replaced while the job ran "
        "(the worker stopped while idle ran none of the job's tasks); no worker process "
        "(stopped ones included) and no `aiomr-*` directory outlived it. Runs that failed a "
        "check are left out of the figures." + _isolated.load_note(m, "the ratios"),
        "",
        scenario_table(m),
        "",
        "### What happens to a stopped worker",
        "",
        "Each worker has its own task and reply pipes and bumps a heartbeat in shared memory "
        "ten times a second; the pool's thread reads the heartbeats every 0.1 s. A stopped "
        "worker holds up only the task it was running: half a second after its heartbeat "
        "stops, the task queued in its pipe goes to the other worker, which takes every other "
        "task meanwhile, and the event loop never waits on it (a worker stopped while idle "
        "so costs the job about that half second). After `stall_timeout` seconds without a "
        "heartbeat and without CPU time, the pool kills it and starts another; its running "
        'task fails as a lost worker with the verdict `"killed"` (it counts toward '
        "`max_kills`, not `max_attempts`) and runs again, while a task it had not started "
        "never counts as a retry. With `task_timeout`, a task past its time on a stopped "
        "worker has that worker killed the same way, without waiting for `stall_timeout`. A "
        "worker resumed before `stall_timeout` just carries on. A worker still stopped when "
        "the executor closes is killed, not waited for.",
        "",
    ]
    if not all_ok:
        labels = {s.key: s.label for s in SCENARIOS}
        parts += [
            "### Runs that failed a check",
            "",
            _isolated.failure_table(m, labels, "scenario"),
            "",
        ]
    parts += [
        f"The whole benchmark took {m.seconds / 60:.1f} minutes. Reproduce with:",
        "",
        "```console",
        "flock /tmp/aiomr-bench.lock python3 benchmarks/stuck_workers.py --write-docs",
        "```",
    ]
    return "\n".join(parts)


def all_ok(m: Result) -> bool:
    return all(r.ok for r in m.runs)


if __name__ == "__main__":
    parser = h.parser(__doc__, runs=5)
    parser.add_argument("--step", type=h.positive, help="count every STEP-th file (default 1)")
    parser.add_argument("--scenarios", help=f"some of {', '.join(BY_KEY)} (default: all)")
    parser.add_argument("--dump-stalls", type=float, metavar="SECONDS", help="see above")
    sys.exit(h.main("stuck_workers", parser, measure, render, contender=contender, ok=all_ok))
