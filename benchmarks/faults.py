"""Lost workers: the 1 GB n-gram job with a worker SIGKILLed every few seconds, against clean runs.

The workload is the one of ``benchmarks/ngram.py`` and ``examples/ngram.py``: total the
``match_count`` of every word of the generated Google Books 1-gram file in ``/tmp/aiomr-bench/``
(1 GB, seed 0, generated once by ``examples/ngram_data.py`` if absent). Two aiomr jobs, each
on 2 worker processes, exactly as ``benchmarks/ngram.py`` runs them:

1. ``aiomr-split``: byte-range splits read by the workers (``aiomr.sources.files(...,
   encoding=None)``, ``mode="blocks"``) counted with the tight loop; the default way of
   ``examples/ngram.py``;
2. ``aiomr-keyed``: the idiomatic key-value job, ``aiomr.map_reduce_by_key`` over
   ``aiomr.sources.files`` with a mapper yielding ``(word, match_count)`` per line.

Each job runs *clean* and *under fire*. Under fire, this (the parent) process SIGKILLs one of
the job's worker processes every ``--every`` seconds (default 5). The schedule starts when the
job starts reading: the moment aiomr stamps ``JobStats.started_at`` (the workers are up and the
job's code is shipped; the first split is planned right after), which the contender's process
reports through a pipe. Kills are due at 5, 10, 15 ... s after that moment and stop when aiomr
stamps ``JobStats.finished_at``. The victim is drawn at random (a generator seeded by the
round) from the live workers: the live children of the contender's ``forkserver`` (the
forkserver itself and the resource tracker are never hit); when no worker is alive at a due
time (a pool being replaced), the kill waits for the next one to appear. Every kill is
recorded with its time, the victim's pid and what the victim was doing (its process state).
``--extra-every`` adds variants killing more often (2 s by default), to show what repeated
kills cost; they are reported apart, as an extra.

Each timed run starts a fresh Python process (``python3 benchmarks/faults.py --contender``);
variants are interleaved round by round in rotating order; figures are medians. The wall time
runs, as in ``benchmarks/ngram.py``, from just before the job is called (workers not started
yet) until the caller holds the full ``{word: total}`` dict of text. The *slowdown* is the
median over rounds of the under-fire run's wall time over the clean run's of the same job in
the same round; the *cost of a kill* is the median over rounds of that difference divided by
the kills that landed.

Every run is checked before any figure is reported:

* its totals equal, word for word, those of the practical-limit program of
  ``benchmarks/ngram.py`` (no aiomr code), computed once per benchmark, and the generator's
  figures (word count, grand total, the totals of its fixed words); its line
  ``Aardvark has appeared N times`` equals the reference's;
* its `aiomr.JobStats`: ``records == records_reduced + records_skipped``, ``records`` equals
  the file's line count (nothing lost, nothing counted twice), and ``workers_replaced`` is at
  least the number of kills that landed while the job ran (between ``started_at`` and
  ``finished_at``);
* nothing is left behind: no worker process alive once the job has returned (checked inside
  the contender, then every descendant the parent saw is checked gone once the contender has
  exited) and no ``aiomr-*`` directory the contender created (it records every ``mkdir`` of an
  ``aiomr-*`` directory with an audit hook: the code directory in ``/dev/shm``, the key-value
  job's directory in ``/tmp``) still on disk.

A run that fails a check (or whose job raises, or hangs past `RUN_TIMEOUT`) is reported with
the reason, left out of the medians, and makes the exit status 1.

Also measured: CPU seconds of the contender and all its descendants, event-loop lag (a 10 ms
ticker on the contender's loop, as in ``benchmarks/ngram.py``) and *others' load*: the cores
that processes outside this benchmark kept busy during the run, from ``/proc/stat``.

Run it alone on the machine::

    flock /tmp/aiomr-bench.lock python3 benchmarks/faults.py --write-docs
    python3 benchmarks/faults.py --quick        # a smoke run on 100 MB, a kill every 0.5 s

and ``python3 benchmarks/faults.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import operator
import os
import pickle
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import _common
import _runs
import ngram

if TYPE_CHECKING:
    import psutil

    import aiomr

Totals = dict[str, int]

DEFAULT_EVERY = 5.0
"""Seconds between two kills (``--every``)."""
DEFAULT_EXTRA_EVERY = "2"
"""The extra, more frequent kill intervals measured besides ``--every``."""
QUICK_SIZE = "100MB"
"""Large enough for a few kills per run, with tasks shorter than `QUICK_EVERY`."""
QUICK_EVERY = 0.5
DEFAULT_RUNS = 5
RUN_TIMEOUT = 600.0
"""Seconds after which a contender run is killed and reported as hung."""
WATCH_SECONDS = 0.25
"""How often the parent lists the contender's descendants (both clean and under fire)."""
VICTIM_POLL = 0.01
"""How often the parent looks again for a live worker when a kill is due and none is alive."""
GONE_GRACE = 2.0
"""Seconds processes get to exit before one still alive counts as left behind."""
TARGET_SLOWDOWN = 1.5
SECTION = "faults"
HEADING = "Lost workers"


