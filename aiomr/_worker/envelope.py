"""What a task hands back: its partial and how it was made, or its failure.

A task body returns its partial, or a `Counted` when it counts the records it read itself
(and those it skipped as bad, each a `Skipped`); `aiomr._worker.run.execute` wraps that in
the `Outcome` the caller receives, or wraps what the body raised in a `Failure`. Both cross
the process boundary back to the caller, so both pickle: a `Failure` whose exception cannot
be pickled carries an `UnpicklableError` describing it instead.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any, NamedTuple

import cloudpickle

from .._exceptions import UnpicklableError
from .._sentinels import Marker

__all__ = ["EMPTY", "Counted", "Failure", "Outcome", "Skipped", "short_repr"]


class Outcome(NamedTuple):
    """What a successful map task sends back: one partial and how it was made."""

    value: Any
    records: int
    seconds: float
    pid: int
    skipped: tuple[Any, ...] = ()
    bytes_read: int | None = None
    """For a split: the bytes it read, when not all it covers (else ``None``)."""


class Failure:
    """What a failed map task sends back: the exception, its formatted traceback, and the
    index of the record of the chunk it was raised at, when the body knows it.

    In-process executors hand the live exception back (its ``__traceback__`` intact); when a
    failure is pickled to cross a process boundary, an exception that cannot be pickled is
    replaced by an `UnpicklableError` that describes it.
    """

    __slots__ = ("exception", "pid", "reading", "record", "traceback")

    def __init__(
        self,
        exception: BaseException,
        traceback: str,
        pid: int,
        record: int | None = None,
        reading: bool = False,
    ) -> None:
        self.exception = exception
        self.traceback = traceback
        self.pid = pid
        self.record = record
        self.reading = reading
        """Raised while the task read its input, not by the job's code."""

    def __reduce__(self) -> tuple[Any, tuple[bytes, str, int, int | None, bool]]:
        portable = _portable(self.exception)
        return (
            _unpickle_failure,
            (portable, self.traceback, self.pid, self.record, self.reading),
        )


def _portable(exc: BaseException) -> bytes:
    """Pickle ``exc`` for the trip back, or an `UnpicklableError` describing it.

    cloudpickle, not pickle: an exception class defined in the caller's ``__main__`` reached
    the worker by value, and only cloudpickle can send it back the same way (the caller then
    recognises its own class).
    """
    try:
        data: bytes = cloudpickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(data)
    except Exception as err:
        data = pickle.dumps(
            UnpicklableError(
                f"{type(exc).__module__}.{type(exc).__qualname__}: {exc} "
                f"(the original exception cannot be pickled: {err})"
            )
        )
    return data


def _unpickle_failure(
    exception: bytes, formatted: str, pid: int, record: int | None = None, reading: bool = False
) -> Failure:
    return Failure(pickle.loads(exception), formatted, pid, record, reading)


EMPTY: Any = Marker(__name__, "EMPTY")
"""The partial of a task that read no record (an empty compressed file, say): folded as
nothing at all by the caller."""


class Counted(NamedTuple):
    """A body's result with the records it read, and the records it skipped as bad."""

    value: Any
    records: int
    skipped: tuple[Skipped, ...] = ()
    bytes_read: int | None = None
    """For a split: the bytes it read, when not all it covers (else ``None``)."""


class Skipped(NamedTuple):
    """A record the mapper or parser failed on, skipped under ``on_error="skip"``."""

    position: int
    """Position of the record in its chunk (or split)."""
    record: str
    """A short repr of the record."""
    error: str
    """The exception's type and message."""
    where: str = ""
    """Where the record came from, when the worker knows better than the caller."""

    @classmethod
    def of(
        cls,
        index: int,
        raw: Any,
        exc: BaseException,
        where: Callable[[int, Any], str] | None = None,
    ) -> Skipped:
        """Describe record ``raw`` (``index`` in its chunk) that failed with ``exc``."""
        located = where(index, raw) if where is not None else ""
        return cls(index, short_repr(raw), f"{type(exc).__qualname__}: {exc}", located)


_REPR_LIMIT = 200


def short_repr(value: Any) -> str:
    """Return ``repr(value)`` cut to a readable length."""
    text = repr(value)
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."
