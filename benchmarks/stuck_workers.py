"""Stuck workers: a word count with worker processes SIGSTOPped idle, busy, both, and at random.

The job is the idiomatic key-value word count of ``examples/wordcount.py``: every ``.py`` file
of the Python standard library (``sysconfig``'s stdlib path, without ``site-packages``; every
``--step``-th file in sorted order) is one record; the mapper yields ``(word, 1)`` for every
alphabetic word of its file (punctuation to spaces, lower-cased), ``operator.add`` reduces each
word's counts; `aiomr.map_reduce_by_key` on a `aiomr.executors.ProcessExecutor` of 2 workers,
under `aiomr.run` (uvloop when installed). With little other load on 2 cores, a clean run
takes about 1.2 s with ``--quick`` (a quarter of the files), so about 4-5 s for the whole
standard library. It runs in six scenarios:

1. ``clean``: nothing is stopped;
2. ``idle``: once both workers are up and idle (``await executor.start()``), one of them is
   SIGSTOPped right before the job is called, and never resumed;
3. ``busy``: one worker is SIGSTOPped mid-job while it runs a task, and never resumed; the
   default ``stall_timeout`` (5 s);
4. ``busy-stall-1``: the same with ``ProcessExecutor(stall_timeout=1)``;
5. ``both-timeout-1``: both workers are SIGSTOPped mid-job while they run tasks, never resumed,
   with ``retry=aiomr.RetryPolicy(task_timeout=1)``;
6. ``random``: from the moment the job is called, every 0.3-0.8 s (uniform) a worker drawn at
   random among the ready workers not stopped at that moment is SIGSTOPped (none when there
   is no such worker); each stop is, with probability 1/2, followed by a SIGCONT 0.1-1.5 s
   (uniform) later, if the job is still running then. Seeded by the round.

*Mid-job* is the moment `STOP_AT` of the files have been mapped and folded
(``JobStats.records_reduced``); each victim (drawn by a generator seeded by the round) is
stopped as soon as ``/proc`` shows its main thread inside a task: running (state ``R``) and
on a CPU for at least `BUSY_RUN_NS` since the look 1 ms before (a worker just woken by a task
in its pipe is runnable as well, but has not started it). The idle victim is stopped once it
waits for its first task (state ``S``). The stops are sent by the contender's own event loop
(``os.kill``, microseconds), which also lists the pool's workers every `WATCH_SECONDS` and
notes when ``executor.workers_replaced`` rises.

Each timed run is a fresh Python process (``python3 benchmarks/stuck_workers.py --contender``);
the scenarios are interleaved round by round in rotating order; figures are medians over the
rounds. The wall time runs from just before the `ProcessExecutor` is created (no worker
started) until it is closed (every worker ended) with the full ``{word: count}`` dict in hand;
its *ratio to clean* is the median over rounds of the run's wall time over the clean run's of
the same round. The event-loop lag is that of the job's loop: a coroutine sleeps 10 ms again
and again over the whole timed span and records how late each wake-up is (as
``benchmarks/loop_lag.py`` does); p99 and max are per run, then the median over runs.

Every run is checked before any of its figures counts:

* its counts equal, word for word, those of a plain loop over the same files with the same
  mapper (no aiomr code), computed once in this (the parent) process;
* its `aiomr.JobStats`: ``records == records_reduced + records_skipped`` and ``records`` equals
  the number of files;
* every stop it was meant to make landed; in scenarios 3 to 5 each victim was inside a task
  (at least as many tasks retried as workers stopped: the pool retries the task a stopped
  worker was running, not one it had not started); in scenarios 3 to 5 each stopped worker
  was replaced while the job ran (``JobStats.workers_replaced``); in scenario 2 the stopped
  worker ran none of the job's tasks (``JobStats.worker_pids``): the pool takes back the
  tasks a silent worker has not started, so the job may end before the stopped worker is
  found out and replaced;
* nothing is left behind: in the contender once the executor is closed, no worker pid seen
  during the run (stopped ones included; pid and start time) and no descendant but its
  forkserver and resource tracker is alive; in the parent once the contender has exited, no
  process of the contender's session (it leads its own, which its forkserver and every worker
  inherit) is alive; no ``aiomr-*`` directory the contender created (an audit hook records
  each ``mkdir``) is still on disk, nor any code directory named after it
  (``aiomr-code-PID-*``). Whatever was left is killed or removed.

A run that fails a check (or raises, or hangs past `RUN_TIMEOUT`) is reported with the reason,
left out of the figures, and makes the exit status 1. aiomr and these scripts are
byte-compiled first, as an installed package is, so that no process compiles them again.

Run it alone on the machine::

    flock /tmp/aiomr-bench.lock python3 benchmarks/stuck_workers.py --write-docs
    python3 benchmarks/stuck_workers.py --quick     # a smoke run: every 4th file, one round

``--scenarios busy,random`` runs some scenarios only; ``--dump-stalls 0.05`` prints every
thread's stack whenever a contender's loop stalls longer than 50 ms (not for timed runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import glob
import logging
import math
import operator
import os
import pathlib
import pickle
import random
import shutil
import signal
import string
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import _common
import _runs

if TYPE_CHECKING:
    import aiomr
    import aiomr.executors

WORKERS = 2
DEFAULT_RUNS = 5
QUICK_STEP = 4
"""With ``--quick``, every 4th file: a clean job of about a second."""
STOP_AT = 0.3
"""Share of the files mapped and folded when a mid-job stop is due: well inside the map
phase, with most of the job still to run."""
BUSY_RUN_NS = 500_000
"""CPU time a victim's main thread must have had since the previous look (1 ms before) to
count as inside a task."""
BUSY_WAIT = 2.0
"""Seconds a mid-job stop waits for its victim to be inside a task; a victim that never is
makes the run fail its check (the scenario did not happen)."""
RANDOM_EVERY = (0.3, 0.8)
RANDOM_RESUME = (0.1, 1.5)
RANDOM_RESUMED_SHARE = 0.5
TICK_SECONDS = 0.010
WATCH_SECONDS = 0.02
"""How often the contender lists the pool's workers and reads its count of replaced ones."""
RUN_TIMEOUT = 300.0
"""Seconds after which a contender run is killed and reported as hung."""
GONE_GRACE = 2.0
"""Seconds processes get to exit before one still alive counts as left behind."""
TARGET_P99_MS = 5.0
TARGET_MAX_MS = 20.0
DUMP_STALLS_VARIABLE = "AIOMR_BENCH_DUMP_STALLS"
"""How ``--dump-stalls`` reaches the contenders."""
SECTION = "stuck_workers"
HEADING = "Stuck workers"


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    stop: str
    """``none``, ``idle``, ``busy-one``, ``busy-both`` or ``random``."""
    stall_timeout: float | None = None
    """``None``: the executor's default."""
    task_timeout: float | None = None

    @property
    def replaced_per_stop(self) -> bool:
        """Whether every stop must lead to a replacement while the job runs."""
        return self.stop in ("busy-one", "busy-both")


