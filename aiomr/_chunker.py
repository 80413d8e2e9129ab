"""Batch records from a source into chunks; the only place that decides how many.

Adaptive sizing
---------------
With ``chunk_size=None`` (the default) a `ChunkSizer` keeps map tasks inside a target
duration band. It starts small (`FIRST_CHUNK_SIZE` records) so the first results arrive
quickly and slow records never leave workers idle behind one huge chunk; every completed task
reports how long its records took *inside the worker*, an exponentially weighted average of the
per-record time is kept, and the next size is ``TARGET_TASK_SECONDS / per_record_seconds``.
A size grows at most `MAX_GROWTH` times per completed task (one fast outlier cannot
blow up memory) and never exceeds `MAX_CHUNK_SIZE`; it shrinks at once when tasks turn
slow. Tiny records thus travel in tens of thousands per task (the per-task cost of a process
pool, ~100 µs, becomes noise) and second-long records travel one by one.

Splits on a shared engine
-------------------------
A file job cuts its byte-range splits one at a time, as it sends them out. On a private
engine (``aiomr.map_reduce`` and friends) every split has the size ``split_size`` names, or
`auto_split_size` chooses from the total. On a shared `aiomr.Engine` a task cannot be
interrupted, so a job that arrives later waits for a worker until some running split ends;
there, unless the job names its ``split_size``, splits are sized by time: the first is
`FIRST_TIMED_SPLIT` bytes, and each next one is the bytes the finished splits read in
the engine's ``split_seconds``: bytes per task-second in the worker, averaged with
exponential weights while splits get faster and taken as measured when one is slower, so the
size shrinks at once and grows at most `MAX_GROWTH` times per finished split, never above the
automatic size.

Pulling
-------
A `ChunkReader` asks the source, never its type, how to read it (`aiomr.sources.Source`,
made by `describe`): a source the workers read themselves gives its splits, any other
gives batches of records taken in the caller. Records are taken only when the dispatcher
asks for a chunk, so the source is never read ahead of the in-flight window; how plain
iterables and async iterables are pulled without blocking the loop is told in
`aiomr.sources._describe`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, cast

from ._types import R
from .sources._describe import describe
from .sources._source import DEFAULT_NOUN, BatchReader, Source
from .sources._split_source import AnySplit, SplitPlan, SplitSource

__all__ = ["DEFAULT_NOUN", "AnySource", "Chunk", "ChunkReader", "ChunkSizer", "check_source"]

AnySource = Iterable[Any] | AsyncIterable[Any] | Source
"""What jobs accept as a source: iterables, async iterables and `aiomr.sources.Source`
(files, lines, queries, and sources users write)."""

FIRST_CHUNK_SIZE = 64
"""Records in the first chunks of an adaptive job: small enough that a slow mapper shows its
speed within one task, large enough that a fast one is not dominated by per-task cost."""
TARGET_TASK_SECONDS = 0.05
"""Aim of the adaptive sizing. Per-task overhead is ~0.1 ms, so 50 ms tasks waste ~0.2%;
longer tasks would make progress, cancellation and load balancing coarser."""
MAX_GROWTH = 4
"""A chunk may grow at most this many times from one completed task to the next."""
MAX_CHUNK_SIZE = 65_536
"""Upper bound of adaptive chunks: bounds the memory of ``max_in_flight`` chunks and the
time to build one chunk in the caller."""
FIRST_TIMED_SPLIT = 1 << 20
"""Bytes in the first split of a file job sized by time: read in well under a second by
anything that reads files at all, so the job's speed is known early."""
MIN_TIMED_SPLIT = 64 << 10
"""Smallest split sized by time: a split also costs a task and a partial result."""
_EWMA_WEIGHT = 0.3


@dataclass(frozen=True, slots=True)
class Chunk(Generic[R]):
    """A batch of records and where it sits in the source."""

    index: int
    """Position of the chunk among the job's chunks, from 0."""
    start: int
    """Position of the chunk's first record in the source, from 0."""
    records: list[R]
    origins: tuple[tuple[int, str, int], ...] = ()
    """For lines of files: ``(index in records, path, line number)`` where each run starts."""
    split: AnySplit | None = None
    """For file sources read by the workers: the byte ranges (``records`` is ``[split]``)."""
    noun: tuple[str, str] = DEFAULT_NOUN
    """What messages call one record and the source (`aiomr.sources.Source.record_noun`)."""

    @property
    def location(self) -> str:
        """Describe the chunk for error messages; ranges are half-open, ``[first, end)``."""
        if self.split is not None:
            return self.split.describe()
        if self.origins:
            runs = self._runs()
            shown = ", ".join(f"{path} lines [{first}, {end})" for path, first, end in runs[:3])
            more = len(runs) - 3
            tail = f" and {more} more file{'s' if more > 1 else ''}" if more > 0 else ""
            return f"chunk {self.index} ({shown}{tail})"
        end = self.start + len(self.records)
        return f"chunk {self.index} ({self.noun[0]}s [{self.start}, {end}) of {self.noun[1]})"

    def _runs(self) -> list[tuple[str, int, int]]:
        """The chunk's lines as ``(path, first line, end line)``, one run per file."""
        runs: list[tuple[str, int, int]] = []
        ends = [first for first, _, _ in self.origins[1:]] + [len(self.records)]
        for (first, path, line), end in zip(self.origins, ends, strict=True):
            if runs and runs[-1][0] == path and runs[-1][2] == line:
                runs[-1] = (path, runs[-1][1], line + end - first)
            else:
                runs.append((path, line, line + end - first))
        return runs

    def locate(self, index: int) -> str:
        """Name record ``index`` of the chunk: file and line when known, its position in the
        split for a split, else its position in the source."""
        if self.split is not None:
            return f"{self.noun[0]} {index} of the split"
        for first, path, line in reversed(self.origins):
            if first <= index:
                return f"{path}:{line + index - first}"
        return f"{self.noun[0]} {self.start + index} of {self.noun[1]}"


