"""Run a job's tasks on an executor: a bounded window, deadlines, retries (map and reduce).

One loop (`run_phase`) serves every phase of every job; a `Phase` says what its tasks are
(chunks of the source for a map phase, partitions for a reduce phase) and what a finished
one means:

    while the window has room and the phase has tasks: take one, submit it
    wait for the first task, backoff or fold to finish
    a task finished      -> its value to the phase, or its failure judged by the retry
                            rules: run again after a backoff, or raise
    a backoff ended      -> submit its task again
    a deadline passed    -> ask the executor to kill the task (``task_timeout``)
    a fold finished      -> surface its exception, if any

"Outstanding" counts tasks running, tasks waiting for their backoff *and* partials not yet
folded, so neither a slow reducer nor an out-of-order wait (``ordered=True``) lets memory
grow: the source is pulled only when there is room.
"""

from __future__ import annotations

import abc
import asyncio
from typing import Any, Generic, TypeVar

from ._badrecords import SAMPLE_SIZE, BadRecord, DeadLetterFile, OnError
from ._chunker import Chunk, ChunkReader, ChunkSizer
from ._outcomes import chunk_outcome, is_pickling_error, judge, unpicklable
from ._reducer import Folder
from ._retry import RetryPolicy, Tally
from ._stats import JobStats
from ._worker.envelope import Outcome, Skipped
from ._worker.sealing import SEAL_MIN_ITEMS, seal_records
from .executors import Executor, ShippedCode

__all__ = ["Phase", "dispatch", "run_phase"]

T = TypeVar("T")

_DEADLINE_POLL = 0.05
"""Seconds between looks at a task that was due to time out but had not run long enough."""


class Phase(abc.ABC, Generic[T]):
    """The tasks of one phase of a job, as `run_phase` runs them; ``T`` describes one task.

    A task's failure is judged and retried by `run_phase`; a phase only turns a finished
    future into a value (raising the user's exception as itself) and takes the value in.
    """

    @abc.abstractmethod
    async def next_task(self) -> T | None:
        """Return the next task to submit, or ``None`` once there are no more.

        Called only when the window has room, so a phase that pulls its tasks from a
        source pulls no further ahead than that.
        """

    @abc.abstractmethod
    async def arguments(self, task: T) -> tuple[Any, ...]:
        """Return what ``task`` sends to the shipped code (again for each run)."""

    def submitted(self, task: T) -> None:
        """Note that ``task`` was submitted for the first time."""

    @abc.abstractmethod
    def identify(self, task: T) -> tuple[int, str]:
        """Return ``task``'s number within the phase (for the retry rules) and its name in
        messages (``"chunk 3 (records [30, 40) of the source)"``)."""

    @abc.abstractmethod
    def result(self, future: asyncio.Future[Any], task: T) -> Any:
        """Return the value of ``task``'s finished ``future``, or raise its failure as an
        error that names the task."""

    @abc.abstractmethod
    async def finished(self, task: T, value: Any) -> None:
        """Take in the value of ``task``, which succeeded (once, whatever its retries)."""

    def retrying(self, task: T) -> None:
        """Note that ``task`` failed and runs again after its backoff."""


