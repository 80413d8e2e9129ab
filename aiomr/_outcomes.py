"""What a finished task means: its value, or the user's exception as itself, and whose fault.

A task's future holds one of three things. An `aiomr._worker.envelope.Outcome`: the task
ran. An `aiomr._worker.envelope.Failure`: user code (or aiomr's reading of the input) raised
in the worker; the exception is raised here as itself, the worker's traceback as its
``__cause__``. Or the future failed: the executor could not run the task (a lost worker,
something that cannot be pickled), which becomes an aiomr error naming the task. `judge`
then tells the retry rules whether the failure counts against the task.
"""

from __future__ import annotations

import asyncio
import pickle
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ._chunker import Chunk
from ._exceptions import (
    BrokenWorkerError,
    MapperOutputError,
    RecordError,
    UnpicklableError,
    WorkerTraceback,
)
from ._retry import Verdict
from ._worker.envelope import Failure, Outcome
from .executors._base import WorkerLost
from .executors._process_worker import ReplyPicklingError

__all__ = [
    "chunk_outcome",
    "is_pickling_error",
    "judge",
    "lost_worker_error",
    "outcome_of",
    "unpicklable",
]


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


def is_pickling_error(exc: BaseException) -> bool:
    """Whether ``exc`` says that something could not be pickled."""
    if isinstance(exc, pickle.PicklingError):
        return True
    return isinstance(exc, TypeError | AttributeError) and "pickle" in str(exc)


def unpicklable(chunk: Chunk[Any], exc: BaseException, *, back: bool) -> UnpicklableError:
    """The error for a chunk whose records (or, ``back``, whose partial) cannot be pickled."""
    way = "its partial result" if back else "one of its records"
    return UnpicklableError(
        f"{chunk.location}: {way} cannot be pickled to cross to "
        f"{'the caller' if back else 'a worker'}: {exc}"
    )


def chunk_outcome(future: asyncio.Future[Any], chunk: Chunk[Any]) -> Outcome:
    """Return a map task's outcome, or raise the mapper's exception as itself."""
    try:
        result = future.result()
    except BrokenProcessPool as exc:
        raise lost_worker_error(f"running {chunk.location}", exc) from exc
    except Exception as exc:
        # The executor itself failed the task: typically something that cannot be pickled,
        # a record on its way out (the caller's feeder thread) or a partial on its way back
        # (the worker, whose traceback then comes as the cause).
        if is_pickling_error(exc):
            back = isinstance(exc, ReplyPicklingError) or "_sendback_result" in str(exc.__cause__)
            raise unpicklable(chunk, exc, back=back) from exc
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
