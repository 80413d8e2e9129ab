"""Keep at most ``max_in_flight`` chunks outstanding and hand finished partials to the folder.

The loop below is the whole scheduler:

    while the window has room and the source has records: pull a chunk, submit it
    wait for the first map task or fold to finish
    a map task finished  -> turn a failure into the user's exception, else fold its partial
    a fold finished      -> surface its exception, if any

"Outstanding" counts map tasks running *and* partials not yet folded, so neither a slow
reducer nor an out-of-order wait (``ordered=True``) lets memory grow: the source is pulled only
when there is room.
"""

from __future__ import annotations

import asyncio
import pickle
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ._badrecords import SAMPLE_SIZE, BadRecord, DeadLetterFile, OnError
from ._chunker import Chunk, ChunkReader, ChunkSizer
from ._exceptions import (
    BrokenWorkerError,
    MapperOutputError,
    RecordError,
    UnpicklableError,
    WorkerTraceback,
)
from ._reducer import Folder
from ._retry import RetryPolicy, Tally, Verdict
from ._stats import JobStats
from ._worker import SEAL_MIN_ITEMS, Failure, Outcome, Skipped, seal_records
from .executors import Executor, ShippedCode
from .executors._base import WorkerLost
from .executors._process_worker import ReplyPicklingError

__all__ = ["Verdict", "dispatch", "judge", "lost_worker_error", "outcome_of"]

