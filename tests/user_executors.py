"""Executors written as a user of aiomr would write them, for tests/test_executor_features.py.

`Threads` implements only what `aiomr.executors.Executor` requires. `Featured` declares
``start``, sealed chunks, ``split_seconds`` and a folder of its own. `ProcessPerTask` runs
each task in a fresh Python process and declares that it can kill a task.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import pathlib
import pickle
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import cloudpickle

import aiomr
from aiomr._reducer import Folder
from aiomr.executors import Executor, ShippedCode, WorkerLost

ROOT = pathlib.Path(aiomr.__file__).resolve().parent.parent


class Threads(Executor):
    """Tasks on a thread pool it owns; nothing but the abstract methods."""

    def __init__(self, max_workers: int = 2) -> None:
        self._max_workers = max_workers
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers, "user-executor")
        self.payloads: list[type] = []
        """The type of each task's first argument (a map task's records), in order."""

    @property
    def max_workers(self) -> int:
        return self._max_workers

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> asyncio.Future[Any]:
        self._check_open()
        self.payloads.append(type(args[0]))
        return asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._pool.shutdown, wait=True)


class CountingFolder(Folder):
    """A folder an executor makes: counts what it is given."""

    def __init__(self, reducer: Callable[[Any, Any], Any], *, initial: Any) -> None:
        super().__init__(reducer, initial=initial)
        self.bound: ShippedCode | None = None
        self.partials = 0

    def bind(self, code: ShippedCode) -> None:
        self.bound = code

    def add(self, index: int, partial: Any, location: str) -> None:
        self.partials += 1
        super().add(index, partial, location)


class Featured(Threads):
    """The same threads, declaring start, sealed chunks, timed splits and its own folder."""

    seals_chunks = True

    def __init__(self, max_workers: int = 2, *, split_seconds: float | None = None) -> None:
        super().__init__(max_workers)
        self.starts = 0
        self._split_seconds = split_seconds
        self.folders: list[CountingFolder] = []

    async def start(self) -> None:
        self.starts += 1

    @property
    def split_seconds(self) -> float | None:
        return self._split_seconds

    def open_folder(
        self, reducer: Callable[[Any, Any], Any], *, initial: Any, ordered: bool
    ) -> Folder | None:
        if ordered:
            return None  # let aiomr keep the order
        folder = CountingFolder(reducer, initial=initial)
        self.folders.append(folder)
        return folder


CHILD = """
import pickle, sys
fn, args = pickle.loads(sys.stdin.buffer.read())
sys.stdout.buffer.write(b"R")  # code loaded: the task starts now
sys.stdout.buffer.flush()
try:
    reply = (True, fn(*args))
except BaseException as exc:
    reply = (False, exc)
sys.stdout.buffer.write(pickle.dumps(reply))
"""


class ProcessPerTask(Executor):
    """Run each task in a Python process of its own, which `kill_task` kills."""

    can_kill_tasks = True

    def __init__(self, max_workers: int = 2) -> None:
        self._max_workers = max_workers
        self._running: dict[asyncio.Future[Any], asyncio.subprocess.Process] = {}
        self._started: dict[asyncio.Future[Any], float] = {}
        self._why: dict[int, str] = {}
        self.killed = 0
        self.lost = 0

    @property
    def max_workers(self) -> int:
        return self._max_workers

    @property
    def workers_replaced(self) -> int:
        """Processes that ended before they answered; the next task gets a new one."""
        return self.lost

    def ship(self, fn: Callable[..., Any]) -> ShippedCode:
        self._check_open()
        try:
            cloudpickle.dumps(fn)
        except Exception as exc:
            raise TypeError(f"{fn!r} cannot be pickled: {exc}") from exc
        return ShippedCode(fn)

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> asyncio.Future[Any]:
        self._check_open()
        return asyncio.ensure_future(self._run(cloudpickle.dumps((fn, args))))

    async def _run(self, data: bytes) -> Any:
        me = asyncio.current_task()
        assert me is not None
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self._running[me] = process
        try:
            assert process.stdin is not None
            assert process.stdout is not None
            assert process.stderr is not None
            try:
                process.stdin.write(data)
                await process.stdin.drain()
                process.stdin.close()
                if await process.stdout.read(1) == b"R":
                    self._started[me] = asyncio.get_running_loop().time()
                reply = await process.stdout.read()
            except (BrokenPipeError, ConnectionResetError):
                reply = b""
            errors = await process.stderr.read()
            code = await process.wait()
        except asyncio.CancelledError:
            if process.returncode is None:
                process.kill()
            await process.wait()
            raise
        finally:
            del self._running[me]
            self._started.pop(me, None)
        if code != 0 or not reply:
            self.lost += 1
            why = self._why.pop(process.pid, errors.decode(errors="replace")[-500:])
            raise WorkerLost(f"process {process.pid} ended with {code}: {why}", verdict="failed")
        ok, value = pickle.loads(reply)
        if ok:
            return value
        raise value

    def kill_task(self, task: asyncio.Future[Any], *, ran_for: float) -> bool:
        started = self._started.get(task)
        if started is None:
            return False  # not running yet: aiomr asks again
        process = self._running[task]
        loop = asyncio.get_running_loop()
        loop.call_at(started + ran_for, self._kill, task, process, ran_for)
        return True

    def _kill(self, task: asyncio.Future[Any], process: Any, ran_for: float) -> None:
        if task.done() or process.returncode is not None:
            return
        self.killed += 1
        self._why[process.pid] = f"it ran longer than {ran_for} s"
        process.kill()

    async def aclose(self) -> None:
        self._closed = True
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
