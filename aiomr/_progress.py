"""A one-line progress display on a terminal, fed by a job's live `JobStats`."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import TextIO

from ._stats import JobStats

__all__ = ["format_progress", "show_progress"]

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
    stats: JobStats, *, stream: TextIO | None = None, interval: float = 0.2
) -> AsyncIterator[None]:
    """Redraw the job's progress on ``stream`` (stderr) while the block runs.

    Stays silent when ``stream`` is not a terminal, so logs and pipes get no control
    characters.
    """
    out = stream if stream is not None else sys.stderr
    if not out.isatty():
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