_DEADLINE_POLL = 0.05
"""Seconds between looks at a task that was due to time out but had not run long enough."""


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
    policy = retry if retry is not None else RetryPolicy()
    timeout = policy.task_timeout
    kill_task = getattr(executor, "kill_task", None)
    token = getattr(code.fn, "token", None)
    if timeout is not None and (kill_task is None or token is None):
        raise ValueError(
            f"task_timeout needs an executor that can stop a running task; "
            f"{type(executor).__name__} cannot (use the process executor)"
        )
    loop = asyncio.get_running_loop()
    deadlines: dict[asyncio.Future[Any], float] = {}
    pending: dict[asyncio.Future[Any], Chunk[Any]] = {}
    waiting: dict[asyncio.Future[Any], Chunk[Any]] = {}
    tally = Tally(policy)
    replaced_before = getattr(executor, "workers_replaced", 0)
    seals = bool(getattr(executor, "seals_chunks", False))
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) + len(waiting) + folder.backlog < max_in_flight:
                chunk = await reader.next_chunk()
                if chunk is None:
                    exhausted = True
                    if stats.bytes_total is None:
                        stats.bytes_total = reader.total_bytes
                    break
                if chunk.split is None:
                    count = len(chunk.records)
                    stats._record_chunk_size(chunk.index, count)
                    stats.records += count
                elif stats.bytes_total is None:
                    stats.bytes_total = reader.total_bytes
                future = executor.submit(code.fn, await _payload(chunk, seals), chunk.start)
                pending[future] = chunk
                if timeout is not None:
                    deadlines[future] = loop.time() + timeout
                stats.chunks += 1
            if not pending and not waiting and not folder.running:
                return
            wait_for = None
            if deadlines:
                wait_for = max(0.0, min(deadlines.values()) - loop.time())
            done, _ = await asyncio.wait(
                [*pending, *waiting, *folder.running],
                timeout=wait_for,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if deadlines:
                now = loop.time()
                for future, deadline in list(deadlines.items()):
                    if future.done():
                        del deadlines[future]
                    elif deadline <= now and kill_task is not None:
                        # The executor watches the task from here on; it counts its time
                        # from when a worker starts it.
                        if kill_task(token, pending[future].start, ran_for=timeout or 0.0):
                            del deadlines[future]
                        else:  # not handed to the executor yet: look again soon
                            deadlines[future] = now + max(_DEADLINE_POLL, (timeout or 0.0) / 10)
            for future in done:
                if future in waiting:  # a backoff ended: run the chunk again
                    again = waiting.pop(future)
                    payload = await _payload(again, seals)
                    resubmitted = executor.submit(code.fn, payload, again.start)
                    pending[resubmitted] = again
                    if timeout is not None:
                        deadlines[resubmitted] = loop.time() + timeout
                    continue
                finished = pending.pop(future, None)
                if finished is None:
                    folder.reap(future)
                    stats.partials_folded = folder.folded
                    continue
                try:
                    outcome = _outcome(future, finished)
                except Exception as exc:
                    verdict = judge(exc)
                    delay = tally.again_after(finished.index, verdict, exc, finished.location)
                    if delay is None:
                        raise
                    stats.chunks_retried += 1
                    waiting[asyncio.ensure_future(asyncio.sleep(delay))] = finished
                    continue
                stats.chunks_done += 1
                split_bytes = None if finished.split is None else finished.split.size
                if split_bytes is not None:
                    stats.records += outcome.records
                    read = outcome.bytes_read  # a blocks mapper may stop before the end
                    stats.bytes_done += split_bytes if read is None else read
                stats.task_seconds += outcome.seconds
                stats.task_seconds_max = max(stats.task_seconds_max, outcome.seconds)
                stats.worker_pids.add(outcome.pid)
                sizer.observe(outcome.records, outcome.seconds, split_bytes)
                stats.records_reduced += outcome.records - len(outcome.skipped)
                if outcome.skipped:
                    await _skip(finished, outcome.skipped, stats, on_error, dead_letter)
                folder.add(finished.index, outcome.value, finished.location)
    finally:
        stats.workers_replaced += getattr(executor, "workers_replaced", 0) - replaced_before
        for future in [*pending, *waiting]:
            future.cancel()


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


def _is_pickling_error(exc: BaseException) -> bool:
    if isinstance(exc, pickle.PicklingError):
        return True
    return isinstance(exc, TypeError | AttributeError) and "pickle" in str(exc)


def _unpicklable(chunk: Chunk[Any], exc: BaseException, *, back: bool) -> UnpicklableError:
    way = "its partial result" if back else "one of its records"
    return UnpicklableError(
        f"{chunk.location}: {way} cannot be pickled to cross to "
        f"{'the caller' if back else 'a worker'}: {exc}"
    )


async def _payload(chunk: Chunk[Any], seals: bool) -> Any:
    """What to send for ``chunk``: its records, or, for an executor whose workers unseal them
    (``seals_chunks``), a large chunk pickled on a helper thread (`seal_records`)."""
    records = chunk.records
    if seals and chunk.split is None and type(records) is list and _large(records):
        try:
            return await asyncio.to_thread(seal_records, records)
        except Exception as exc:
            if _is_pickling_error(exc):
                raise _unpicklable(chunk, exc, back=False) from exc
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


def judge(exc: BaseException) -> Verdict:
    """Judge a failed task by its exception: whose fault was it?

    An executor that knows says so with `aiomr.executors.WorkerLost` (the cause of the
    `BrokenWorkerError` raised here): a worker SIGKILLed from outside or stopped did nothing
    wrong, so its task was ``"killed"`` and that loss does not use up its attempts. Every
    other failure -- an exception from user code, a crash, a pool that could not tell --
    counts as ``"failed"``.
    """
    lost = exc.__cause__ if isinstance(exc, BrokenWorkerError) else None
    if isinstance(lost, WorkerLost):
        return lost.verdict
    return "failed"


def lost_worker_error(what: str, lost: BrokenProcessPool) -> BrokenWorkerError:
    """The error for a task whose worker ended while running ``what``; the caller raises it
    ``from`` the executor's own error, which says how the worker ended."""
    how = f" ({lost.description})" if isinstance(lost, WorkerLost) else ""
    return BrokenWorkerError(f"a worker process died while {what}{how}")


def _outcome(future: asyncio.Future[Any], chunk: Chunk[Any]) -> Outcome:
    """Return the task's outcome, or raise the mapper's exception as itself."""
    try:
        result = future.result()
    except BrokenProcessPool as exc:
        raise lost_worker_error(f"running {chunk.location}", exc) from exc
    except Exception as exc:
        # The executor itself failed the task: typically something that cannot be pickled,
        # a record on its way out (the caller's feeder thread) or a partial on its way back
        # (the worker, whose traceback then comes as the cause).
        if _is_pickling_error(exc):
            back = isinstance(exc, ReplyPicklingError) or "_sendback_result" in str(exc.__cause__)
            raise _unpicklable(chunk, exc, back=back) from exc
        exc.add_note(f"aiomr: the executor failed {chunk.location}")
        raise
    where = None
    if isinstance(result, Failure) and result.record is not None:
        where = chunk.locate(result.record)
        if isinstance(result.exception, RecordError) and chunk.split is None:
            # Parsed in the worker, located here: only the caller knows file and line.
            located = RecordError(f"{where}: {result.exception}", location=where)
            result = Failure(located, result.traceback, result.pid, result.record, result.reading)
    outcome: Outcome = outcome_of(result, chunk.location, record=where)
    return outcome


def outcome_of(result: Any, location: str, *, record: str | None = None) -> Any:
    """Return a task's value, or raise the exception raised in it, as itself.

    The exception gets a note saying what raised it (user code, or aiomr's own reading of
    the input or of the mapper's output), in the task for ``location``, at ``record`` when
    the task knows which record it was on.
    """
    if isinstance(result, Failure):
        error = result.exception
        if error.__traceback__ is None:  # it crossed a process boundary
            error.__cause__ = WorkerTraceback(result.traceback)
        where = f"at {record}, in {location}" if record else f"in {location}"
        error.add_note(f"aiomr: {_raised_by(result)} {where} (pid {result.pid})")
        raise error
    return result


def _raised_by(failure: Failure) -> str:
    """What raised a task's exception, for its note."""
    if isinstance(failure.exception, RecordError):
        return "malformed input"  # aiomr's own decoding or parsing found it
    if isinstance(failure.exception, MapperOutputError):
        return "unusable key-value output"  # aiomr's check of the pairs found it
    if failure.reading:
        return "raised while reading the input"
    return "raised by user code"