async def run_phase(
    phase: Phase[T],
    executor: Executor,
    code: ShippedCode,
    stats: JobStats,
    *,
    max_in_flight: int,
    retry: RetryPolicy | None = None,
    folder: Folder | None = None,
) -> None:
    """Run every task of ``phase`` through ``code`` on ``executor``, ``max_in_flight`` at most.

    A task whose run failed in a way ``retry`` accepts waits its backoff (still counted in
    the window) and is submitted again; a run still going ``retry.task_timeout`` seconds
    after its submission is handed to `Executor.kill_task`, which stops it once it has run
    that long in a worker. ``folder``: where the phase's values are folded, whose backlog
    counts in the window and whose folds' failures end the phase. The rise of the
    executor's `Executor.workers_replaced` is added to ``stats``.

    Raises `ValueError` before submitting anything when ``retry`` has a ``task_timeout``
    and the executor cannot kill tasks.

    Cancellation: cancelling the caller cancels every outstanding task future (tasks not yet
    started never run); the caller closes the executor and the folder.
    """
    policy = retry if retry is not None else RetryPolicy()
    timeout = policy.task_timeout
    if timeout is not None and not executor.can_kill_tasks:
        raise ValueError(
            f"task_timeout needs an executor that can stop a running task; "
            f"{executor.name} cannot (use the process executor)"
        )
    loop = asyncio.get_running_loop()
    deadlines: dict[asyncio.Future[Any], float] = {}
    running: dict[asyncio.Future[Any], T] = {}
    waiting: dict[asyncio.Future[Any], T] = {}
    tally = Tally(policy)
    replaced_before = executor.workers_replaced

    async def submit(task: T) -> None:
        future = executor.submit(code.fn, *await phase.arguments(task))
        running[future] = task
        if timeout is not None:
            deadlines[future] = loop.time() + timeout

    exhausted = False
    try:
        while True:
            while not exhausted:
                backlog = folder.backlog if folder is not None else 0
                if len(running) + len(waiting) + backlog >= max_in_flight:
                    break
                task = await phase.next_task()
                if task is None:
                    exhausted = True
                    break
                await submit(task)
                phase.submitted(task)
            folds = folder.running if folder is not None else set()
            if not running and not waiting and not folds:
                return
            wait_for = None
            if deadlines:
                wait_for = max(0.0, min(deadlines.values()) - loop.time())
            done, _ = await asyncio.wait(
                [*running, *waiting, *folds], timeout=wait_for, return_when=asyncio.FIRST_COMPLETED
            )
            if deadlines and timeout is not None:
                now = loop.time()
                for future, deadline in list(deadlines.items()):
                    if future.done():
                        del deadlines[future]
                    elif deadline <= now:
                        # The executor watches the task from here on; it counts its time
                        # from when a worker starts it.
                        if executor.kill_task(future, ran_for=timeout):
                            del deadlines[future]
                        else:  # not handed to the executor yet: look again soon
                            deadlines[future] = now + max(_DEADLINE_POLL, timeout / 10)
            for future in done:
                if future in waiting:  # a backoff ended: run the task again
                    await submit(waiting.pop(future))
                    continue
                task = running.pop(future, None)
                if task is None:
                    assert folder is not None
                    folder.reap(future)
                    stats.partials_folded = folder.folded
                    continue
                try:
                    value = phase.result(future, task)
                except Exception as exc:
                    index, where = phase.identify(task)
                    delay = tally.again_after(index, judge(exc), exc, where)
                    if delay is None:
                        raise
                    phase.retrying(task)
                    waiting[asyncio.ensure_future(asyncio.sleep(delay))] = task
                    continue
                await phase.finished(task, value)
    finally:
        stats.workers_replaced += executor.workers_replaced - replaced_before
        for future in [*running, *waiting]:
            future.cancel()


class _Chunks(Phase[Chunk[Any]]):
    """A map phase: every chunk of the source, its partial folded into the job's folder."""

    def __init__(
        self,
        reader: ChunkReader[Any],
        folder: Folder,
        sizer: ChunkSizer,
        stats: JobStats,
        *,
        seals: bool,
        on_error: OnError,
        dead_letter: DeadLetterFile | None,
    ) -> None:
        self._reader = reader
        self._folder = folder
        self._sizer = sizer
        self._stats = stats
        self._seals = seals
        self._on_error: OnError = on_error
        self._dead_letter = dead_letter

    async def next_task(self) -> Chunk[Any] | None:
        stats = self._stats
        chunk = await self._reader.next_chunk()
        if chunk is None:
            if stats.bytes_total is None:
                stats.bytes_total = self._reader.total_bytes
            return None
        if chunk.split is None:
            count = len(chunk.records)
            stats._record_chunk_size(chunk.index, count)
            stats.records += count
        elif stats.bytes_total is None:
            stats.bytes_total = self._reader.total_bytes
        return chunk

    async def arguments(self, task: Chunk[Any]) -> tuple[Any, ...]:
        return (await _payload(task, self._seals), task.start)

    def submitted(self, task: Chunk[Any]) -> None:
        self._stats.chunks += 1

    def identify(self, task: Chunk[Any]) -> tuple[int, str]:
        return task.index, task.location

    def result(self, future: asyncio.Future[Any], task: Chunk[Any]) -> Outcome:
        return chunk_outcome(future, task)

    def retrying(self, task: Chunk[Any]) -> None:
        self._stats.chunks_retried += 1

    async def finished(self, task: Chunk[Any], value: Outcome) -> None:
        stats = self._stats
        stats.chunks_done += 1
        split_bytes = None if task.split is None else task.split.size
        if split_bytes is not None:
            stats.records += value.records
            read = value.bytes_read  # a blocks mapper may stop before the end
            stats.bytes_done += split_bytes if read is None else read
        stats.task_seconds += value.seconds
        stats.task_seconds_max = max(stats.task_seconds_max, value.seconds)
        stats.worker_pids.add(value.pid)
        self._sizer.observe(value.records, value.seconds, split_bytes)
        stats.records_reduced += value.records - len(value.skipped)
        if value.skipped:
            await _skip(task, value.skipped, stats, self._on_error, self._dead_letter)
        self._folder.add(task.index, value.value, task.location)


