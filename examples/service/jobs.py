"""Jobs as tasks of the service: start, watch, cancel, and a bounded memory of finished ones.

::

    POST /jobs ──► JobRegistry.start ──► task in the service's TaskGroup
                                           │ engine.open_stream(files, count_words, ...)
                                           │   every SNAPSHOT_SECONDS: Job.publish(top 20)
                                           ▼
    GET /jobs/{id} ◄── Job.to_json()      Job.finish(done | failed | cancelled)
    GET /jobs/{id}/events ◄── Job.wait_changed() wakes every watcher on each publish
    DELETE /jobs/{id} ──► JobRegistry.cancel ──► task.cancel()

A job's task is owned by the `asyncio.TaskGroup` the service's lifespan holds, never by the
request that started it: the request returns at once, and shutting the service down
cancels whatever still runs. The task never raises (it records the outcome on its `Job`),
so one failing job cannot take the group, and the service, with it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import aiomr

from .words import count_words, merge_counts, top_words

__all__ = ["Job", "JobRegistry", "ShuttingDown", "Status", "TooManyJobs", "remove_file"]

logger = logging.getLogger(__name__)

Status = Literal["running", "done", "failed", "cancelled"]

SNAPSHOT_SECONDS = 0.25
"""How often a running job refreshes its top 20: four times a second looks live on a page,
and each refresh is one top-20 selection on the folding thread, nothing more."""

_SHUT_DOWN = "the service shut down before the job ended"


class TooManyJobs(Exception):
    """The service runs as many jobs as it allows; try again later."""


class ShuttingDown(Exception):
    """The service is shutting down and starts no more jobs."""


class Job:
    """One word count: what it reads, how far it is, its latest top 20, how it ended."""

    def __init__(self, job_id: str, source: str) -> None:
        self.id = job_id
        self.source = source
        self.status: Status = "running"
        self.error: str | None = None
        self.top: list[tuple[str, int]] = []
        self.stats = aiomr.JobStats()
        self.created = time.monotonic()
        self.finished: float | None = None
        self.task: asyncio.Task[None] | None = None
        self.started = asyncio.Event()
        """Set once the job's task runs: cancelling it earlier would skip its cleanup."""
        self.version = 0
        self._changed = asyncio.Event()

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def elapsed(self) -> float:
        end = self.finished if self.finished is not None else time.monotonic()
        return end - self.created

    def publish(self, top: list[tuple[str, int]] | None = None) -> None:
        """Record a new state and wake everyone waiting in `wait_changed`."""
        if top is not None:
            self.top = top
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def finish(self, status: Status, error: str | None = None) -> None:
        if not self.running:
            return
        self.status = status
        self.error = error
        self.finished = time.monotonic()
        self.publish()

    async def wait_changed(self, seen: int) -> None:
        """Wait until the state is newer than version ``seen``."""
        if self.version == seen:
            await self._changed.wait()

    def to_json(self) -> dict[str, Any]:
        """The job as the API shows it; figures are read live from the job's statistics."""
        stats = self.stats
        return {
            "id": self.id,
            "status": self.status,
            "source": self.source,
            "records": stats.records,
            "chunks": stats.chunks,
            "chunks_done": stats.chunks_done,
            "bytes_done": stats.bytes_done,
            "bytes_total": stats.bytes_total,
            "elapsed_seconds": round(self.elapsed, 3),
            "top": [{"word": word, "count": count} for word, count in self.top],
            "error": self.error,
        }