# The jobs: exactly those of benchmarks/ngram.py, with a JobStats to read ------------------------


async def split_job(path: str, stats: aiomr.JobStats) -> Totals:
    """``aiomr-split`` of ``benchmarks/ngram.py`` (``examples/ngram.py``'s default way)."""
    import aiomr
    import aiomr.sources

    empty: dict[bytes, int] = {}
    totals = await aiomr.map_reduce(
        aiomr.sources.files(path, encoding=None, format="tsv", fields=4),
        ngram.count_blocks,
        ngram.merge_bytes_totals,
        initial=empty,
        mode="blocks",
        max_workers=ngram.WORKERS,
        stats=stats,
    )
    return await asyncio.to_thread(ngram.decode_totals, totals)


async def keyed_job(path: str, stats: aiomr.JobStats) -> Totals:
    """``aiomr-keyed`` of ``benchmarks/ngram.py``: the idiomatic key-value job."""
    import aiomr
    import aiomr.sources

    return await aiomr.map_reduce_by_key(
        aiomr.sources.files(path),
        ngram.word_and_count,
        operator.add,
        max_workers=ngram.WORKERS,
        stats=stats,
    )


@dataclass(frozen=True)
class Job:
    key: str
    label: str
    run: Callable[[str, aiomr.JobStats], Awaitable[Totals]]


JOBS: tuple[Job, ...] = (
    Job("aiomr-split", 'byte-range splits, tight loop (`mode="blocks"`)', split_job),
    Job("aiomr-keyed", "idiomatic key-value job (`map_reduce_by_key`)", keyed_job),
)
JOB_BY_KEY = {job.key: job for job in JOBS}


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
        return f"{JOB_BY_KEY[self.job].label}, {how}"


# Inside a contender's process ------------------------------------------------------------------


def signalling_stats(fd: int) -> aiomr.JobStats:
    """Return a `aiomr.JobStats` that writes ``started_at`` and ``finished_at`` to ``fd``.

    The parent starts its kill schedule on the first and stops it on the second, so both
    processes use the same instants (``time.monotonic`` is one clock for the whole machine).
    """
    import aiomr

    class SignallingStats(aiomr.JobStats):
        def __setattr__(self, name: str, value: Any) -> None:
            super().__setattr__(name, value)
            if name in ("started_at", "finished_at") and value is not None:
                os.write(fd, f"{name} {value!r}\n".encode("ascii"))

    return SignallingStats()


def is_forkserver(process: psutil.Process) -> bool:
    """Tell the ``multiprocessing`` forkserver from other children (the resource tracker)."""
    return any("multiprocessing.forkserver" in part for part in process.cmdline())


def live_workers(root: psutil.Process) -> list[psutil.Process]:
    """Return the live worker processes of ``root``: children of its forkserver, not zombies."""
    import psutil

    workers: list[psutil.Process] = []
    for child in root.children():
        with contextlib.suppress(psutil.Error):
            if not is_forkserver(child):
                continue
            for worker in child.children():
                with contextlib.suppress(psutil.Error):
                    if worker.status() != psutil.STATUS_ZOMBIE:
                        workers.append(worker)
    return workers


def _still_there(paths: Sequence[str]) -> list[str]:
    """The directories of ``paths`` (or their ``-removing`` stage) that exist."""
    return [p for path in paths for p in (path, f"{path}-removing") if os.path.lexists(p)]