def check_source(source: object) -> None:
    """Raise `TypeError` unless ``source`` is a `Source`, an iterable or an async iterable;
    read nothing from it."""
    describe(source)


class ChunkSizer:
    """Choose the size of the next chunk, fixed or adaptive (see the module docstring)."""

    def __init__(
        self,
        chunk_size: int | None = None,
        *,
        split_seconds: float | None = None,
        target_seconds: float = TARGET_TASK_SECONDS,
        smallest: int = 1,
    ) -> None:
        if chunk_size is not None:
            if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
                raise TypeError(f"chunk_size must be an int or None, got {chunk_size!r}")
            if chunk_size < 1:
                raise ValueError("chunk_size must be >= 1")
        self.adaptive = chunk_size is None
        self.target_seconds = target_seconds
        """What an adaptive chunk should take to run."""
        self.smallest = smallest
        """The fewest records in an adaptive chunk."""
        self.size = max(FIRST_CHUNK_SIZE, smallest) if chunk_size is None else chunk_size
        self._per_record: float | None = None
        self.split_seconds = split_seconds
        """Target seconds of a split task, or ``None`` to size splits by bytes alone."""
        self._split_bytes = FIRST_TIMED_SPLIT
        self._bytes_per_second: float | None = None

    def split_bytes(self, largest: int) -> int:
        """Return the size of the next split of a file job; ``largest`` is the size it would
        have without a time target (the job's ``split_size``, or the automatic one)."""
        if self.split_seconds is None:
            return largest
        return min(largest, self._split_bytes)

    def observe(self, records: int, task_seconds: float, nbytes: int | None = None) -> None:
        """Take one completed task into account; ``nbytes`` for a split: the bytes it read."""
        if nbytes is not None and self.split_seconds is not None and nbytes > 0:
            rate = nbytes / max(task_seconds, 1e-6)
            previous = self._bytes_per_second
            if previous is None or rate < previous:  # slower: shrink at once
                self._bytes_per_second = rate
            else:
                self._bytes_per_second = previous + _EWMA_WEIGHT * (rate - previous)
            wanted = int(self._bytes_per_second * self.split_seconds)
            self._split_bytes = max(MIN_TIMED_SPLIT, min(wanted, self._split_bytes * MAX_GROWTH))
        if not self.adaptive or records <= 0:
            return
        per_record = max(task_seconds, 1e-9) / records
        if self._per_record is None:
            self._per_record = per_record
        else:
            self._per_record += _EWMA_WEIGHT * (per_record - self._per_record)
        wanted = int(self.target_seconds / self._per_record)
        self.size = max(self.smallest, min(wanted, self.size * MAX_GROWTH, MAX_CHUNK_SIZE))


class ChunkReader(Generic[R]):
    """Pull chunks from a source on demand; close the source when done.

    ``source`` is described (`describe`) and, unless the workers read it, opened at once: a
    source that can be read only once refuses a second job here, before anything is sent.

    Cancellation: cancelling `next_chunk` leaves the source where it was; call
    `aclose` to close it.
    """

    def __init__(self, source: AnySource, sizer: ChunkSizer, workers: int = 1) -> None:
        self._sizer = sizer
        self._workers = workers
        described = describe(source)
        self._noun = described.record_noun
        self._splits = described.worker_side()
        self._batches: BatchReader | None = None
        if self._splits is None:
            self._batches = described.open_batches()
        self._cutter: SplitPlan | None = None
        self._split_size = 0
        self._position = 0
        self._chunk_index = 0
        self.total_bytes: int | None = None
        """For file sources: the bytes the splits cover, known once they are planned."""
        self._exhausted = False
        self._closed = False

    async def next_chunk(self) -> Chunk[R] | None:
        """Return the next chunk, or ``None`` once the source is exhausted."""
        if self._exhausted or self._closed:
            return None
        if self._splits is not None:
            return await self._next_split(self._splits)
        assert self._batches is not None
        batch = await self._batches.take(self._sizer.size)
        # A list in all but special cases: rows of COPY text come as one undecoded sequence,
        # which becomes a list of rows when a worker unpickles it (`CopyRows`).
        records = cast("list[R]", batch.records)
        if batch.last or not records:
            self._exhausted = True
        if not records:
            return None
        chunk = Chunk(self._chunk_index, self._position, records, batch.origins, noun=self._noun)
        self._chunk_index += 1
        self._position += len(records)
        return chunk

    async def _next_split(self, files: SplitSource) -> Chunk[R] | None:
        if self._cutter is None:
            cutter, self._split_size = await asyncio.to_thread(files.cutter, self._workers)
            self._cutter, self.total_bytes = cutter, cutter.total
        cutter = self._cutter
        largest = self._split_size
        size = largest if files.split_size is not None else self._sizer.split_bytes(largest)
        split = await asyncio.to_thread(cutter.cut, size)
        if split is None:
            self._exhausted = True
            return None
        chunk: Chunk[Any] = Chunk(self._chunk_index, self._chunk_index, [split], split=split)
        self._chunk_index += 1
        return chunk

    async def aclose(self) -> None:
        """Close the source's reading (files, cursors, generators). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._batches is not None:
            await self._batches.aclose()
