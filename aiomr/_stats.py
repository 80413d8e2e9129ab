"""Live statistics of one job: what was read, what ran, how long it took."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ._badrecords import BadRecord

__all__ = ["JobStats"]


@dataclass
class JobStats:
    """Count what a job has done so far; updated live while the job runs.

    Pass an instance as ``stats=`` to `aiomr.map_reduce` (or
    `aiomr.Engine.map_reduce`) and read it from another task for progress, or after
    the call for a summary:

        stats = aiomr.JobStats()
        total = await aiomr.map_reduce(range(10), square, add, stats=stats)
        print(stats.records, stats.chunks, stats.wall_seconds)

    Every figure counts since the job started; none is reset by the job itself, so one
    instance should serve one job.
    """

    records: int = 0
    """Records pulled from the source and sent to a map task (for file sources read by the
    workers: records the finished splits held)."""
    chunks: int = 0
    """Chunks submitted to the executor."""
    chunks_done: int = 0
    """Chunks whose partial result came back."""
    partials_folded: int = 0
    """Partial results folded into the running result."""
    task_seconds: float = 0.0
    """Total time spent inside map tasks, measured in the workers."""
    task_seconds_max: float = 0.0
    """The slowest single map task."""
    chunk_sizes: list[tuple[int, int]] = field(default_factory=list)
    """Each chunk size the job chose, as ``(first chunk index, size)``: a fixed ``chunk_size``
    gives one entry, the adaptive sizing one per change."""
    bytes_total: int | None = None
    """File sources: the bytes the job will read, once its splits are planned."""
    bytes_done: int = 0
    """File sources: the bytes of the splits finished so far."""
    map_output_keys: int = 0
    """Key-based jobs: entries the map tasks wrote after combining (one per key per chunk)."""
    partitions_done: int = 0
    """Key-based jobs: partitions reduced so far."""
    spills: int = 0
    """Key-based jobs: sorted runs the reduce tasks spilled to disk; `aiomr.aggregate`:
    runs of partial states its first phase wrote."""
    records_reduced: int = 0
    """Records whose mapped values made it into the result. When a job ends,
    ``records == records_reduced + records_skipped``."""
    records_skipped: int = 0
    """Records skipped as bad under ``on_error="skip"`` or ``"collect"``."""
    bad_sample: list[BadRecord] = field(default_factory=list)
    """The first bad records (at most `aiomr._badrecords.SAMPLE_SIZE`), with ``"skip"``."""
    bad_records: list[BadRecord] = field(default_factory=list)
    """Every bad record, with ``on_error="collect"``."""
    chunks_retried: int = 0
    """Chunks submitted again after a lost worker or a retriable exception."""
    partitions_retried: int = 0
    """Key-based jobs: reduce tasks submitted again after a lost worker or a retriable
    exception."""
    workers_replaced: int = 0
    """Worker processes restarted while the job ran (on a shared engine, for any job)."""
    worker_pids: set[int] = field(default_factory=set)
    """Process ids of the workers that ran this job's tasks."""
    started_at: float | None = None
    """``time.monotonic()`` when the job started."""
    finished_at: float | None = None
    """``time.monotonic()`` when the job ended (successfully or not)."""

    @property
    def in_flight(self) -> int:
        """Chunks submitted whose partial has not come back yet."""
        return self.chunks - self.chunks_done

    @property
    def wall_seconds(self) -> float:
        """Seconds since the job started, up to its end once it has ended."""
        if self.started_at is None:
            return 0.0
        end = self.finished_at if self.finished_at is not None else time.monotonic()
        return end - self.started_at

    @property
    def records_per_second(self) -> float:
        """Records read per second of wall time so far."""
        wall = self.wall_seconds
        return self.records / wall if wall > 0 else 0.0

    @property
    def mean_task_seconds(self) -> float:
        """Average time of one map task."""
        return self.task_seconds / self.chunks_done if self.chunks_done else 0.0

    def _record_chunk_size(self, chunk_index: int, size: int) -> None:
        if not self.chunk_sizes or self.chunk_sizes[-1][1] != size:
            self.chunk_sizes.append((chunk_index, size))
