"""Measure processes and the machine: CPU time, peak memory, event-loop lag, fresh processes.

Light on purpose (the standard library only, psutil on first use): a contender's own program
imports it, and worker processes started with ``forkserver`` or ``spawn`` import that program
again. Importing it puts the checkout first on ``sys.path``, so every script runs as
``python3 benchmarks/NAME.py`` without installing aiomr.
"""

from __future__ import annotations

import asyncio
import compileall
import concurrent.futures
import contextlib
import faulthandler
import glob
import importlib
import multiprocessing
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SAMPLE_SECONDS = 0.05
"""Interval of the memory sampler; it lists the descendants again every fourth sample
(listing them scans all of /proc, which costs CPU the contenders would rather have)."""
GONE_GRACE = 2.0
"""Seconds a finished contender's processes get to exit before they count as left behind."""
AUDIT = "AIOMR_BENCH_AUDIT"
"""Set in a contender's environment: record every ``aiomr-*`` directory it makes."""


def import_names(names: Iterable[str]) -> None:
    """Import each dotted name: a module, or a module's attribute (``aiomr.map_reduce``).

    A contender's imports happen before its clock starts. aiomr imports its public names on
    first use, so naming the functions a contender calls loads what its script's imports would.
    """
    for name in names:
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                value: Any = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                if cut == 1:
                    raise
                continue
            for attribute in parts[cut:]:
                value = getattr(value, attribute)
            break


# CPU and memory --------------------------------------------------------------------------------


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (``/proc/stat``)."""
    with open("/proc/stat", encoding="ascii") as f:
        user, nice, system, _, _, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """CPU seconds of this process alone (its threads included, its children not)."""
    t = os.times()
    return t.user + t.system


def tree_cpu() -> float:
    """CPU seconds of this process, its reaped children and its live descendants."""
    import psutil

    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            c = child.cpu_times()
            total += c.user + c.system + c.children_user + c.children_system
    return total


def peak_rss() -> int:
    """This process's peak RSS in bytes since its program started (``VmHWM``).

    Not ``getrusage``'s ``ru_maxrss``: on Linux that keeps, across ``exec``, the high-water
    mark of the parent the process was forked from.
    """
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def rss() -> int:
    """This process's RSS in bytes now."""
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def process_pool(workers: int, *, warm: bool = True) -> concurrent.futures.ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of ``forkserver`` workers; warm: each has run a task."""
    context = multiprocessing.get_context("forkserver")
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
    if warm:
        concurrent.futures.wait([pool.submit(time.sleep, 0.05) for _ in range(workers)])
    return pool


def stop_forkserver() -> None:
    """Stop and reap multiprocessing's fork server, if this process started one.

    Workers started through it are its children, not ours: their CPU time reaches our
    children's times only once the server itself has exited and been waited for.
    """
    from multiprocessing import forkserver

    server: Any = getattr(forkserver, "_forkserver", None)
    if server is not None and getattr(server, "_forkserver_pid", None) is not None:
        server._stop()


def byte_compile() -> None:
    """Byte-compile aiomr and the benchmarks, as ``pip install`` leaves a package.

    With ``PYTHONDONTWRITEBYTECODE`` set, every contender and each of its workers would
    otherwise compile them again, which is no part of what is measured.
    """
    for directory in (REPO_ROOT / "aiomr", Path(__file__).parent):
        if not compileall.compile_dir(directory, quiet=1):
            raise SystemExit(f"cannot byte-compile {directory}")


def warm_page_cache(paths: Iterable[str]) -> None:
    """Read every file once, so that each contender finds it in the page cache."""
    for path in paths:
        with open(path, "rb") as f:
            while f.read(16 << 20):
                pass


# Event-loop lag --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def ticking(
    every: float = 0.010, dump_after: float | None = None
) -> AsyncIterator[list[float]]:
    """Sleep ``every`` seconds again and again meanwhile; yield how late each wake-up was.

    With ``dump_after``, every thread's stack goes to stderr whenever a wake-up is more than
    ``dump_after`` seconds late (to find what held the loop; not for timed runs).
    """
    lateness: list[float] = []

    async def tick() -> None:
        try:
            while True:
                if dump_after is not None:
                    faulthandler.dump_traceback_later(every + dump_after)
                before = time.perf_counter()
                await asyncio.sleep(every)
                lateness.append(max(0.0, time.perf_counter() - before - every))
        finally:
            if dump_after is not None:
                faulthandler.cancel_dump_traceback_later()

    task = asyncio.create_task(tick())
    try:
        yield lateness
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


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
    for name in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
            fields = data[data.rfind(b")") + 2 :].split()
            if int(fields[3]) == sid and fields[0] not in (b"Z", b"X"):
                found.append(int(name))
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


def contender_main(run: Callable[[list[str]], dict[str, Any]], args: list[str]) -> None:
    """Run a contender in this (fresh) process: ``run(args[:-1])``, its report to ``args[-1]``.

    The report gains the process tree's CPU time (``cpu_total``), this process's peak RSS
    (``vm_hwm``), every ``aiomr-*`` directory the contender made (``created``, recorded by an
    audit hook) and those still there once it returned (``dirs_left``). An exception is
    reported, not raised.
    """
    created: list[str] = []
    if os.environ.get(AUDIT):
        sys.addaudithook(_record_directories(created))
    try:
        report = run(args[:-1])
    except BaseException as exc:
        report = {"error": describe_error(exc)}
    left = [p for path in created for p in (path, f"{path}-removing") if os.path.lexists(p)]
    report.update(cpu_total=tree_cpu(), vm_hwm=peak_rss(), created=created, dirs_left=left)
    with open(args[-1], "wb") as f:
        pickle.dump(report, f, pickle.HIGHEST_PROTOCOL)


def workers_left() -> list[int]:
    """Wait up to `GONE_GRACE` for this process's descendants to end; return those alive.

    Its direct children ``forkserver`` and resource tracker do not count: they live as long
    as the process. Workers are forked by the forkserver, so their command line is its own.
    """
    import psutil

    me = psutil.Process()
    deadline = time.monotonic() + GONE_GRACE
    while True:
        alive = []
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                command = " ".join(child.cmdline())
                helper = "forkserver" in command or "resource_tracker" in command
                if child.status() != psutil.STATUS_ZOMBIE and not (
                    helper and child.ppid() == me.pid
                ):
                    alive.append(child.pid)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def _record_directories(created: list[str]) -> Callable[[str, tuple[Any, ...]], None]:
    def hook(event: str, args: tuple[Any, ...]) -> None:
        if (
            event == "os.mkdir"
            and isinstance(args[0], str)
            and args[2] in (None, -1)
            and os.path.basename(args[0]).startswith("aiomr-")
        ):
            created.append(os.path.abspath(args[0]))

    return hook


def describe_error(exc: BaseException) -> str:
    """Say what went wrong, naming the exceptions inside an exception group."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe_error(inner) for inner in exc.exceptions)
    notes = " ".join(getattr(exc, "__notes__", []))
    return f"{type(exc).__name__}: {exc}{' ' + notes if notes else ''}"