async def dispatch(
    reader: ChunkReader[Any],
    executor: Executor,
    code: ShippedCode,
    folder: Folder,
    sizer: ChunkSizer,
    stats: JobStats,
    *,
    max_in_flight: int,
    retry: RetryPolicy | None = None,
    on_error: OnError = "raise",
    dead_letter: DeadLetterFile | None = None,
) -> None:
    """Run every chunk of ``reader`` through ``code`` on ``executor`` into ``folder``.

    A chunk whose task failed in a way ``retry`` accepts waits its backoff (still counted in
    the window) and is submitted again; its partial is folded once, from the run that
    delivered it.

    Cancellation: cancelling the caller cancels every outstanding task future (tasks not yet
    started never run); the caller closes the executor, reader and folder.
    """
    chunks = _Chunks(
        reader,
        folder,
        sizer,
        stats,
        seals=executor.seals_chunks,
        on_error=on_error,
        dead_letter=dead_letter,
    )
    await run_phase(
        chunks, executor, code, stats, max_in_flight=max_in_flight, retry=retry, folder=folder
    )


async def _skip(
    chunk: Chunk[Any],
    skipped: tuple[Skipped, ...],
    stats: JobStats,
    on_error: OnError,
    dead_letter: DeadLetterFile | None,
) -> None:
    """Account for a task's bad records: count, sample or collect, and dead-letter them."""
    bad = [BadRecord(s.where or chunk.locate(s.position), s.record, s.error) for s in skipped]
    stats.records_skipped += len(bad)
    if on_error == "collect":
        stats.bad_records.extend(bad)
    room = SAMPLE_SIZE - len(stats.bad_sample)
    if room > 0:
        stats.bad_sample.extend(bad[:room])
    if dead_letter is not None:
        await dead_letter.write(bad)


async def _payload(chunk: Chunk[Any], seals: bool) -> Any:
    """What to send for ``chunk``: its records, or, for an executor whose workers unseal them
    (``seals_chunks``), a large chunk pickled on a helper thread (`seal_records`)."""
    records = chunk.records
    if seals and chunk.split is None and type(records) is list and _large(records):
        try:
            return await asyncio.to_thread(seal_records, records)
        except Exception as exc:
            if is_pickling_error(exc):
                raise unpicklable(chunk, exc, back=False) from exc
            raise
    return records


SEAL_MIN_BYTES = 1 << 20
"""A chunk of fewer records than `SEAL_MIN_ITEMS` is sealed too when its records (strings,
bytes) hold this many: one long line would otherwise be pickled on the event loop."""


def _large(records: list[Any]) -> bool:
    """Whether a chunk is worth pickling on a helper thread: many records, or big ones."""
    if len(records) >= SEAL_MIN_ITEMS:
        return True
    try:
        return sum(map(len, records)) >= SEAL_MIN_BYTES  # C speed; a guess for containers
    except TypeError:  # records without a length: numbers, say
        return False
