"""Which record a failed task was working on: noted in the worker, read by `execute`.

A task body knows, when its mapper or reducer raises, which record of its chunk it was on;
the caller knows where that record came from (a position in the source, a file and line).
The body notes the record's index on the exception on its way out, `execute` takes the note
off again (the user's exception reaches the caller as it was raised) and hands the index
over in the task's `Failure`.

Bodies find the index at no cost per record: they keep the iterator of the chunk's list,
and on failure what it has left says how many records it handed out (a list iterator's
``__length_hint__`` is exact). An error from reading the input itself (a file that cannot
be read, a line that does not decode) names its own place: it is noted as the input's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = [
    "INPUT",
    "note_input",
    "note_no_record",
    "note_record",
    "reading",
    "shift_record",
    "take_note",
]

T = TypeVar("T")

_NOTE = "_aiomr_record"
"""The attribute that carries the note: every exception has a ``__dict__``."""

INPUT = "input"
"""Noted instead of an index: raised while reading the input, not by the job's code."""


def note_record(exc: BaseException, index: int | None) -> None:
    """Note that ``exc`` was raised at record ``index`` of the task's chunk (``None``: at no
    record in particular). The first note stands: the innermost body knows best."""
    exc.__dict__.setdefault(_NOTE, index)


def note_input(exc: BaseException) -> None:
    """Note that ``exc`` was raised while reading the input (unless noted already)."""
    exc.__dict__.setdefault(_NOTE, INPUT)


def note_no_record(exc: BaseException) -> None:
    """Note that ``exc`` is about no record, whatever an inner loop noted (a ``mapper_final``
    hook runs through the record loop, but after the last record)."""
    exc.__dict__[_NOTE] = None


def shift_record(exc: BaseException, by: int) -> None:
    """Add ``by`` to the index noted on ``exc``, if one is: for bodies whose inner loop counts
    from the chunk's position in the source rather than from 0."""
    index = exc.__dict__.get(_NOTE)
    if isinstance(index, int):
        exc.__dict__[_NOTE] = index + by


def take_note(exc: BaseException) -> int | str | None:
    """Remove the note from ``exc`` and return it: a record's index, `INPUT`, or ``None``."""
    note: int | str | None = exc.__dict__.pop(_NOTE, None)
    return None if isinstance(note, int) and note < 0 else note


def reading(items: Iterable[T]) -> Iterator[T]:
    """Yield ``items``, noting an error raised while producing them as the input's.

    For what a task reads itself (the blocks of a file split): such an error names its own
    place, and is not the job's code. One generator step per item: wrap blocks, not records.
    """
    try:
        yield from items
    except Exception as exc:
        note_input(exc)
        raise