def contender_main(key: str, path: str, out: str, fd: int) -> None:
    """Run one job once and write its totals, stats and measurements to ``out``."""
    import psutil

    import aiomr
    import aiomr.sources  # imported before the clock starts

    created: list[str] = []
    sys.addaudithook(_runs.record_aiomr_directories(created))
    stats = signalling_stats(fd)
    job = JOB_BY_KEY[key]
    error: str | None = None
    totals: Totals = {}
    lags: list[float] | None = None
    cpu_before = ngram._own_cpu_seconds()
    started = time.perf_counter()
    try:
        totals, lags = aiomr.run(ngram._with_ticker(job.run(path, stats)))
    except Exception as exc:
        notes = " ".join(getattr(exc, "__notes__", []))
        error = f"{type(exc).__name__}: {exc}{' ' + notes if notes else ''}"
    wall = time.perf_counter() - started
    cpu = ngram._own_cpu_seconds() - cpu_before + ngram._live_descendants_cpu_seconds()
    me = psutil.Process()
    deadline = time.monotonic() + GONE_GRACE
    while (workers := live_workers(me)) and time.monotonic() < deadline:
        time.sleep(0.05)
    times = os.times()
    report = {
        "totals": totals,
        "error": error,
        "wall": wall,
        "cpu": cpu,
        "cpu_total": times.user
        + times.system
        + times.children_user
        + times.children_system
        + ngram._live_descendants_cpu_seconds(),
        "lags": lags,
        "stats": {
            name: getattr(stats, name)
            for name in (
                "records",
                "records_reduced",
                "records_skipped",
                "chunks",
                "chunks_done",
                "chunks_retried",
                "workers_replaced",
                "partitions_done",
                "task_seconds",
                "started_at",
                "finished_at",
            )
        },
        "worker_pids": sorted(stats.worker_pids),
        "workers_left": [w.pid for w in workers],
        "created": created,
        "dirs_left": _still_there(created),
    }
    with open(out, "wb") as f:
        pickle.dump(report, f, pickle.HIGHEST_PROTOCOL)


# In the parent: the kill schedule --------------------------------------------------------------


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


