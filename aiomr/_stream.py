"""Live partial results: watch a job's running reduction while it runs.

::

    job task:  source ─► chunks ─► workers ─► Folder (helper thread) ─► result
                                                 ▲
    watcher:   every N partials or T seconds ─── snapshot: view(value), computed on the
               (the caller's ``async for``)       folder's thread between two folds

The job runs in a task of its own, at full speed whatever the watcher does: snapshots are
taken only when the watcher asks for the next one, so a slow watcher sees fewer snapshots
and never slows the job or lets anything pile up. The last snapshot is the job's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import math
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._options import StreamOptions
from ._reducer import Folder
from ._sentinels import MISSING
from ._stats import JobStats

__all__ = ["Snapshot", "running", "watch"]

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Snapshot(Generic[S]):
    """The running reduction of a job at one moment."""

    value: S
    """``view(running value)``; in the last snapshot, ``view(result)`` (the result itself
    when no view was given). Views run on helper threads, never on the event loop."""
    final: bool
    """True for the last snapshot: the job is done and ``value`` is its result."""
    partials: int
    """Partial results folded into ``value`` (chunks done)."""
    records: int
    """Records read from the source so far."""


class _Seen:
    """Whether the watcher has been handed the job's outcome."""

    outcome = False


async def watch(
    job: asyncio.Task[Any],
    folder: Folder,
    stats: JobStats,
    options: StreamOptions,
    seen: _Seen | None = None,
) -> AsyncGenerator[Snapshot[Any], None]:
    """Yield snapshots of ``folder``'s value at the pace ``options`` sets, then the result."""
    loop = asyncio.get_running_loop()
    view = options.view if options.view is not None else copy.copy
    changed = asyncio.Event()
    folder.changed = changed
    taken = 0
    seconds = options.every_seconds
    due = loop.time() + seconds if seconds is not None else math.inf
    while True:
        while not job.done():
            if options.every_partials is not None and (
                folder.added - taken >= options.every_partials
            ):
                break
            if loop.time() >= due:
                break
            changed.clear()
            waiter = asyncio.ensure_future(changed.wait())
            timeout = None if due == math.inf else max(0.0, due - loop.time())
            try:
                await asyncio.wait([job, waiter], timeout=timeout, return_when="FIRST_COMPLETED")
            finally:
                waiter.cancel()
        if job.done():
            if seen is not None:
                seen.outcome = True
            result = job.result()  # the job's exception, as itself, if it failed
            final = result
            if options.view is not None:
                final = await asyncio.to_thread(options.view, result)
            yield Snapshot(final, True, stats.partials_folded or folder.folded, stats.records)
            return
        added = folder.added
        value = await folder.snapshot(view)
        taken = added
        if seconds is not None:
            due = loop.time() + seconds
        if value is not MISSING and not job.done():
            yield Snapshot(value, False, folder.folded, stats.records)


@contextlib.asynccontextmanager
async def running(
    job: asyncio.Task[Any], folder: Folder, stats: JobStats, options: StreamOptions
) -> AsyncIterator[AsyncIterator[Snapshot[Any]]]:
    """Own ``job`` for the caller's ``async with``: leaving early cancels it.

    An error of the job reaches the caller through the snapshots; if the caller left before
    seeing it, leaving raises it instead, so it is never lost.
    """
    seen = _Seen()
    snapshots = watch(job, folder, stats, options, seen)
    try:
        yield snapshots
    finally:
        await snapshots.aclose()
        if not job.done():
            job.cancel()
        await asyncio.wait([job])
    if job.cancelled() or seen.outcome:
        return
    error = job.exception()
    if error is not None:
        raise error