class JobRegistry:
    """Start jobs on one engine as tasks of one task group; remember the latest finished.

    Args:
        engine: the service's engine; every job runs on its workers.
        tasks: the task group that owns the jobs' tasks.
        max_running: jobs allowed at once; more raise `TooManyJobs`.
        max_finished: finished jobs kept for ``GET``; the oldest are forgotten first.
        split_bytes: bytes per split of a job's input (one map task each).
    """

    def __init__(
        self,
        engine: aiomr.Engine,
        tasks: asyncio.TaskGroup,
        *,
        max_running: int,
        max_finished: int,
        split_bytes: int,
    ) -> None:
        self._engine = engine
        self._tasks = tasks
        self._max_running = max_running
        self._split_bytes = split_bytes
        self._running: dict[str, Job] = {}
        self._finished: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._max_finished = max_finished
        self._closed = False
        self.event_streams = 0
        """Server-Sent Events streams open right now (for ``GET /health``)."""

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def finished(self) -> int:
        return len(self._finished)

    def close(self) -> None:
        """Refuse new jobs from now on (`ShuttingDown`); running ones go on."""
        self._closed = True

    def check_room(self) -> None:
        """Raise when no job can start now: call it before reading an upload, too."""
        if self._closed:
            raise ShuttingDown("the service is shutting down")
        if len(self._running) >= self._max_running:
            raise TooManyJobs(f"the service already runs {self._max_running} jobs")

    def get(self, job_id: str) -> Job | None:
        return self._running.get(job_id) or self._finished.get(job_id)

    def start(
        self,
        paths: list[str],
        *,
        source: str,
        cleanup: Callable[[], Awaitable[None]] | None = None,
    ) -> Job:
        """Start counting the words of ``paths``; ``cleanup`` runs when the job ends."""
        self.check_room()
        job = Job(secrets.token_hex(8), source)
        files = aiomr.sources.files(paths, split_size=self._split_bytes, errors="replace")
        self._running[job.id] = job
        job.task = self._tasks.create_task(self._run(job, files, cleanup), name=f"job-{job.id}")
        job.task.add_done_callback(lambda _: self._never_ran(job))
        logger.info("job %s started: %s", job.id, source)
        return job

    async def cancel(self, job: Job) -> None:
        """Cancel ``job`` and return once it is recorded as cancelled."""
        if job.task is None or job.task.done():
            return
        await job.started.wait()
        job.task.cancel()
        await asyncio.wait([job.task])

    async def _run(
        self,
        job: Job,
        files: aiomr.sources.FileSource,
        cleanup: Callable[[], Awaitable[None]] | None,
    ) -> None:
        # Folded in first, so that an empty input counts as no words rather than failing.
        nothing: collections.Counter[str] = collections.Counter()
        job.started.set()
        try:
            async with self._engine.open_stream(
                files,
                count_words,
                merge_counts,
                initial=nothing,
                every_seconds=SNAPSHOT_SECONDS,
                view=top_words,
                stats=job.stats,
            ) as snapshots:
                async for snapshot in snapshots:
                    job.publish(snapshot.value)
            job.finish("done")
        except asyncio.CancelledError:
            job.finish("cancelled", _SHUT_DOWN if self._closed else "cancelled by request")
            raise
        except aiomr.ClosedResourceError:
            job.finish("cancelled", _SHUT_DOWN)
        except Exception as exc:
            logger.warning("job %s failed: %r", job.id, exc)
            job.finish("failed", f"{type(exc).__name__}: {exc}")
        finally:
            self._retire(job)
            if cleanup is not None:
                await asyncio.shield(cleanup())
            logger.info("job %s %s in %.2f s", job.id, job.status, job.elapsed)

    def _never_ran(self, job: Job) -> None:
        """Record a job whose task was cancelled before its first step (by the task group,
        at shutdown): its own ``finally`` never ran. The lifespan removes its upload."""
        if job.running:
            job.finish("cancelled", _SHUT_DOWN)
            self._retire(job)

    def _retire(self, job: Job) -> None:
        self._running.pop(job.id, None)
        self._finished[job.id] = job
        while len(self._finished) > self._max_finished:
            self._finished.popitem(last=False)


def remove_file(path: str | os.PathLike[str]) -> Callable[[], Awaitable[None]]:
    """A cleanup for `JobRegistry.start` that deletes ``path`` on a helper thread."""

    async def remove() -> None:
        await asyncio.to_thread(_unlink, path)

    return remove


def _unlink(path: str | os.PathLike[str]) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
