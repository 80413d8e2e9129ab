"""Run one map task in a worker: unseal its chunk, time its body, capture what it made or raised.

Every map task of every executor is `execute` around a task body (`aiomr._worker.bodies`,
`aiomr._keyed.tasks`): the caller learns from the one `Outcome` or `Failure` it returns how
many records the task read, how long it took, which process ran it and, on failure, at which
record of the chunk it failed (`aiomr._worker.blame`). Nothing here touches the event loop.
"""

from __future__ import annotations

import os
import pickle
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from .blame import INPUT, take_note
from .envelope import Counted, Failure, Outcome, Skipped
from .sealing import Sealed, seal

__all__ = ["execute", "execute_async"]


def execute(body: Callable[[Any, int], Any], payload: Any, start: int) -> Outcome | Failure:
    """Run one map task and capture its result or its failure, never raising.

    ``start`` is the position in the source of the payload's first record. A body that
    failed at a record notes which (`aiomr._worker.blame`); the note travels in the `Failure`.
    """
    started = time.perf_counter()
    try:
        if type(payload) is Sealed:  # a chunk the caller pickled itself (`seal_records`)
            payload = pickle.loads(payload.data)
        value = body(payload, start)
    except Exception as exc:
        return _failure(exc)
    return _outcome(value, payload, started)


async def execute_async(
    body: Callable[[Any, int], Awaitable[Any]], payload: Any, start: int
) -> Outcome | Failure:
    """`execute` for a body that is a coroutine function, on the caller's loop (inline)."""
    started = time.perf_counter()
    try:
        if type(payload) is Sealed:
            payload = pickle.loads(payload.data)
        value = await body(payload, start)
    except Exception as exc:
        return _failure(exc)
    return _outcome(value, payload, started)


def _failure(exc: Exception) -> Failure:
    note = take_note(exc)
    formatted = "".join(traceback.format_exception(exc))
    record = note if isinstance(note, int) else None
    return Failure(exc, formatted, os.getpid(), record, reading=note == INPUT)


def _outcome(value: Any, payload: Any, started: float) -> Outcome:
    skipped: tuple[Skipped, ...] = ()
    read = None
    if isinstance(value, Counted):
        value, count, skipped, read = value
    else:
        count = len(payload) if isinstance(payload, list) else 0
    seconds = time.perf_counter() - started
    return Outcome(seal(value), count, seconds, os.getpid(), skipped, read)