class KillSchedule(threading.Thread):
    """Watch one contender's processes; with ``every``, SIGKILL a worker every ``every`` s.

    Reads ``started_at``/``finished_at`` lines from the contender's pipe; lists the
    contender's descendants every `WATCH_SECONDS` (clean runs too, so both pay the same) to
    know every process to check for after the run.
    """

    def __init__(self, pid: int, fd: int, every: float | None, seed: int = 0) -> None:
        super().__init__(daemon=True)
        import psutil

        self._psutil = psutil
        self._root = psutil.Process(pid)
        self._fd = fd
        self._every = every
        self._random = random.Random(seed)
        self._buffer = b""
        self._eof = False
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.kills: list[Kill] = []
        self.seen: dict[int, tuple[float, str]] = {}
        """Every descendant seen: pid -> (creation time, role)."""
        self.failure: str | None = None

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # reported with the run; never a silent thread death
            self.failure = f"the kill schedule failed: {type(exc).__name__}: {exc}"

    def _run(self) -> None:
        k = 1
        next_look = 0.0
        while not self._eof:
            now = time.monotonic()
            if now >= next_look:
                self._look()
                next_look = now + WATCH_SECONDS
            due = None
            firing = self.started_at is not None and self.finished_at is None
            if self._every is not None and self.started_at is not None and firing:
                due = self.started_at + k * self._every
            wait = next_look - now if due is None else min(next_look, due) - now
            if wait > 0:
                self._read(wait)
                continue
            if due is not None and now >= due:
                if self._kill_one():
                    since = time.monotonic() - self.started_at if self.started_at else 0.0
                    k = int(since // self._every) + 1 if self._every else k + 1
                else:
                    self._read(VICTIM_POLL)

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return
        data = os.read(self._fd, 4096)
        if not data:
            self._eof = True
            return
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            name, _, value = line.decode("ascii").partition(" ")
            if name == "started_at" and self.started_at is None:
                self.started_at = float(value)
            elif name == "finished_at" and self.finished_at is None:
                self.finished_at = float(value)

    def _look(self) -> None:
        psutil = self._psutil
        try:
            children = self._root.children(recursive=True)
        except psutil.Error:
            return
        for child in children:
            if child.pid in self.seen:
                continue
            with contextlib.suppress(psutil.Error):
                ppid = child.ppid()
                if ppid == self._root.pid:
                    role = "forkserver" if is_forkserver(child) else "helper process"
                else:
                    parent = self.seen.get(ppid)
                    if parent is None and is_forkserver(psutil.Process(ppid)):
                        parent = (0.0, "forkserver")
                    role = "worker" if parent is not None and parent[1] == "forkserver" else "?"
                self.seen[child.pid] = (child.create_time(), role)

    def _kill_one(self) -> bool:
        psutil = self._psutil
        try:
            workers = live_workers(self._root)
        except psutil.Error:
            return False
        # In a stable order (by pid) before the draw, so a seed gives the same choices.
        workers.sort(key=lambda p: p.pid)
        self._random.shuffle(workers)
        for victim in workers:
            try:
                self.seen.setdefault(victim.pid, (victim.create_time(), "worker"))
                state = victim.status()
                victim.send_signal(signal.SIGKILL)
            except psutil.Error:
                continue
            at = time.monotonic() - (self.started_at or 0.0)
            self.kills.append(Kill(round(at, 4), victim.pid, state))
            return True
        return False


# In the parent: one run ------------------------------------------------------------------------


@dataclass
class Run:
    """One timed run of one variant."""

    variant: str
    round: int
    wall: float = math.nan
    cpu: float = math.nan
    others: float = math.nan
    """Cores that processes outside this benchmark kept busy, on average, during the run."""
    job_seconds: float = math.nan
    """From ``started_at`` to ``finished_at``."""
    kills: list[Kill] = field(default_factory=list)
    records: int = 0
    records_reduced: int = 0
    records_skipped: int = 0
    chunks: int = 0
    """Map tasks (one per split), each counted once however often it ran."""
    tasks_done: int = 0
    """Map and reduce tasks that delivered their result."""
    task_seconds: float = 0.0
    """Seconds spent in those tasks, measured in the workers."""
    chunks_retried: int = 0
    workers_replaced: int = 0
    lag_p99: float | None = None
    lag_max: float | None = None
    error: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.problems

    @property
    def landed(self) -> int:
        return sum(k.landed for k in self.kills)


def _gone(pid: int, created: float) -> bool:
    import psutil

    try:
        process = psutil.Process(pid)
        return process.create_time() != created or process.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def left_behind(seen: dict[int, tuple[float, str]]) -> list[str]:
    """Describe the processes of ``seen`` still alive after a grace period, and kill them.

    They are this benchmark's own contender's descendants, found by pid and creation time.
    """
    import psutil

    deadline = time.monotonic() + GONE_GRACE
    alive = dict(seen)
    while alive:
        alive = {pid: info for pid, info in alive.items() if not _gone(pid, info[0])}
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid in alive:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()
    return [
        f"{role} {pid} still running after the contender exited" for pid, (_, role) in alive.items()
    ]


def _line(totals: Totals) -> str:
    return f"Aardvark has appeared {totals.get('Aardvark', 0)} times"


def answer_problems(totals: Totals, reference: Totals, expected: ngram.Expected) -> list[str]:
    """Say how ``totals`` differs from the reference and the generator's figures, if it does."""
    problems = []
    if _line(totals) != _line(reference):
        problems.append(f"{_line(totals)!r}, but the reference says {_line(reference)!r}")
    if totals != reference:
        wrong = sorted(
            w for w in reference.keys() | totals.keys() if totals.get(w) != reference.get(w)
        )
        shown = ", ".join(f"{w!r}: {totals.get(w)} != {reference.get(w)}" for w in wrong[:5])
        problems.append(f"{len(wrong):,} words differ from the reference: {shown}")
    try:
        ngram.check_against_generator("run", totals, expected)
    except SystemExit as exc:
        problems.append(str(exc))
    return problems


def stats_problems(run: Run, expected: ngram.Expected) -> list[str]:
    """Check the job's accounting against itself, the file and the kills that landed."""
    problems = []
    if run.records != run.records_reduced + run.records_skipped:
        problems.append(
            f"records {run.records:,} != records_reduced {run.records_reduced:,} + "
            f"records_skipped {run.records_skipped:,}"
        )
    if run.records != expected.lines:
        problems.append(f"records {run.records:,}, but the file has {expected.lines:,} lines")
    if run.workers_replaced < run.landed:
        problems.append(
            f"{run.landed} kills landed while the job ran, but only {run.workers_replaced} "
            "workers were replaced"
        )
    return problems


def run_once(
    variant: Variant,
    path: str,
    round_: int,
    reference: Totals,
    expected: ngram.Expected,
) -> Run:
    """Run ``variant`` once in a fresh Python process, under fire if it says so; check it."""
    run = Run(variant.key, round_)
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        out = os.path.join(tmp, "report.pkl")
        read_fd, write_fd = os.pipe()
        command = [sys.executable, __file__, "--contender", variant.job, path, out, str(write_fd)]
        busy, ours, began = _common.busy_cpu_seconds(), _runs.own_cpu(), time.perf_counter()
        try:
            process = subprocess.Popen(command, stdout=sys.stderr, pass_fds=(write_fd,))
        finally:
            os.close(write_fd)
        schedule = KillSchedule(process.pid, read_fd, variant.every, seed=round_)
        schedule.start()
        try:
            code = process.wait(RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            run.error = f"hung: no result after {RUN_TIMEOUT:.0f} s; killed"
            process.kill()
            code = process.wait()
        schedule.join()
        os.close(read_fd)
        elapsed = time.perf_counter() - began
        report: dict[str, Any] | None = None
        if os.path.exists(out):
            with open(out, "rb") as f:
                report = pickle.load(f)
        elif run.error is None:
            run.error = f"the contender's process exited with {code} and no report"
    run.problems += left_behind(schedule.seen)
    if schedule.failure:
        run.problems.append(schedule.failure)
    finished = schedule.finished_at
    for kill in schedule.kills:
        kill.landed = kill.at >= 0 and (
            finished is None
            or schedule.started_at is None
            or kill.at + schedule.started_at <= finished
        )
    run.kills = schedule.kills
    if report is None:
        return run
    run.others = max(
        0.0,
        (_common.busy_cpu_seconds() - busy - (_runs.own_cpu() - ours) - report["cpu_total"])
        / elapsed,
    )
    run.wall, run.cpu = report["wall"], report["cpu"]
    stats = report["stats"]
    for name in ("records", "records_reduced", "records_skipped", "chunks", "chunks_retried"):
        setattr(run, name, stats[name])
    run.workers_replaced = stats["workers_replaced"]
    run.tasks_done = stats["chunks_done"] + stats["partitions_done"]
    run.task_seconds = stats["task_seconds"]
    if stats["started_at"] is not None and stats["finished_at"] is not None:
        run.job_seconds = stats["finished_at"] - stats["started_at"]
    lags: list[float] | None = report["lags"]
    if lags:
        run.lag_p99 = _common.percentile(lags, 99)
        run.lag_max = max(lags)
    if report["workers_left"]:
        run.problems.append(f"workers {report['workers_left']} alive after the job returned")
    for directory in _still_there(report["created"]):
        shutil.rmtree(directory, ignore_errors=True)
    if report["dirs_left"]:
        run.problems.append(f"directories left: {', '.join(report['dirs_left'])}")
    if report["error"] is not None:
        run.error = report["error"]
        return run
    run.problems += answer_problems(report["totals"], reference, expected)
    run.problems += stats_problems(run, expected)
    return run


# Measuring -------------------------------------------------------------------------------------


@dataclass
class Measurements:
    """Every run of the benchmark, and what it ran on."""

    expected: ngram.Expected
    every: float
    extra_every: list[float]
    variants: list[str] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    rounds: int = 0
    machine: str = ""
    aiomr: str = ""
    seconds: float = 0.0
    reference_seconds: float = 0.0

    def of(self, key: str, *, ok: bool = True) -> list[Run]:
        return [r for r in self.runs if r.variant == key and (r.ok or not ok)]


def variants_for(jobs: Sequence[str], every: float, extra: Sequence[float]) -> list[Variant]:
    out: list[Variant] = []
    for job in jobs:
        out += [Variant(job), Variant(job, every)]
        out += [Variant(job, e, extra=True) for e in extra if e != every]
    return out


def describe_run(run: Run) -> str:
    kills = ", ".join(
        f"{k.at:.2f} s ({k.state}{'' if k.landed else ', after the end'})" for k in run.kills
    )
    text = (
        f"{run.wall:.2f} s, CPU {run.cpu:.1f} s, others' load {run.others:.2f}, "
        f"kills: {kills or 'none'}; retried {run.chunks_retried}, "
        f"replaced {run.workers_replaced}, records {run.records:,}"
    )
    if run.lag_p99 is not None and run.lag_max is not None:
        text += f", loop lag p99 {run.lag_p99 * 1e3:.1f} ms max {run.lag_max * 1e3:.1f} ms"
    if run.error:
        text += f"\n  FAILED: {run.error}"
    for problem in run.problems:
        text += f"\n  PROBLEM: {problem}"
    return text


def measure(
    variants: Sequence[Variant],
    expected: ngram.Expected,
    runs: int,
    every: float,
    extra: list[float],
    save_to: Path | None = None,
) -> Measurements:
    """Run every variant ``runs`` times, interleaved in rotating order; check every run.

    With ``save_to``, the measurements so far are saved after every run.
    """
    m = Measurements(expected, every, extra, [v.key for v in variants], rounds=runs)
    m.machine = _common.machine_line()
    m.aiomr = dict(_common.machine_rows())["aiomr"]
    began = time.perf_counter()
    _common.progress(f"warming the page cache with {expected.path}")
    ngram.warm_page_cache(expected.path)
    _common.progress("computing the reference totals with the practical-limit program")
    started = time.perf_counter()
    reference, _ = ngram.run_limit(expected.path)
    m.reference_seconds = time.perf_counter() - started
    ngram.check_against_generator("reference", reference, expected)
    for round_ in range(runs):
        for variant in _common.rotated(list(variants), round_):
            run = run_once(variant, expected.path, round_, reference, expected)
            m.runs.append(run)
            _common.progress(f"round {round_ + 1}/{runs} {variant.key}: {describe_run(run)}")
            m.seconds = time.perf_counter() - began
            if save_to is not None:
                save(m, save_to)
    return m


# Reporting -------------------------------------------------------------------------------------


def paired(m: Measurements, job: str, every: float) -> list[tuple[Run, Run]]:
    """The (clean, under fire) pairs of one round each, both successful."""
    clean = {r.round: r for r in m.of(Variant(job).key)}
    fire = {r.round: r for r in m.of(Variant(job, every).key)}
    return [(clean[k], fire[k]) for k in sorted(clean.keys() & fire.keys())]


def slowdown(m: Measurements, job: str, every: float) -> tuple[float, float, float]:
    """Median, lowest and highest over rounds of under-fire wall time over clean wall time."""
    ratios = [f.wall / c.wall for c, f in paired(m, job, every)]
    if not ratios:
        return math.nan, math.nan, math.nan
    return _common.median(ratios), min(ratios), max(ratios)


def cost_per_kill(m: Measurements, job: str, every: float) -> float:
    """Median over rounds of (under-fire wall - clean wall) / kills that landed."""
    return _runs.median_of(
        [(f.wall - c.wall) / f.landed for c, f in paired(m, job, every) if f.landed]
    )


def variant_table(m: Measurements, keys: Sequence[str]) -> str:
    headers = [
        "job",
        "runs ok",
        "wall (median)",
        "range",
        "CPU s",
        "kills per run",
        "chunks retried",
        "workers replaced",
        "loop lag p99 / max",
        "others' load",
    ]
    by_key = {v.key: v for v in all_variants(m)}
    rows = []
    for key in keys:
        runs, every = m.of(key), by_key[key].every
        total = len(m.of(key, ok=False))
        walls = [r.wall for r in runs]
        lag_p99 = _runs.median_of([r.lag_p99 or math.nan for r in runs])
        lag_max = max((r.lag_max or 0.0 for r in runs), default=math.nan)
        rows.append(
            [
                by_key[key].label,
                f"{len(runs)} of {total}",
                _runs.na(_runs.median_of(walls), ".2f", " s"),
                f"{min(walls):.2f} to {max(walls):.2f} s" if walls else "n/a",
                _runs.na(_runs.median_of([r.cpu for r in runs]), ".1f"),
                _runs.per_run([r.landed for r in runs]) if every is not None else "0",
                _runs.per_run([r.chunks_retried for r in runs]),
                _runs.per_run([r.workers_replaced for r in runs]),
                f"{_runs.na(lag_p99 * 1e3, '.1f')} / {_runs.na(lag_max * 1e3, '.1f')} ms",
                _runs.na(_runs.median_of([r.others for r in runs]), ".2f"),
            ]
        )
    return _common.markdown_table(headers, rows)


def all_variants(m: Measurements) -> list[Variant]:
    jobs = [job.key for job in JOBS if any(k.startswith(job.key + ":") for k in m.variants)]
    return variants_for(jobs, m.every, m.extra_every)


def slowdown_table(m: Measurements) -> str:
    headers = [
        "job",
        "kill every",
        "runs ok (clean, under fire)",
        "slowdown (median)",
        "range",
        "cost of one kill",
        f"target: exact, < {TARGET_SLOWDOWN}x",
    ]
    rows = []
    for v in all_variants(m):
        if v.every is None:
            continue
        ratio, low, high = slowdown(m, v.job, v.every)
        runs = [m.of(key, ok=False) for key in (Variant(v.job).key, v.key)]
        failed = sum(not r.ok for group in runs for r in group)
        target = (
            "n/a (extra)" if v.extra else _common.verdict(failed == 0 and ratio < TARGET_SLOWDOWN)
        )
        if failed and not v.extra:
            target += f" ({failed} run{'s' if failed > 1 else ''} failed)"
        rows.append(
            [
                JOB_BY_KEY[v.job].label + (" (extra)" if v.extra else ""),
                f"{v.every:g} s",
                ", ".join(f"{sum(r.ok for r in group)} of {len(group)}" for group in runs),
                _runs.na(ratio, ".2f", "x"),
                f"{low:.2f} to {high:.2f}x" if not math.isnan(low) else "n/a",
                _runs.na(cost_per_kill(m, v.job, v.every), ".2f", " s"),
                target,
            ]
        )
    return _common.markdown_table(headers, rows)


def failure_table(m: Measurements) -> str:
    """One row per run that failed: when its kills came and what went wrong."""
    by_key = {v.key: v for v in all_variants(m)}
    rows = []
    for run in m.runs:
        if run.ok:
            continue
        reasons = ([run.error] if run.error else []) + run.problems
        # The data file's full path, twice in every message about a split, says nothing more.
        reasons = [r.replace(m.expected.path, Path(m.expected.path).name) for r in reasons]
        rows.append(
            [
                str(run.round + 1),
                by_key[run.variant].label if run.variant in by_key else run.variant,
                ", ".join(f"{k.at:.2f}" for k in run.kills) or "none",
                "; ".join(reasons).replace("|", "\\|"),
            ]
        )
    return _common.markdown_table(
        ["round", "run", "kills at (s)", "what failed"], rows, left=(1, 3)
    )


def kill_schedule_note(m: Measurements) -> str:
    """Say when the kills that landed came, against when they were due."""
    late = [
        k.at - round(k.at / v.every) * v.every
        for v in all_variants(m)
        if v.every is not None
        for r in m.of(v.key, ok=False)
        for k in r.kills
        if k.landed
    ]
    if not late:
        return "No kill landed."
    return (
        f"{len(late)} kills landed in all, each between {min(late) * 1e3:.0f} and "
        f"{max(late) * 1e3:.0f} ms after its due time."
    )


def tasks_note(m: Measurements) -> str:
    """Say how long the clean runs' tasks took: what a kill can throw away."""
    notes = []
    for job in JOBS:
        runs = m.of(Variant(job.key).key)
        if not runs:
            continue
        splits = _runs.median_of([r.chunks for r in runs])
        mean = _runs.median_of([r.task_seconds / r.tasks_done for r in runs if r.tasks_done])
        what = (
            f"its {splits:.0f} map tasks (one per split of about "
            f"{m.expected.size_bytes / splits / 1e6:.0f} MB)"
        )
        if job.key == "aiomr-keyed":
            what += " and its reduce tasks (one per partition)"
        notes.append(f"the {_short(job.key)} job ran {what} in {mean:.2f} s each on average")
    if not notes:
        return ""
    return f"In the clean runs, {'; '.join(notes)}."


def _short(job: str) -> str:
    return "split" if job == "aiomr-split" else "key-value"


def load_note(m: Measurements) -> str:
    """Warn when other processes kept the shared machine busy during the runs."""
    loads = [r.others for r in m.runs if not math.isnan(r.others)]
    others = _runs.median_of(loads)
    if math.isnan(others) or others < 0.25:
        return ""
    return (
        f" The machine was shared: processes outside the benchmark kept {others:.2f} cores "
        f"busy on average (median over runs; up to {max(loads):.2f}), so "
        "wall times are longer than on an idle machine; slowdowns compare runs of the same "
        "round."
    )


def render(m: Measurements) -> str:
    """Return the docs section: what was measured, the tables and what a kill costs."""
    e = m.expected
    main_keys = [v.key for v in all_variants(m) if not v.extra]
    extra_keys = [v.key for v in all_variants(m) if v.extra]
    all_ok = all(r.ok for r in m.runs)
    costs = [
        f"{_runs.na(cost_per_kill(m, job.key, m.every), '.2f', ' s')} for the {_short(job.key)} job"
        for job in JOBS
        if any(v.job == job.key for v in all_variants(m))
    ]
    parts = [
        f"## {HEADING}",
        "",
        f"{m.machine} aiomr {m.aiomr}." if m.aiomr else m.machine,
        "",
        "The workload of the n-gram benchmark above (`examples/ngram.py`): total the "
        f"`match_count` of every word of the generated 1-gram file (seed {ngram.SEED}: "
        f"{e.size_bytes / 1e6:,.0f} MB, {e.lines:,} lines, {e.words:,} distinct words), "
        f"already in the page cache, on {ngram.WORKERS} worker processes, with two aiomr "
        "jobs exactly as that benchmark runs them: the byte-range split job (the default way "
        "of `examples/ngram.py`) and the idiomatic key-value job (`map_reduce_by_key` over "
        "`aiomr.sources.files`). Each runs clean and *under fire*: the benchmark's process "
        f"sends SIGKILL to one of the job's worker processes every {m.every:g} seconds, the "
        f"first {m.every:g} s after the job starts reading (the moment aiomr stamps "
        "`JobStats.started_at`: workers up, code shipped, first split about to be planned), "
        "none once the job has ended (`JobStats.finished_at`). The victim is one of the live "
        "workers (children of the job's `forkserver`, never the forkserver itself), drawn at "
        "random with a generator seeded by the round."
        + (
            f" Runs killing a worker every {', '.join(f'{x:g}' for x in m.extra_every)} s are "
            "an extra, to show what repeated kills cost; the target is for the "
            f"{m.every:g}-second schedule."
            if extra_keys
            else ""
        ),
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
        f"`{_line({'Aardvark': e.totals.get('Aardvark', 0)})}`. Its `JobStats` had `records "
        f"== records_reduced + records_skipped == {e.lines:,}` (the file's lines: none lost, "
        "none counted twice) and at least as many `workers_replaced` as kills that landed; no "
        "worker process and no `aiomr-*` directory (in `/dev/shm` or `/tmp`) outlived it. Runs "
        "that failed a check are left out of the figures." + load_note(m),
        "",
        variant_table(m, main_keys),
        "",
    ]
    if extra_keys:
        parts += [
            "Extra: more frequent kills.",
            "",
            variant_table(m, extra_keys),
            "",
        ]
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
        f"a kill every {m.every:g} s, one kill cost {' and '.join(costs)}. " + tasks_note(m),
        "",
        kill_schedule_note(m),
        "",
    ]
    if not all_ok:
        parts += ["### Runs that failed a check", "", failure_table(m), ""]
        poisoned = [r for r in m.runs if r.error and "max_attempts" in r.error]
        if poisoned:
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


# Saving and loading measurements ---------------------------------------------------------------


def save(m: Measurements, path: Path) -> None:
    path.write_text(json.dumps(dataclasses.asdict(m), indent=1), encoding="utf-8")


def load(path: Path) -> Measurements:
    data = json.loads(path.read_text(encoding="utf-8"))
    data["expected"] = ngram.Expected(**data["expected"])
    runs = []
    for r in data["runs"]:
        r["kills"] = [Kill(**k) for k in r["kills"]]
        runs.append(Run(**r))
    data["runs"] = runs
    return Measurements(**data)


# Command line ----------------------------------------------------------------------------------


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--size", default=None, help=f"input size (default {ngram.DEFAULT_SIZE})")
    p.add_argument(
        "--runs", type=int, default=None, help=f"rounds of every variant (default {DEFAULT_RUNS})"
    )
    p.add_argument(
        "--every",
        type=_seconds,
        default=None,
        help=f"seconds between two kills (default {DEFAULT_EVERY:g}; {QUICK_EVERY:g} with --quick)",
    )
    p.add_argument(
        "--extra-every",
        default=None,
        help="comma-separated extra kill intervals, reported apart "
        f"(default {DEFAULT_EXTRA_EVERY}; none with --quick; 'none' for none)",
    )
    p.add_argument(
        "--jobs",
        default=None,
        help=f"comma-separated jobs to run (default: {', '.join(JOB_BY_KEY)})",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run on {QUICK_SIZE}, once, a kill every {QUICK_EVERY:g} s",
    )
    p.add_argument(
        "--write-docs",
        action="store_true",
        help=f"write the section of {_common.DOCS_PAGE.relative_to(_common.REPO_ROOT)}",
    )
    p.add_argument(
        "--save",
        type=Path,
        default=None,
        help="save the raw measurements to this JSON file (after every run)",
    )
    p.add_argument(
        "--load", type=Path, default=None, help="report measurements saved by --save, run nothing"
    )
    p.add_argument("--contender", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        p.error("--runs must be >= 1")
    if args.quick and args.write_docs:
        p.error("--quick figures are not for the docs; drop --write-docs")
    return args


def _extra(text: str | None, quick: bool) -> list[float]:
    if text is None:
        text = "none" if quick else DEFAULT_EXTRA_EVERY
    if text.strip().lower() in ("", "none"):
        return []
    try:
        return [_seconds(part) for part in text.split(",")]
    except (ValueError, argparse.ArgumentTypeError):
        raise SystemExit(f"--extra-every: not a list of positive seconds: {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.contender:
        key, path, out, fd = args.contender
        contender_main(key, path, out, int(fd))
        return 0
    if args.load is not None:
        m = load(args.load)
    else:
        sys.path.append(str(_common.REPO_ROOT / "examples"))  # after benchmarks/: two ngram.py
        from ngram_data import parse_size

        size = parse_size(args.size or (QUICK_SIZE if args.quick else ngram.DEFAULT_SIZE))
        runs = args.runs or (1 if args.quick else DEFAULT_RUNS)
        every = args.every or (QUICK_EVERY if args.quick else DEFAULT_EVERY)
        extra = _extra(args.extra_every, args.quick)
        jobs = list(JOB_BY_KEY)
        if args.jobs:
            jobs = [j.strip() for j in args.jobs.split(",")]
            unknown = [j for j in jobs if j not in JOB_BY_KEY]
            if unknown:
                raise SystemExit(f"unknown jobs: {', '.join(unknown)}; try {', '.join(JOB_BY_KEY)}")
        expected = ngram.ensure_input(size)
        m = measure(variants_for(jobs, every, extra), expected, runs, every, extra, args.save)
    body = render(m)
    print(body)
    if args.write_docs:
        _common.write_extra_section(SECTION, body)
        _common.progress(f"wrote {_common.DOCS_PAGE.relative_to(_common.REPO_ROOT)}")
    return 0 if all(r.ok for r in m.runs) else 1


if __name__ == "__main__":
    sys.exit(main())
