"""Shared fixtures: event loops, warm executors, and process bookkeeping."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import psutil
import pytest

import aiomr
from aiomr.executors import ProcessExecutor

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is installed wherever CPython on Unix runs
    uvloop = None

# Modules whose async tests run under both asyncio's default loop and uvloop; the others run
# under asyncio's loop only (they test parts where the loop makes no difference).
BOTH_LOOPS = {"test_api.py", "test_engine.py", "test_loop.py"}


def pytest_configure(config: pytest.Config) -> None:
    # A shell starts a command it runs in the background (`cmd &`, without job control) with
    # SIGINT ignored, and every process started from it inherits that; Python then keeps
    # ignoring SIGINT too. The tests that stop programs with Ctrl-C would wait for them
    # forever. Restore the default for this process, and so for the programs it starts.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    if uvloop is not None and item.path.name in BOTH_LOOPS:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


@pytest.fixture(scope="session")
def process_executor() -> Iterator[ProcessExecutor]:
    """A warm two-worker process pool shared by tests that do not check process lifetimes."""
    executor = ProcessExecutor(2)
    asyncio.run(executor.start())
    yield executor
    asyncio.run(executor.aclose())


@pytest.fixture
async def engine(process_executor: ProcessExecutor) -> aiomr.Engine:
    """An engine on the shared warm pool (the engine does not own it)."""
    return aiomr.Engine(process_executor)


def alive(pids: set[int] | list[int]) -> list[int]:
    """Return the pids that still name a running (not zombie) process."""
    running = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.append(pid)
        except psutil.NoSuchProcess:
            pass
    return running


def _descendants() -> dict[int, str]:
    """This process's descendants but the session's own helpers, which are direct children:
    multiprocessing's forkserver (the workers it forks look just like it, one level down)
    and resource tracker."""
    found = {}
    me = os.getpid()
    for process in psutil.Process().children(recursive=True):
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            command = " ".join(process.cmdline())
            helper = "forkserver" in command or "resource_tracker" in command
            if process.ppid() == me and helper:
                continue
            found[process.pid] = command
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.fixture
def nothing_left_running(process_executor: ProcessExecutor) -> Iterator[None]:
    """Fail the test if it leaves a process of its own running (the session's shared pool
    is started first, so its workers do not count)."""
    before = _descendants()
    yield
    # Workers of a pool that broke are reaped by a helper thread: give them a moment.
    deadline = time.monotonic() + 10
    while True:
        left = {pid: command for pid, command in _descendants().items() if pid not in before}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert left == {}, f"processes left running: {left}"


def run_program(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as the main module of a fresh interpreter in ``tmp_path``, with this
    process's import path: what a user's program does, for what the test process itself
    has imported long ago."""
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
