"""Run each contender in a fresh process of its own, measure it from outside, check it left
nothing behind, and keep every run with what its checks found.

The contender's side (its own CPU time, peak RSS and the directories it made) is
`_machine.contender_main`.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _harness as h
from _machine import AUDIT, GONE_GRACE, busy_cpu_seconds, own_cpu, proc_stat

SAMPLE_SECONDS = 0.05
"""Interval of the memory sampler; it lists the descendants again every fourth sample
(listing them scans all of /proc, which costs CPU the contenders would rather have)."""


@dataclass
class Run:
    """One timed run of one variant, and what its checks found."""

    key: str
    round: int
    wall: float = math.nan
    cpu: float = math.nan
    others: float = math.nan
    """Cores that processes outside the benchmark kept busy, on average, during the run."""
    caller_peak: int = 0
    tree_peak: int = 0
    lag_p99: float = math.nan
    lag_max: float = math.nan
    ticks: int = 0
    error: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.problems

    def lags(self, lateness: Sequence[float] | None) -> None:
        """Keep the p99 and max of the ticker's lateness."""
        if lateness:
            self.lag_p99, self.lag_max = h.percentile(lateness, 99), max(lateness)
            self.ticks = len(lateness)


def load_note(m: h.Measurements, compared: str) -> str:
    """Warn when other processes kept the shared machine busy during the runs."""
    loads = [r.others for r in m.runs if not math.isnan(r.others)]
    others = h.median(loads)
    if math.isnan(others) or others < 0.25:
        return ""
    return (
        f" The machine was shared: processes outside the benchmark kept {others:.2f} cores "
        f"busy on average (median over runs; up to {max(loads):.2f}), so wall times are longer "
        f"than on an idle machine; {compared} compare runs of the same round."
    )


def failure_table(m: h.Measurements, labels: dict[str, str], name: str = "run") -> str:
    """One row per run that failed a check: its round, its variant and what went wrong."""
    rows = [
        [
            str(r.round + 1),
            labels.get(r.key, r.key),
            "; ".join(([r.error] if r.error else []) + r.problems).replace("|", "\\|"),
        ]
        for r in m.runs
        if not r.ok
    ]
    return h.markdown_table(["round", name, "what failed"], rows, left=(1, 2))


# Fresh processes -------------------------------------------------------------------------------


class TreeSampler:
    """Sample, in a thread, the RSS of a process (and of its whole tree) every ``every`` s."""

    def __init__(self, pid: int, every: float = SAMPLE_SECONDS, *, tree: bool = True) -> None:
        import psutil

        self._root, self._every, self._tree = psutil.Process(pid), every, tree
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._children: list[psutil.Process] = []
        self.start = self.caller_peak = self._root.memory_info().rss
        self.tree_peak = self.largest_child = 0

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(-1)

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set() and self._sample(tick):
            tick += 1
            self._stop.wait(self._every)

    def _sample(self, tick: int) -> bool:
        import psutil

        try:
            caller = self._root.memory_info().rss
            if self._tree and tick % 4 == 0:
                self._children = self._root.children(recursive=True)
        except psutil.Error:
            return False  # the process has exited
        tree = caller
        for child in self._children:
            with contextlib.suppress(psutil.Error):
                size = child.memory_info().rss
                tree += size
                self.largest_child = max(self.largest_child, size)
        self.caller_peak = max(self.caller_peak, caller)
        self.tree_peak = max(self.tree_peak, tree)
        return True


@dataclass
class Child:
    """What one contender's process reported, and what was seen of it from outside."""

    report: dict[str, Any] | None
    """What the contender returned, and what `contender_main` adds."""
    error: str | None
    others: float
    """Cores that processes outside the benchmark kept busy, on average, meanwhile."""
    caller_peak: int = 0
    tree_peak: int = 0
    largest_child: int = 0
    log: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    """Processes and directories that outlived the contender (killed and removed)."""

    def require(self, what: str) -> dict[str, Any]:
        """Return the report, or stop the benchmark saying what failed."""
        if self.report is None or self.error is not None:
            raise SystemExit(f"{what}: {self.error or 'no report'}")
        return self.report


SETTLE_LOAD = 0.25
"""Cores the rest of the machine may keep busy when a contender starts (see `settle`)."""
SETTLE_WINDOW = 0.25
SETTLE_LIMIT = 10.0
LARGE = 2 << 30
"""A contender whose processes held more than this many bytes at once is large."""
AFTER_LARGE = 15.0
"""Seconds the next contender waits after a large one ended (see `settle`)."""
_large_ended: float | None = None


def settle() -> float:
    """Wait until the machine is about idle, at most `SETTLE_LIMIT` seconds, and at least
    `AFTER_LARGE` seconds after a large contender ended; return the wait.

    A contender that ends leaves work behind it: a server's threads winding down, the kernel
    taking back gigabytes a large one held. The next contender would pay for it: seen here,
    a 2.5 s job run right after a contender of 4.7 GB had its event loop woken up to 30 ms
    late while it allocated, and not once 15 s later, though the CPUs looked idle throughout.
    So each contender starts once the machine has kept fewer than `SETTLE_LOAD` cores busy
    over a `SETTLE_WINDOW`, and `AFTER_LARGE` seconds after a large one.
    """
    began = time.perf_counter()
    if _large_ended is not None:
        time.sleep(max(0.0, AFTER_LARGE - (time.monotonic() - _large_ended)))
    while time.perf_counter() - began < SETTLE_LIMIT + AFTER_LARGE:
        busy = busy_cpu_seconds()
        time.sleep(SETTLE_WINDOW)
        if (busy_cpu_seconds() - busy) / SETTLE_WINDOW < SETTLE_LOAD:
            break
    return time.perf_counter() - began


