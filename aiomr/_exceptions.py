"""Exceptions raised by aiomr.

Every exception aiomr raises itself derives from `AiomrError`. Exceptions raised by *your*
code (a mapper or a reducer) are never wrapped: they reach the caller as themselves, with the
worker's traceback attached as ``__cause__`` (a `WorkerTraceback`) and a note naming the
chunk that failed.

The tree:

    AiomrError
    ├── ClosedResourceError      you closed it: the engine or executor was already closed
    ├── EmptySourceError         the source yielded nothing and no ``initial`` was given
    │                            (also a ValueError)
    ├── RecordError              malformed input: a line that does not decode or parse
    │                            (also a ValueError); names the file and line
    ├── MapperOutputError        a key-value mapper, or a Job's reducer, emitted
    │                            something other than ``(key, value)`` pairs with
    │                            hashable, picklable keys (also a TypeError)
    ├── BrokenInputError         something outside failed: an input file ended early,
    │                            changed while the job read it, or holds corrupt
    │                            compressed data
    ├── BrokenWorkerError        something outside failed: a worker process died or
    │                            its result could not travel back
    │   └── UnpicklableError     a record, a partial result or a worker's exception
    │                            could not be pickled (also a TypeError)
    └── WorkerTraceback          not raised: carries a worker's formatted traceback as
                                 the ``__cause__`` of an exception from user code

Argument errors are plain `ValueError` and `TypeError` with exact messages.
"""

from __future__ import annotations

__all__ = [
    "AiomrError",
    "BrokenInputError",
    "BrokenWorkerError",
    "ClosedResourceError",
    "EmptySourceError",
    "MapperOutputError",
    "RecordError",
    "UnpicklableError",
    "WorkerTraceback",
]


class AiomrError(Exception):
    """Root of every exception aiomr raises itself."""


class ClosedResourceError(AiomrError):
    """An engine or executor was used after ``aclose()``."""


class EmptySourceError(AiomrError, ValueError):
    """The source yielded no records and no ``initial`` value was given."""


class RecordError(AiomrError, ValueError):
    """A record of the input is malformed: it does not decode, or does not parse.

    The message says what is wrong and where: ``path:LINE`` for lines streamed by the
    caller, ``path:LINE (byte OFFSET)`` for byte-range splits read by the workers.

    A ``mode="blocks"`` mapper that finds a bad line in a block it was given raises
    ``RecordError(message, offset=...)`` with the line's byte offset in that block; aiomr
    then raises a new one whose message starts with the line's location.
    """

    offset: int | None
    """Where the bad record starts in the block a ``mode="blocks"`` mapper was given, in
    bytes from the block's start; ``None`` when the error says nothing of it."""
    location: str | None
    """``path:LINE`` or ``path:LINE (byte OFFSET)`` once aiomr knows where the record came
    from (the message starts with it then); ``None`` before."""
    index: int | None
    """Position of the record in the chunk it was parsed in (set by the workers, so the
    caller can name its file and line)."""

    def __init__(
        self, *args: object, offset: int | None = None, location: str | None = None
    ) -> None:
        super().__init__(*args)
        self.offset = offset
        self.location = location
        self.index = None


class MapperOutputError(AiomrError, TypeError):
    """A key-value mapper, or the reducer of an `aiomr.Job`, emitted something that is not a
    usable ``(key, value)`` pair."""


class BrokenInputError(AiomrError):
    """An input file could not give the bytes the job planned to read.

    It ended before the planned end (truncated, or shrank while read), it was replaced or
    modified in place after the job planned its splits, or its compressed data is cut short
    or corrupt. The message names the file and the sizes or offset concerned. Not a
    `RecordError`: no record is malformed, the input itself is broken, and skipping
    (``on_error="skip"``) does not apply.
    """


class BrokenWorkerError(AiomrError):
    """A worker failed for a reason outside user code: it died, got stuck, or could not start."""


class UnpicklableError(BrokenWorkerError, TypeError):
    """Something could not be pickled to cross between the caller and a worker.

    A record on its way to a worker, a partial result on its way back, or an exception
    raised in a worker; the message names the chunk and what could not be pickled.
    """


class WorkerTraceback(AiomrError):
    """The traceback of an exception raised in a worker, attached as its ``__cause__``.

    Its message is the traceback exactly as the worker formatted it, so Python prints the
    worker-side frames above the caller-side ones, as `concurrent.futures` does.
    """

    def __init__(self, formatted: str) -> None:
        super().__init__(formatted)
        self.formatted = formatted

    def __str__(self) -> str:
        return f'\n"""\n{self.formatted.rstrip()}\n"""'
