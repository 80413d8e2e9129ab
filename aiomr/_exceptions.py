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
    │                            (also a ValueError); names the file and line or offset
    ├── MapperOutputError        a key-value mapper, or a Job's reducer, emitted
    │                            something other than ``(key, value)`` pairs with
    │                            hashable, picklable keys (also a TypeError)
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

    The message says what is wrong and where: file name and line number for lines streamed
    by the caller, file name and byte offset of the line for byte-range splits.
    """


class MapperOutputError(AiomrError, TypeError):
    """A key-value mapper, or the reducer of an `aiomr.Job`, emitted something that is not a
    usable ``(key, value)`` pair."""


class BrokenWorkerError(AiomrError):
    """A worker failed for a reason outside user code (it died, or its pool broke)."""


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
