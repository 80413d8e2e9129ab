"""Progress of a running job: events from its live `JobStats`, a terminal line, a tqdm bar.

`progress` turns a job's live stats into `Progress` events at a steady pace (an async
iterator; `report_progress` calls a function with them instead). `show_progress` draws
them on a terminal, through tqdm when it is installed, else as one line of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TextIO

from ._checks import check_seconds
from ._stats import JobStats

__all__ = ["Progress", "format_progress", "progress", "report_progress", "show_progress"]


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a job stands: one event of `aiomr.progress`."""

    records: int
    """Records read from the source so far."""
    bytes_done: int
    """File sources: bytes of the splits finished so far."""
    bytes_total: int | None
    """File sources: bytes the job reads in all, once known; else ``None``."""
    chunks_done: int
    """Chunks whose partial result came back."""
    chunks_in_flight: int
    """Chunks submitted and not yet back."""
    elapsed: float
    """Seconds since the job started."""
    records_per_second: float
    """Records read per second of ``elapsed``."""
    bytes_per_second: float
    """File sources: bytes finished per second of ``elapsed``."""
    eta: float | None
    """Seconds left at the rate so far, when the total is known; else ``None``."""
    fraction: float | None
    """Share of the total done (0 to 1), when the total is known; else ``None``."""
    done: bool
    """True in the last event, once the job has ended (successfully or not)."""

    @classmethod
    def of(cls, stats: JobStats) -> Progress:
        """Read the event out of a job's live stats."""
        elapsed = stats.wall_seconds
        total = stats.bytes_total
        byte_rate = stats.bytes_done / elapsed if elapsed > 0 else 0.0
        fraction = min(stats.bytes_done / total, 1.0) if total else None
        eta = None
        if total and byte_rate > 0:
            eta = max(total - stats.bytes_done, 0) / byte_rate
        return cls(
            records=stats.records,
            bytes_done=stats.bytes_done,
            bytes_total=total,
            chunks_done=stats.chunks_done,
            chunks_in_flight=stats.in_flight,
            elapsed=elapsed,
            records_per_second=stats.records_per_second,
            bytes_per_second=byte_rate,
            eta=eta,
            fraction=fraction,
            done=stats.finished_at is not None,
        )


async def progress(
    stats: JobStats, *, every_seconds: float = 0.5
) -> AsyncGenerator[Progress, None]:
    """Yield the progress of the job filling ``stats``, every ``every_seconds``, until it ends.

    Run it beside the job, which is given the same stats:

        stats = aiomr.JobStats()
        job = asyncio.create_task(aiomr.map_reduce(source, mapper, reducer, stats=stats))
        async for event in aiomr.progress(stats):
            print(f"{event.records} records, ETA {event.eta}")
        result = await job

    The last event has ``done=True``. Iteration waits for the job to start; it ends when
    the job ends, however it ends (the job's own ``await`` tells how).
    """
    check_seconds("every_seconds", every_seconds)
    while True:
        event = Progress.of(stats)
        if event.done:
            yield event
            return
        if stats.started_at is not None:
            yield event
        await asyncio.sleep(every_seconds)


@contextlib.asynccontextmanager
async def report_progress(
    stats: JobStats, report: Callable[[Progress], object], *, every_seconds: float = 0.5
) -> AsyncIterator[None]:
    """Call ``report(event)`` with the job's progress while the block runs.

    ``report`` runs on the event loop: keep it quick (update a field, log a line, send a
    message on a queue). The last call has ``done=True`` when the job ended inside the block.
    """

    async def feed() -> None:
        async for event in progress(stats, every_seconds=every_seconds):
            report(event)

    task = asyncio.create_task(feed())
    try:
        yield
    finally:
        if stats.finished_at is not None and not task.done():
            report(Progress.of(stats))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


_UNITS = ("B", "KB", "MB", "GB", "TB")


def _bytes(n: float) -> str:
    for unit in _UNITS:
        if abs(n) < 1000 or unit == _UNITS[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def _count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def format_progress(stats: JobStats, width: int = 24) -> str:
    """Describe a running job in one line: done, rate, and ETA when the total is known."""
    wall = max(stats.wall_seconds, 1e-9)
    total = stats.bytes_total
    if total:
        done = stats.bytes_done
        fraction = min(done / total, 1.0)
        filled = int(fraction * width)
        bar = "#" * filled + "-" * (width - filled)
        rate = done / wall
        eta = (total - done) / rate if rate > 0 else None
        line = (
            f"[{bar}] {fraction:6.1%} {_bytes(done)}/{_bytes(total)} "
            f"{_bytes(rate)}/s {_count(stats.records)} records"
        )
        if eta is not None and done:
            line += f" ETA {_duration(eta)}"
        return line
    rate = stats.records / wall
    return (
        f"{_count(stats.records)} records, {stats.chunks_done}/{stats.chunks} chunks, "
        f"{_count(rate)} records/s, {_duration(wall)}"
    )


@contextlib.asynccontextmanager
async def show_progress(
    stats: JobStats,
    *,
    stream: TextIO | None = None,
    interval: float = 0.2,
    use_tqdm: bool | None = None,
) -> AsyncIterator[None]:
    """Redraw the job's progress on ``stream`` (stderr) while the block runs.

    A tqdm bar (bytes when the total is known, else records) when tqdm is installed and
    ``use_tqdm`` is not ``False``; otherwise one line drawn here. Stays silent when
    ``stream`` is not a terminal, so logs and pipes get no control characters.
    """
    out = stream if stream is not None else sys.stderr
    if not out.isatty():
        yield
        return
    tqdm = _tqdm() if use_tqdm is not False else None
    if use_tqdm and tqdm is None:
        raise ImportError("use_tqdm=True needs tqdm: pip install 'aiomr[progress]'")
    if tqdm is not None:
        async with _tqdm_bar(tqdm, stats, out, interval):
            yield
        return

    async def draw() -> None:
        while True:
            out.write("\r\x1b[2K" + format_progress(stats))
            out.flush()
            await asyncio.sleep(interval)

    task = asyncio.create_task(draw())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        out.write("\r\x1b[2K")
        out.flush()


def _tqdm() -> Any:
    try:
        return importlib.import_module("tqdm").tqdm
    except ImportError:
        return None


@contextlib.asynccontextmanager
async def _tqdm_bar(
    tqdm: Any, stats: JobStats, out: TextIO, interval: float
) -> AsyncIterator[None]:
    """Feed a tqdm bar from the job's progress: bytes once their total is known, else records."""
    bar = tqdm(file=out, unit="rec", unit_scale=True, dynamic_ncols=True, leave=False)

    def update(event: Progress) -> None:
        if event.bytes_total:
            if bar.unit != "B":
                bar.unit, bar.unit_divisor = "B", 1024
                bar.reset(total=event.bytes_total)
            bar.n = event.bytes_done
            bar.set_postfix_str(f"{event.records:,} records", refresh=False)
        else:
            bar.n = event.records
        bar.refresh()

    try:
        async with report_progress(stats, update, every_seconds=interval):
            yield
    finally:
        bar.close()
