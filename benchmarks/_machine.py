"""Measure processes and the machine: CPU time, peak memory, event-loop lag, fresh processes.

Light on purpose (heavier modules and psutil are imported on first use): a contender's own
program imports it, and worker processes started with ``forkserver`` or ``spawn`` import that
program again. Importing it puts the checkout first on ``sys.path``, so every script runs as
``python3 benchmarks/NAME.py`` without installing aiomr.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import concurrent.futures

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

GONE_GRACE = 2.0
"""Seconds a finished contender's processes get to exit before they count as left behind."""
AUDIT = "AIOMR_BENCH_AUDIT"
"""Set in a contender's environment: record every ``aiomr-*`` directory it makes."""


def import_names(names: Iterable[str], *, uvloop: bool = False) -> None:
    """Import each dotted name: a module, or a module's attribute (``aiomr.map_reduce``).

    A contender's imports happen before its clock starts. aiomr imports its public names on
    first use, so naming the functions a contender calls loads what its script's imports would.
    With ``uvloop``, import uvloop too when it is installed (`aiomr.run` would use it).
    """
    if uvloop:
        with contextlib.suppress(ImportError):
            importlib.import_module("uvloop")
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


# The machine, described for the tables ------------------------------------------------------------


def uvloop_version() -> str | None:
    """uvloop's version, or None when it is not installed."""
    import importlib.metadata

    try:
        return importlib.metadata.version("uvloop")
    except importlib.metadata.PackageNotFoundError:
        return None


def aiomr_revision() -> str:
    """aiomr's version and, in a git checkout, its commit."""
    import subprocess

    import aiomr

    def git(*args: str) -> str:
        command = ["git", "-C", str(REPO_ROOT), *args]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=10, check=True
        ).stdout

    try:
        commit = git("rev-parse", "--short", "HEAD").strip()
        local = (
            ", with local changes to aiomr/" if git("status", "--porcelain", "--", "aiomr") else ""
        )
    except (OSError, subprocess.SubprocessError):
        return aiomr.__version__
    return f"{aiomr.__version__} (commit {commit}{local})"


def machine_rows() -> list[tuple[str, str]]:
    """Describe the machine and the software the figures were measured with."""
    import datetime
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return [
        ("CPUs (nproc)", f"{len(os.sched_getaffinity(0))} CPUs ({cpu})"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("aiomr", aiomr_revision()),
        ("event loops", f"asyncio's default loop; uvloop {uvloop_version() or 'not installed'}"),
        ("load average at start (1, 5, 15 min)", ", ".join(f"{x:.2f}" for x in os.getloadavg())),
        ("date", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")),
    ]


def machine_line() -> str:
    """Summarise the machine in one line, for the top of a section."""
    rows = dict(machine_rows())
    return (
        f"Measured on {rows['CPUs (nproc)']}, {rows['Python']}, {rows['OS']}, on {rows['date']}; "
        f"load average at start {rows['load average at start (1, 5, 15 min)']}."
    )


# CPU and memory --------------------------------------------------------------------------------


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (``/proc/stat``)."""
    with open("/proc/stat", encoding="ascii") as f:
        user, nice, system, _, _, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` after the command (state first), or None: gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :].split()


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
    import concurrent.futures
    import multiprocessing

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
    import compileall

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
    import asyncio
    import faulthandler

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
