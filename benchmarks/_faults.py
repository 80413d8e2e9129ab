"""Faults done to a job's workers, and the checks every faulted run must pass.

`KillSchedule` SIGKILLs workers from the benchmark's process (`faults.py`); the contender of
`stuck_workers.py` SIGSTOPs its own pool's workers with `send`. Both check a run's `JobStats`
with `accounting` and learn when the job starts and ends through `watched_stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from _machine import proc_stat

if TYPE_CHECKING:
    from aiomr.executors import ProcessExecutor

VICTIM_POLL = 0.01
"""How often the schedule looks again for a live worker when a kill is due and none is alive."""


def watched_stats(on_set: Callable[[str, Any], None]) -> Any:
    """A fresh `aiomr.JobStats` calling ``on_set(name, value)`` on every figure aiomr sets."""
    import aiomr

    class WatchedStats(aiomr.JobStats):
        def __setattr__(self, name: str, value: Any) -> None:
            super().__setattr__(name, value)
            on_set(name, value)

    return WatchedStats()


def accounting(stats: Mapping[str, Any], records: int, what: str) -> list[str]:
    """Check that a job's records were each reduced or skipped once, and all were read."""
    problems = []
    if stats["records"] != stats["records_reduced"] + stats["records_skipped"]:
        problems.append(
            f"records {stats['records']:,} != records_reduced {stats['records_reduced']:,} + "
            f"records_skipped {stats['records_skipped']:,}"
        )
    if stats["records"] != records:
        problems.append(f"records {stats['records']:,}, but there are {records:,} {what}")
    return problems


def proc(pid: int) -> tuple[str, int] | None:
    """``(state letter, start time in clock ticks)`` of ``pid`` from ``/proc``, or None."""
    fields = proc_stat(pid)
    return None if fields is None else (fields[0].decode(), int(fields[19]))


def send(pid: int, how: int, start: int | None = None) -> str | None:
    """Send signal ``how`` to a live ``pid`` (started at ``start``, if given); return its state
    letter just before, or None when it is gone (or another process has its pid now)."""
    found = proc(pid)
    if found is None or found[0] in "ZX" or (start is not None and found[1] != start):
        return None
    try:
        os.kill(pid, how)
    except ProcessLookupError:
        return None
    return found[0]


# SIGKILL from the benchmark's process (faults.py) -------------------------------------------------


@dataclass
class Kill:
    """One SIGKILL sent to a worker."""

    at: float
    """Seconds after the job started reading."""
    pid: int
    state: str
    """The victim's state letter just before: R running, S sleeping, D in disk sleep."""
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
            if (state := send(victim.pid, signal.SIGKILL)) is None:
                continue
            at = time.monotonic() - (self.started_at or 0.0)
            self.kills.append(Kill(round(at, 4), victim.pid, state))
            return True
        return False


# SIGSTOP from inside a contender's process (stuck_workers.py) ----------------------------------

BUSY_RUN_NS = 500_000
"""CPU time a victim's main thread must have had in the last 1 ms to count as inside a task."""
BUSY_WAIT = 2.0
"""Seconds a mid-job stop waits for its victim to be inside a task (else the run fails)."""
RANDOM_EVERY, RANDOM_RESUME, RANDOM_RESUMED_SHARE = (0.3, 0.8), (0.1, 1.5), 0.5
WATCH_SECONDS = 0.02
"""How often the contender lists the pool's workers and reads its count of replaced ones."""


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
        return send(pid, how, self.seen.get(pid, -1))

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