SCENARIOS: tuple[Scenario, ...] = (
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


# The job ---------------------------------------------------------------------------------------

_PUNCTUATION = str.maketrans(string.punctuation, " " * len(string.punctuation))


def words_of_file(path: str) -> Iterator[tuple[str, int]]:
    """Yield ``(word, 1)`` for every alphabetic word of one file, lower-cased (in a worker)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            for word in line.translate(_PUNCTUATION).lower().split():
                if word.isalpha():
                    yield word, 1


def stdlib_files(step: int) -> list[str]:
    """Every ``step``-th ``.py`` file of the standard library, sorted, without third parties."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    third_party = {"site-packages", "dist-packages"}
    paths = [
        str(p)
        for p in sorted(root.rglob("*.py"))
        if p.is_file() and third_party.isdisjoint(p.relative_to(root).parts)
    ]
    return paths[::step]


def reference_counts(paths: Sequence[str]) -> dict[str, int]:
    """Count the words of ``paths`` with a plain loop and the same mapper (no aiomr)."""
    counts: Counter[str] = Counter()
    for path in paths:
        for word, one in words_of_file(path):
            counts[word] += one
    return dict(counts)


# Inside a contender's process ------------------------------------------------------------------


def _proc(pid: int) -> tuple[str, int] | None:
    """``(state letter, start time in clock ticks)`` of ``pid`` from ``/proc``, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[19])


def _ran_ns(pid: int) -> int | None:
    """Nanoseconds the main thread of ``pid`` has spent on a CPU (``/proc``), or None."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int, started: int) -> bool:
    """Whether the process ``pid`` that started at ``started`` still runs (zombies do not)."""
    found = _proc(pid)
    return found is not None and found[1] == started and found[0] not in "ZX"


def _signal(pid: int, started: int, how: int) -> str | None:
    """Send ``how`` to ``pid`` if it is still the process that started at ``started``;
    return its state just before, or None if it is gone."""
    found = _proc(pid)
    if found is None or found[1] != started or found[0] in "ZX":
        return None
    try:
        os.kill(pid, how)
    except ProcessLookupError:
        return None
    return found[0]


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
    """What the contender's loop saw of the pool while the job ran."""

    t0: float
    """`time.monotonic` when the executor was created."""
    seen: dict[int, int] = field(default_factory=dict)
    """Every worker pid seen, with its start time (clock ticks since boot)."""
    stops: list[Stop] = field(default_factory=list)
    skipped: int = 0
    """Random stops due when no worker could be stopped."""
    replaced_at: list[float] = field(default_factory=list)
    """When ``workers_replaced`` was seen to rise, in seconds after the executor was made."""

    def now(self) -> float:
        return time.monotonic() - self.t0

    def note(self, pids: Sequence[int]) -> None:
        for pid in pids:
            if pid not in self.seen and (found := _proc(pid)) is not None:
                self.seen[pid] = found[1]

    def stop(self, pid: int) -> Stop | None:
        self.note([pid])
        state = _signal(pid, self.seen[pid], signal.SIGSTOP) if pid in self.seen else None
        if state is None:
            return None
        stop = Stop(round(self.now(), 4), pid, state)
        self.stops.append(stop)
        return stop


async def watch(executor: aiomr.executors.ProcessExecutor, w: Watch) -> None:
    """List the workers and note every replacement, every `WATCH_SECONDS`, until cancelled."""
    replaced = executor.workers_replaced
    while True:
        w.note(executor.worker_pids())
        now = executor.workers_replaced
        w.replaced_at += [round(w.now(), 4)] * (now - replaced)
        replaced = now
        await asyncio.sleep(WATCH_SECONDS)


async def stop_idle(
    executor: aiomr.executors.ProcessExecutor, w: Watch, rng: random.Random
) -> None:
    """SIGSTOP one worker once it waits for a task (state ``S``: its first one)."""
    victim = rng.choice(sorted(executor.worker_pids()))
    for _ in range(int(BUSY_WAIT / 0.001)):
        found = _proc(victim)
        if found is None or found[0] == "S":
            break
        await asyncio.sleep(0.001)
    w.stop(victim)


async def stop_busy(
    executor: aiomr.executors.ProcessExecutor,
    w: Watch,
    due: asyncio.Event,
    count: int,
    rng: random.Random,
) -> None:
    """Once ``due`` is set, SIGSTOP ``count`` workers, each as soon as it is inside a task.

    Inside a task means running (state ``R``) and having run `BUSY_RUN_NS` since the look
    before: a worker just woken by a task in its pipe is runnable too, but has not started
    the task yet, and the pool would rightly hand that task to another worker untouched.
    """
    await due.wait()
    pids = sorted(executor.worker_pids())
    victims = rng.sample(pids, min(count, len(pids)))
    ran = {pid: _ran_ns(pid) for pid in victims}
    deadline = time.monotonic() + BUSY_WAIT
    while victims and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
        for pid in list(victims):
            found, now = _proc(pid), _ran_ns(pid)
            before, ran[pid] = ran[pid], now
            if found is None or now is None or before is None:
                victims.remove(pid)  # gone: nothing to stop
            elif found[0] == "R" and now - before >= BUSY_RUN_NS:
                victims.remove(pid)
                w.stop(pid)
    for pid in victims:  # never seen inside a task: stopped anyway; the run fails its check
        w.stop(pid)


async def stop_at_random(
    executor: aiomr.executors.ProcessExecutor, w: Watch, rng: random.Random
) -> None:
    """SIGSTOP a random worker every 0.3-0.8 s; resume about half of them later."""
    async with asyncio.TaskGroup() as tg:
        while True:
            # Every draw is made whatever happens, so a seed gives the same schedule.
            wait, pick = rng.uniform(*RANDOM_EVERY), rng.random()
            resume = rng.random() < RANDOM_RESUMED_SHARE
            later = rng.uniform(*RANDOM_RESUME)
            await asyncio.sleep(wait)
            pids = sorted(executor.worker_pids())
            w.note(pids)
            ready = [p for p in pids if (found := _proc(p)) is not None and found[0] not in "Tt"]
            stop = w.stop(ready[int(pick * len(ready))]) if ready else None
            if stop is None:
                w.skipped += 1
            elif resume:
                tg.create_task(resume_later(w, stop, later))


async def resume_later(w: Watch, stop: Stop, after: float) -> None:
    await asyncio.sleep(after)
    if _signal(stop.pid, w.seen[stop.pid], signal.SIGCONT) is not None:
        stop.resumed_after = round(w.now() - stop.at, 4)


async def tick(stop: asyncio.Event, lateness: list[float], dump_after: float | None) -> None:
    """Sleep ``TICK_SECONDS`` again and again; record how late each wake-up is (>= 0).

    With ``dump_after``, every thread's stack goes to stderr whenever a wake-up is more
    than ``dump_after`` seconds late (to find what held the loop).
    """
    try:
        while not stop.is_set():
            if dump_after is not None:
                faulthandler.dump_traceback_later(TICK_SECONDS + dump_after)
            before = time.perf_counter()
            await asyncio.sleep(TICK_SECONDS)
            lateness.append(max(0.0, time.perf_counter() - before - TICK_SECONDS))
    finally:
        if dump_after is not None:
            faulthandler.cancel_dump_traceback_later()


def watched_stats(due: asyncio.Event, records: int) -> aiomr.JobStats:
    """Return a `aiomr.JobStats` that sets ``due`` once ``records`` records are reduced."""
    import aiomr

    class WatchedStats(aiomr.JobStats):
        def __setattr__(self, name: str, value: Any) -> None:
            super().__setattr__(name, value)
            if name == "records_reduced" and value >= records:
                due.set()

    return WatchedStats()


async def contend(
    scenario: Scenario,
    paths: list[str],
    seed: int,
    stats: aiomr.JobStats,
    due: asyncio.Event,
    w: Watch,
    dump_after: float | None = None,
) -> dict[str, Any]:
    """Run the job once, with the scenario's stops, while the ticker runs."""
    import aiomr
    import aiomr.executors

    lateness: list[float] = []
    done = asyncio.Event()
    rng = random.Random(seed)
    retry = None
    if scenario.task_timeout is not None:
        retry = aiomr.RetryPolicy(task_timeout=scenario.task_timeout)
    options = {} if scenario.stall_timeout is None else {"stall_timeout": scenario.stall_timeout}
    counts: dict[str, int] = {}
    async with asyncio.TaskGroup() as outer:
        outer.create_task(tick(done, lateness, dump_after))
        started = time.perf_counter()
        w.t0 = time.monotonic()
        try:
            async with aiomr.executors.ProcessExecutor(WORKERS, **options) as executor:
                # Every scenario starts its workers first, so the idle stop is the only change.
                await executor.start()
                w.note(executor.worker_pids())
                if scenario.stop == "idle":
                    await stop_idle(executor, w, rng)
                async with asyncio.TaskGroup() as tg:
                    side = [tg.create_task(watch(executor, w))]
                    if scenario.stop in ("busy-one", "busy-both"):
                        count = 1 if scenario.stop == "busy-one" else WORKERS
                        side.append(tg.create_task(stop_busy(executor, w, due, count, rng)))
                    elif scenario.stop == "random":
                        side.append(tg.create_task(stop_at_random(executor, w, rng)))
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
            done.set()
    return {
        "counts": counts,
        "wall": wall,
        "lateness": lateness,
        "loop": type(asyncio.get_running_loop()).__module__,
    }


def _helpers_and_others() -> tuple[list[Any], list[Any]]:
    """This process's live descendants: (forkserver and resource tracker, everything else)."""
    import psutil

    me = psutil.Process()
    helpers, others = [], []
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            # Workers are forked by the forkserver, so their command line is its own: only
            # the contender's direct children can be the helpers.
            command = " ".join(child.cmdline())
            helper = "forkserver" in command or "resource_tracker" in command
            (helpers if helper and child.ppid() == me.pid else others).append(child)
    return helpers, others


def describe_error(exc: BaseException) -> str:
    """Say what went wrong, naming the exceptions inside an exception group."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe_error(inner) for inner in exc.exceptions)
    notes = " ".join(getattr(exc, "__notes__", []))
    return f"{type(exc).__name__}: {exc}{' ' + notes if notes else ''}"


class LogRecorder(logging.Handler):
    """Keep aiomr's warnings (the pool says why it killed a worker), with their time."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((time.monotonic(), record.getMessage()))


def contender_main(key: str, paths_file: str, out: str, seed: int) -> None:
    """Run one scenario once and write its counts, stats and measurements to ``out``."""
    import aiomr
    import aiomr.executors

    # aiomr loads its names on first use: load what the job uses before the clock starts,
    # or the imports would show as loop lag.
    names = ["run", "map_reduce_by_key", "JobStats", "RetryPolicy", "executors.ProcessExecutor"]
    _common.import_names(f"aiomr.{name}" for name in names)
    scenario = BY_KEY[key]
    with open(paths_file, encoding="utf-8") as f:
        paths = f.read().splitlines()
    created: list[str] = []
    sys.addaudithook(_runs.record_aiomr_directories(created))
    report: dict[str, Any] = {"error": None, "created": created}
    recorder = LogRecorder()
    logging.getLogger("aiomr").addHandler(recorder)
    stats: aiomr.JobStats | None = None
    w = Watch(time.monotonic())

    async def main() -> dict[str, Any]:
        nonlocal stats
        due = asyncio.Event()
        stats = watched_stats(due, math.ceil(STOP_AT * len(paths)))
        dump = os.environ.get(DUMP_STALLS_VARIABLE)
        return await contend(scenario, paths, seed, stats, due, w, float(dump) if dump else None)

    try:
        report.update(aiomr.run(main()))
    except BaseException as exc:
        report["error"] = describe_error(exc)
    seen = dict(w.seen)
    deadline = time.monotonic() + GONE_GRACE
    while True:
        left = [pid for pid, started in seen.items() if _alive(pid, started)]
        helpers, others = _helpers_and_others()
        if (not left and not others) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    report["workers_left"] = sorted({*left, *(p.pid for p in others)})
    report["dirs_left"] = [p for p in created if os.path.lexists(p)]
    report.update(stops=w.stops, skipped=w.skipped, replaced_at=w.replaced_at)
    report["log"] = [(round(at - w.t0, 4), message) for at, message in recorder.records]
    if stats is not None:
        names = ("records", "records_reduced", "records_skipped", "chunks", "chunks_retried")
        names += ("partitions_retried", "workers_replaced", "started_at", "finished_at")
        report["stats"] = {name: getattr(stats, name) for name in names}
        report["stats"]["worker_pids"] = sorted(stats.worker_pids)
        report["job_started"] = stats.started_at - w.t0 if stats.started_at else math.nan
    times = os.times()
    cpu = times.user + times.system + times.children_user + times.children_system
    for helper in helpers:  # the forkserver reaps the workers: their CPU time is its children's
        with contextlib.suppress(Exception):
            t = helper.cpu_times()
            cpu += t.user + t.system + t.children_user + t.children_system
    report["cpu_total"] = cpu
    with open(out, "wb") as f:
        pickle.dump(report, f, pickle.HIGHEST_PROTOCOL)


# In the parent: one run ------------------------------------------------------------------------


@dataclass
class Run:
    """One timed run of one scenario, checked."""

    scenario: str
    round: int
    wall: float = math.nan
    job_started: float = math.nan
    """Seconds from the executor's creation to ``JobStats.started_at``."""
    lag_p99: float = math.nan
    lag_max: float = math.nan
    ticks: int = 0
    others: float = math.nan
    """Cores that processes outside this benchmark kept busy, on average, during the run."""
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
    error: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.problems

    def detection(self) -> float:
        """Seconds from the stops until the pool had replaced every stopped worker."""
        if not self.stops or len(self.replaced_at) < len(self.stops):
            return math.nan
        return self.replaced_at[len(self.stops) - 1] - self.stops[-1].at


def _in_session(sid: int) -> list[int]:
    """Live processes of session ``sid`` (the contender's: it leads its own)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] not in (b"Z", b"X"):
            found.append(int(name))
    return found


def _clean_up(report: dict[str, Any] | None, sid: int) -> list[str]:
    """Check from outside that nothing outlived the contender; kill and remove what did.

    The contender leads a session of its own, which its forkserver, resource tracker and
    every worker inherit: any process of that session alive once the contender has exited
    (after a grace period) was left behind, stopped workers included.
    """
    problems = []
    deadline = time.monotonic() + GONE_GRACE
    while (left := _in_session(sid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if left:
        problems.append(f"processes {left} alive after the contender exited")
    elif report is not None and report.get("workers_left"):
        problems.append(f"processes {report['workers_left']} alive after the executor closed")
    created = report.get("created", []) if report is not None else []
    dirs = [p for p in created if os.path.lexists(p)]
    patterns = [f"/dev/shm/aiomr-code-{sid}-*", f"{tempfile.gettempdir()}/aiomr-code-{sid}-*"]
    dirs += [p for pattern in patterns for p in glob.glob(pattern) if p not in dirs]
    reported = report.get("dirs_left", []) if report is not None else []
    if dirs or reported:
        problems.append(f"directories left: {', '.join(sorted({*dirs, *reported}))}")
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)
    return problems


def answer_problems(counts: dict[str, int], reference: dict[str, int]) -> list[str]:
    if counts == reference:
        return []
    wrong = sorted(w for w in reference.keys() | counts.keys() if counts.get(w) != reference.get(w))
    shown = ", ".join(f"{w!r}: {counts.get(w)} != {reference.get(w)}" for w in wrong[:5])
    return [f"{len(wrong):,} words differ from the reference: {shown}"]


def stop_problems(run: Run, scenario: Scenario) -> list[str]:
    """Check that the scenario's stops happened, and were handled, as it says."""
    wanted = {"idle": 1, "busy-one": 1, "busy-both": WORKERS}.get(scenario.stop, 0)
    problems = []
    if wanted and len(run.stops) != wanted:
        problems.append(f"{len(run.stops)} workers stopped, {wanted} meant to be")
    if scenario.stop.startswith("busy"):
        idle = [f"{s.pid} ({s.state})" for s in run.stops if s.state != "R"]
        if idle:
            problems.append(f"stopped workers not busy: {', '.join(idle)}")
        # A stopped worker's running task is lost and retried; one it had not started is
        # not. Fewer retries than stops: a victim was between two tasks, not inside one.
        retried = run.chunks_retried + run.partitions_retried
        if retried < len(run.stops):
            problems.append(
                f"{len(run.stops)} workers stopped mid-job, but only {retried} tasks retried: "
                "a victim had not started its task"
            )
    if scenario.stop == "idle":
        # Its tasks go to the other worker once its heartbeat is missed: the job may end
        # before stall_timeout finds it out, but the stopped worker must have run nothing.
        ran = [s.pid for s in run.stops if s.pid in run.task_pids]
        if ran:
            problems.append(f"the stopped worker {ran[0]} ran a task of the job")
    elif scenario.replaced_per_stop and run.workers_replaced < len(run.stops):
        problems.append(
            f"{len(run.stops)} workers stopped for good, but only {run.workers_replaced} "
            "replaced while the job ran"
        )
    return problems


def run_once(
    scenario: Scenario, round_: int, paths_file: str, files: int, reference: dict[str, int]
) -> Run:
    """Run ``scenario`` once in a fresh Python process and check it."""
    run = Run(scenario.key, round_)
    with tempfile.TemporaryDirectory(prefix="bench-stuck-") as tmp:
        out, err = os.path.join(tmp, "report.pkl"), os.path.join(tmp, "stderr")
        command = [sys.executable, __file__, "--contender", scenario.key, paths_file, out]
        command.append(str(1000 * round_ + SCENARIOS.index(scenario)))
        busy, ours, began = _common.busy_cpu_seconds(), _runs.own_cpu(), time.perf_counter()
        with open(err, "wb") as stderr:
            process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
            )
            try:
                code = process.wait(RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                run.error = f"hung: no result after {RUN_TIMEOUT:.0f} s; killed"
                os.killpg(process.pid, signal.SIGKILL)
                code = process.wait()
            except BaseException:  # Ctrl-C: the contender's session does not get it
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                raise
        elapsed = time.perf_counter() - began
        with open(err, encoding="utf-8", errors="replace") as f:
            run.log = [line.rstrip() for line in f if line.strip()]
        report: dict[str, Any] | None = None
        if os.path.exists(out):
            with open(out, "rb") as f:
                report = pickle.load(f)
        elif run.error is None:
            tail = " | ".join(run.log[-3:])
            run.error = f"the contender exited with {code} and no report: {tail}"
    run.problems += _clean_up(report, process.pid)
    if report is None:
        return run
    run.others = max(
        0.0,
        (_common.busy_cpu_seconds() - busy - (_runs.own_cpu() - ours) - report["cpu_total"])
        / elapsed,
    )
    run.stops, run.skipped = report.get("stops", []), report.get("skipped", 0)
    run.replaced_at = report.get("replaced_at", [])
    run.messages = report.get("log", [])
    run.job_started = report.get("job_started", math.nan)
    if report["error"] is not None:
        run.error = report["error"]
        return run
    run.wall, run.loop = report["wall"], report["loop"]
    lateness: list[float] = report["lateness"]
    run.ticks = len(lateness)
    if lateness:
        run.lag_p99, run.lag_max = _common.percentile(lateness, 99), max(lateness)
    stats = report["stats"]
    for name in ("records", "records_reduced", "records_skipped", "chunks", "chunks_retried"):
        setattr(run, name, stats[name])
    run.partitions_retried, run.workers_replaced = (
        stats["partitions_retried"],
        stats["workers_replaced"],
    )
    run.task_pids = list(stats["worker_pids"])
    run.problems += answer_problems(report["counts"], reference)
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
    stops = ", ".join(
        f"{s.pid} at {s.at - run.job_started:.2f} s ({s.state}"
        + (f", resumed {s.resumed_after:.2f} s later)" if s.resumed_after is not None else ")")
        for s in run.stops
    )
    text = (
        f"{run.wall:.2f} s, lag p99 {_common.fmt_ms(run.lag_p99, 1)} max "
        f"{_common.fmt_ms(run.lag_max, 1)} ms, replaced {run.workers_replaced}, retried "
        f"{run.chunks_retried}+{run.partitions_retried}, others' load {run.others:.2f}; "
        f"stops: {stops or 'none'}"
        + (f" ({run.skipped} skipped)" if run.skipped else "")
        + (
            f"; replaced at {', '.join(f'{t - run.job_started:.2f}' for t in run.replaced_at)} s"
            if run.replaced_at
            else ""
        )
    )
    if run.error:
        text += f"\n  FAILED: {run.error}"
    for problem in run.problems:
        text += f"\n  PROBLEM: {problem}"
    for at, message in run.messages:
        text += f"\n  {at - run.job_started:6.2f} s  {message}"
    for line in run.log:
        text += f"\n  | {line}"
    return text


# Measuring and reporting -----------------------------------------------------------------------


@dataclass
class Measurements:
    files: int
    step: int
    rounds: int
    reference_words: int = 0
    reference_distinct: int = 0
    reference_seconds: float = 0.0
    runs: list[Run] = field(default_factory=list)
    machine: str = ""
    aiomr: str = ""
    seconds: float = 0.0

    def of(self, key: str, *, ok: bool = True) -> list[Run]:
        return [r for r in self.runs if r.scenario == key and (r.ok or not ok)]


def measure(step: int, rounds: int, scenarios: Sequence[Scenario] = SCENARIOS) -> Measurements:
    """Run every scenario ``rounds`` times, interleaved in rotating order; check every run."""
    began = time.perf_counter()
    paths = stdlib_files(step)
    m = Measurements(len(paths), step, rounds)
    m.machine = _common.machine_line()
    m.aiomr = dict(_common.machine_rows())["aiomr"]
    _common.progress(f"counting the words of {len(paths):,} files with a plain loop")
    started = time.perf_counter()
    reference = reference_counts(paths)  # also brings the files into the page cache
    m.reference_seconds = time.perf_counter() - started
    m.reference_words, m.reference_distinct = sum(reference.values()), len(reference)
    with tempfile.TemporaryDirectory(prefix="bench-stuck-") as tmp:
        paths_file = os.path.join(tmp, "paths")
        with open(paths_file, "w", encoding="utf-8") as f:
            f.write("\n".join(paths) + "\n")
        for round_ in range(rounds):
            for scenario in _common.rotated(list(scenarios), round_):
                run = run_once(scenario, round_, paths_file, len(paths), reference)
                m.runs.append(run)
                _common.progress(f"round {round_ + 1}/{rounds} {scenario.key}: {describe(run)}")
    m.seconds = time.perf_counter() - began
    return m


def ratios(m: Measurements, key: str) -> list[float]:
    """The run's wall time over the clean run's, for each round where both passed."""
    clean = {r.round: r for r in m.of("clean")}
    return [r.wall / clean[r.round].wall for r in m.of(key) if r.round in clean]


def meets_target(runs: Sequence[Run]) -> bool:
    return (
        bool(runs)
        and _runs.median_of([r.lag_p99 for r in runs]) * 1e3 <= TARGET_P99_MS
        and _runs.median_of([r.lag_max for r in runs]) * 1e3 <= TARGET_MAX_MS
    )


def scenario_table(m: Measurements) -> str:
    headers = [
        "scenario",
        "runs ok",
        "wall (median)",
        "range",
        "ratio to clean",
        "loop lag p99 / max (median)",
        "worst max",
        f"target: p99 ≤ {TARGET_P99_MS:g}, max ≤ {TARGET_MAX_MS:g} ms",
        "stops per run",
        "workers replaced",
        "chunks retried",
        "stop to replaced",
    ]
    rows = []
    for s in SCENARIOS:
        runs, total = m.of(s.key), len(m.of(s.key, ok=False))
        walls = [r.wall for r in runs]
        stops = [len(r.stops) for r in runs]
        if s.stop == "random":
            stops_text = (
                _runs.per_run(stops) + f", resumed {_runs.per_run([_resumed(r) for r in runs])}"
            )
        else:
            stops_text = str(stops[0]) if stops and len(set(stops)) == 1 else _runs.per_run(stops)
        rows.append(
            [
                s.label,
                f"{len(runs)} of {total}",
                _runs.na(_runs.median_of(walls), ".2f", " s"),
                f"{min(walls):.2f} to {max(walls):.2f} s" if walls else "n/a",
                "1 (baseline)"
                if s.key == "clean"
                else _runs.na(_runs.median_of(ratios(m, s.key)), ".2f", "x"),
                f"{_common.fmt_ms(_runs.median_of([r.lag_p99 for r in runs]), 1)} / "
                f"{_common.fmt_ms(_runs.median_of([r.lag_max for r in runs]), 1)} ms",
                _runs.na(max((r.lag_max for r in runs), default=math.nan) * 1e3, ".1f", " ms"),
                _common.verdict(meets_target(runs)) if runs else "n/a",
                stops_text,
                _runs.per_run([r.workers_replaced for r in runs]),
                _runs.per_run([r.chunks_retried + r.partitions_retried for r in runs]),
                _runs.na(_runs.median_of([r.detection() for r in runs]), ".2f", " s")
                if s.replaced_per_stop
                else "",
            ]
        )
    return _common.markdown_table(headers, rows)


def _resumed(run: Run) -> int:
    return sum(s.resumed_after is not None for s in run.stops)


def failure_table(m: Measurements) -> str:
    rows = []
    for run in m.runs:
        if run.ok:
            continue
        reasons = ([run.error] if run.error else []) + run.problems
        rows.append(
            [
                str(run.round + 1),
                BY_KEY[run.scenario].label,
                "; ".join(reasons).replace("|", "\\|"),
            ]
        )
    return _common.markdown_table(["round", "scenario", "what failed"], rows, left=(1, 2))


def load_note(m: Measurements) -> str:
    loads = [r.others for r in m.runs if not math.isnan(r.others)]
    others = _runs.median_of(loads)
    if math.isnan(others) or others < 0.25:
        return ""
    return (
        f" The machine was shared: processes outside the benchmark kept {others:.2f} cores "
        f"busy on average (median over runs; up to {max(loads):.2f}), so wall times are "
        "longer than on an idle machine; the ratios compare runs of the same round."
    )


def render(m: Measurements) -> str:
    all_ok = all(r.ok for r in m.runs)
    loops = sorted({r.loop for r in m.runs if r.loop})
    clean = _runs.median_of([r.wall for r in m.of("clean")])
    which = "every `.py` file" if m.step == 1 else f"every {m.step}th `.py` file (sorted)"
    parts = [
        f"## {HEADING}",
        "",
        f"{m.machine} aiomr {m.aiomr}; event loop: {', '.join(loops) or 'n/a'}.",
        "",
        "What a worker process that stops without dying costs a job, and its caller's event "
        "loop. The job is the key-value word count of `examples/wordcount.py`: "
        f"{which} of the Python standard library ({m.files:,} files, "
        f"{m.reference_words:,} words, {m.reference_distinct:,} distinct), one file per "
        "record, `aiomr.map_reduce_by_key` with a mapper yielding `(word, 1)` and "
        f"`operator.add`, on `ProcessExecutor({WORKERS})`, under `aiomr.run`; a clean run "
        f"takes {_runs.na(clean, '.1f', ' s')} here. The workers are stopped with SIGSTOP and "
        "never resumed (but for the random stops): one while idle, once both workers are up "
        "and wait for a task, right before the job is called; one or both *mid-job*, once "
        f"{STOP_AT:.0%} of the files were mapped, each victim as soon as `/proc` shows it "
        f"inside a task (running, and on a CPU for {BUSY_RUN_NS / 1e6:g} ms of the last 1 ms); "
        "or at random: every 0.3 to 0.8 s from the moment the job is called, one of the "
        "workers not stopped at that moment (none when both are), half of them resumed "
        "(SIGCONT) 0.1 to 1.5 s later. Victims and random schedules are drawn by a generator "
        "seeded by the round; the contender's own event loop sends the signals.",
        "",
        f"Each scenario ran {'once' if m.rounds == 1 else f'{m.rounds} times'}, each run in "
        "a fresh "
        "Python process, interleaved round by round in rotating order; figures are medians. "
        "Wall time runs from just before the executor is created until it is closed (every "
        "worker ended) with the full `{word: count}` dict in hand. *Ratio to clean* is the "
        "median over rounds of the run's wall time over the clean run's of the same round. "
        "*Loop lag* is how late a 10 ms ticker on the job's event loop woke, over the whole "
        "wall time: each run's p99 and max, then their medians; *worst max* is the largest "
        "lateness of any run. *Workers replaced* and *chunks retried* (map and reduce tasks "
        "submitted again) come from `JobStats`, with every run's figure; *stop to replaced* "
        "is the median time from the stop until the pool had replaced the stopped worker(s) "
        f"(seen every {WATCH_SECONDS * 1e3:.0f} ms).",
        "",
        f"{'Every run' if all_ok else 'Every run but those listed at the end'} found exactly "
        "the answer of a plain loop over the same files with the same mapper (no aiomr "
        f"code), had `records == records_reduced + records_skipped == {m.files:,}` in its "
        "`JobStats`, made the stops it was meant to (mid-job ones on busy workers) and, when "
        "they were for good, had every worker stopped mid-job replaced while the job ran "
        "(the worker stopped while idle ran none of the job's tasks); no worker "
        "process (stopped ones included) and no `aiomr-*` directory outlived it. Runs that "
        "failed a check are left out of the figures." + load_note(m),
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
        "never counts as a retry. With `task_timeout`, a task past its time on a "
        "stopped worker has that worker killed the same way, without waiting for "
        "`stall_timeout`. A worker resumed before `stall_timeout` just carries on. A worker "
        "still stopped when the executor closes is killed, not waited for.",
        "",
    ]
    if not all_ok:
        parts += ["### Runs that failed a check", "", failure_table(m), ""]
    parts += [
        f"The whole benchmark took {m.seconds / 60:.1f} minutes. Reproduce with:",
        "",
        "```console",
        "flock /tmp/aiomr-bench.lock python3 benchmarks/stuck_workers.py --write-docs",
        "```",
    ]
    return "\n".join(parts)


# Command line ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument(
        "--runs", type=int, default=None, help=f"rounds of every scenario (default {DEFAULT_RUNS})"
    )
    p.add_argument(
        "--step",
        type=int,
        default=None,
        help=f"count every STEP-th file of the standard library (default 1; {QUICK_STEP} "
        "with --quick)",
    )
    p.add_argument(
        "--scenarios",
        default=None,
        help=f"comma-separated scenarios to run (default: all of {', '.join(BY_KEY)})",
    )
    p.add_argument(
        "--quick", action="store_true", help=f"a smoke run: one round, every {QUICK_STEP}th file"
    )
    p.add_argument(
        "--dump-stalls",
        type=float,
        default=None,
        metavar="SECONDS",
        help="print every thread's stack of a contender whose event loop stalls longer than "
        "SECONDS (to find the cause of a lag; not for timed runs)",
    )
    p.add_argument(
        "--write-docs",
        action="store_true",
        help=f"write the section of {_common.DOCS_PAGE.relative_to(_common.REPO_ROOT)}",
    )
    p.add_argument("--contender", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        p.error("--runs must be >= 1")
    if args.step is not None and args.step < 1:
        p.error("--step must be >= 1")
    if args.dump_stalls is not None and args.write_docs:
        p.error("--dump-stalls perturbs the figures; drop --write-docs")
    if args.quick and args.write_docs:
        p.error("--quick figures are not for the docs; drop --write-docs")
    return args


def byte_compile() -> None:
    """Write the bytecode of aiomr and of these scripts, as installing a package does.

    With ``PYTHONDONTWRITEBYTECODE`` set, every contender and every worker it starts (each
    replacement too) would compile them again, which is no part of what a stop costs.
    """
    import compileall

    import aiomr

    for directory in (pathlib.Path(aiomr.__file__).parent, pathlib.Path(__file__).parent):
        if not compileall.compile_dir(directory, quiet=1):
            raise SystemExit(f"cannot byte-compile {directory}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.contender:
        key, paths_file, out, seed = args.contender
        contender_main(key, paths_file, out, int(seed))
        return 0
    if args.dump_stalls is not None:
        os.environ[DUMP_STALLS_VARIABLE] = str(args.dump_stalls)
    step = args.step or (QUICK_STEP if args.quick else 1)
    runs = args.runs or (1 if args.quick else DEFAULT_RUNS)
    scenarios = list(SCENARIOS)
    if args.scenarios:
        keys = [k.strip() for k in args.scenarios.split(",")]
        unknown = [k for k in keys if k not in BY_KEY]
        if unknown:
            raise SystemExit(f"unknown scenarios: {', '.join(unknown)}; try {', '.join(BY_KEY)}")
        scenarios = [s for s in SCENARIOS if s.key in keys]
    byte_compile()
    m = measure(step, runs, scenarios)
    body = render(m)
    print(body)
    if args.write_docs:
        _common.write_extra_section(SECTION, body)
        _common.progress(f"wrote {_common.DOCS_PAGE.relative_to(_common.REPO_ROOT)}")
    return 0 if all(r.ok for r in m.runs) else 1


if __name__ == "__main__":
    sys.exit(main())