def record(m: h.Measurements, key: str, round_: int, child: Child, report: dict[str, Any]) -> Run:
    """Keep a contender's run of an n-gram-style benchmark: its times, its process tree's
    peak memory and its loop's lag (``report["lags"]``), and say so."""
    run = Run(key, round_, report["wall"], report["cpu"])
    run.caller_peak, run.tree_peak = child.caller_peak, child.tree_peak
    run.lags(report["lags"])
    lag = f", loop lag p99 {run.lag_p99 * 1e3:.1f} ms" if run.ticks else ""
    m.add(run, f"{run.wall:.2f} s, CPU {run.cpu:.1f} s, caller {h.mb(run.caller_peak)}{lag}")
    return run


def run_child(
    script: str | Path,
    args: Sequence[str],
    *,
    timeout: float,
    pass_fds: Sequence[int] = (),
    watch: Callable[[int], contextlib.AbstractContextManager[object]] | None = None,
    audit: bool = False,
) -> Child:
    """Run ``script --contender *args OUT`` in a fresh process of its own session; return what
    it wrote to ``OUT``, with its tree's peak RSS, the others' load and what it left behind.

    ``watch(pid)`` is entered while the contender runs. A contender past ``timeout`` seconds
    is killed with all its processes. The contender leads a session of its own, which its
    forkserver and every worker inherit: a process of that session alive once it has exited
    (after `GONE_GRACE`) was left behind. With ``audit``, so is any ``aiomr-*`` directory it
    made (an audit hook in the contender records them).
    """
    settle()
    with tempfile.TemporaryDirectory(prefix="aiomr-bench-run-") as tmp:
        out, log = os.path.join(tmp, "report.pkl"), os.path.join(tmp, "log")
        command = [sys.executable, str(script), "--contender", *args, out]
        busy, ours, began = busy_cpu_seconds(), own_cpu(), time.perf_counter()
        error = None
        with open(log, "wb") as output:
            process = subprocess.Popen(
                command,
                stdout=output,
                stderr=output,
                pass_fds=pass_fds,
                start_new_session=True,
                env={**os.environ, AUDIT: "1"} if audit else None,
            )
            try:
                with TreeSampler(process.pid) as sampler, watch(process.pid) if watch else _none():
                    try:
                        code = process.wait(timeout)
                    except subprocess.TimeoutExpired:
                        error = f"hung: no result after {timeout:.0f} s; killed"
                        os.killpg(process.pid, signal.SIGKILL)
                        code = process.wait()
            except BaseException:  # Ctrl-C: the contender's session does not get it
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                raise
        elapsed = time.perf_counter() - began
        with open(log, encoding="utf-8", errors="replace") as f:
            lines = [line.rstrip() for line in f if line.strip()]
        report: dict[str, Any] | None = None
        if os.path.exists(out):
            with open(out, "rb") as f:
                report = pickle.load(f)
        elif error is None:
            error = f"exit status {code} and no report: {' | '.join(lines[-3:])}"
    if report is not None and report.get("error"):
        error = report["error"]
    cpu = report.get("cpu_total", 0.0) if report else 0.0
    others = max(0.0, (busy_cpu_seconds() - busy - (own_cpu() - ours) - cpu) / elapsed)
    global _large_ended
    if sampler.tree_peak > LARGE:
        _large_ended = time.monotonic()
    child = Child(report, error, others, sampler.caller_peak, sampler.tree_peak)
    child.largest_child, child.log = sampler.largest_child, lines
    child.left = _clean_up(process.pid, report or {})
    return child


@contextlib.contextmanager
def _none() -> Any:
    yield None


def _in_session(sid: int) -> list[int]:
    """Live processes of session ``sid``."""
    found = []
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        fields = proc_stat(pid)
        if fields is not None and int(fields[3]) == sid and fields[0] not in (b"Z", b"X"):
            found.append(pid)
    return found


def _clean_up(sid: int, report: dict[str, Any]) -> list[str]:
    """Kill the processes and remove the ``aiomr-*`` directories that outlived a contender."""
    deadline = time.monotonic() + GONE_GRACE
    while (pids := _in_session(sid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    patterns = [f"/dev/shm/aiomr-code-{sid}-*", f"{tempfile.gettempdir()}/aiomr-code-{sid}-*"]
    created = report.get("created", [])
    dirs = {p for path in created for p in (path, f"{path}-removing") if os.path.lexists(p)}
    dirs |= {p for pattern in patterns for p in glob.glob(pattern)}
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)
    dirs |= set(report.get("dirs_left", []))
    left = [f"processes {pids} alive after the contender exited"] if pids else []
    return left + ([f"directories left: {', '.join(sorted(dirs))}"] if dirs else [])
