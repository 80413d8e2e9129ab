"""Combine large partials on the Dask workers: a tree reduction, the final fold in the caller.

::

    map task ──► partial small ────────────────────────────────► caller: Folder (as usual)
             └─► partial large: stays on its worker, the caller
                 gets only its envelope (records, seconds, pid)
                        │
                        ▼
                 two finished remote partials ──► combine task on a worker ──► one remote
                 (Dask moves one of them next      reducer(left, right)        partial, paired
                 to the other if they live apart)                              again when done
                                                                                      │
                              job drained: the last remote partial ──► caller folds it ┘

A partial pickled to more than ``combine_above`` bytes is not worth the trip to the caller:
it would cost the caller a transfer, an unpickling and a fold, where a combine task on the
workers costs one scheduling round trip. Jobs start by sending partials back; the first one
over the limit switches the job to holding them (see `DaskExecutor`). Only unordered jobs
combine on the workers: for ``ordered=True`` the reducer's order is the input's, which a
tree of whatever finishes first cannot keep, and a live view of the running value (streams)
needs every partial in the caller.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from .._exceptions import WorkerTraceback
from .._reducer import Folder
from .._sentinels import Marker
from .._worker.envelope import EMPTY, Failure, Outcome

if TYPE_CHECKING:
    import distributed

    from ._base import ShippedCode
    from ._dask import DaskExecutor

__all__ = [
    "HELD",
    "Held",
    "HeldPartial",
    "ReducerFailed",
    "TreeFolder",
    "combine",
    "envelope",
    "hold_large",
    "reducer_error",
]


# Worker side ---------------------------------------------------------------------------------


HELD: Any = Marker(__name__, "HELD")
"""Stands in an envelope for the partial that stayed on the worker."""


class Held:
    """A partial kept in a worker's memory: its pickled value, and the envelope the caller
    fetches instead (the task's `Outcome` with the value replaced by `HELD`)."""

    __slots__ = ("envelope", "value")

    def __init__(self, envelope: bytes, value: bytes) -> None:
        self.envelope = envelope
        self.value = value

    def __reduce__(self) -> tuple[type[Held], tuple[bytes, bytes]]:
        return (Held, (self.envelope, self.value))


def hold_large(result: Any, limit: int, dumps: Callable[[Any], bytes]) -> Held | None:
    """Return ``result`` held, when it is an `Outcome` whose value pickles to over ``limit``
    bytes; None to send it back whole (also when its value cannot be pickled: the usual
    path then reports that)."""
    if not isinstance(result, Outcome) or result.value is EMPTY:
        return None
    try:
        value = dumps(result.value)
    except Exception:
        return None
    if len(value) <= limit:
        return None
    return Held(dumps(result._replace(value=HELD)), value)


def envelope(result: bytes | Held) -> bytes:
    """The Dask task the caller fetches for a map task that may hold its partial."""
    return result.envelope if isinstance(result, Held) else result


class ReducerFailed(Exception):
    """Raised by a combine task when the reducer raised; carries the pickled `Failure`."""

    def __str__(self) -> str:
        # What a worker logs: the reducer's error, not the bytes that carry it.
        failure: Failure = pickle.loads(self.args[0])
        return f"the reducer raised {type(failure.exception).__name__}: {failure.exception}"


def combine(reducer: Callable[[Any, Any], Any], left: Held, right: Held) -> Held:
    """The Dask task that folds two held partials into one, on a worker."""
    try:
        value = reducer(pickle.loads(left.value), pickle.loads(right.value))
    except Exception as exc:
        failure = Failure(exc, traceback.format_exc(), os.getpid())
        raise ReducerFailed(pickle.dumps(failure, protocol=pickle.HIGHEST_PROTOCOL)) from None
    return Held(b"", pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def reducer_error(failed: ReducerFailed) -> BaseException:
    """The user's exception out of a failed combine task, as every executor reports it."""
    failure: Failure = pickle.loads(failed.args[0])
    error = failure.exception
    error.__cause__ = WorkerTraceback(failure.traceback)
    error.add_note(
        f"aiomr: raised by the reducer while combining partials on a Dask worker "
        f"(pid {failure.pid})"
    )
    return error


# Caller side ---------------------------------------------------------------------------------


class HeldPartial:
    """The partial of one chunk, left on the worker that made it (a Dask future)."""

    __slots__ = ("future",)

    def __init__(self, future: distributed.Future[Any]) -> None:
        self.future = future


class TreeFolder(Folder):
    """A `Folder` that also takes `HeldPartial`: pairs of them are combined on the workers
    as soon as both exist, and `drain` folds the one left into the caller's value.

    A combine under way counts in `Folder.running`, so against the job's in-flight window:
    partials waiting on the workers are bounded like those waiting in the caller.

    Cancellation: `aclose` cancels the combines under way; the partials still on the
    workers are released with their futures.
    """

    def __init__(
        self, executor: DaskExecutor, reducer: Callable[[Any, Any], Any], *, initial: Any
    ) -> None:
        super().__init__(reducer, initial=initial)
        self._executor = executor
        self._reducer_code: ShippedCode | None = None
        self._unpaired: tuple[distributed.Future[Any], int] | None = None
        """A finished remote partial waiting for a partner, and how many chunks it holds."""

    def bind(self, code: ShippedCode) -> None:
        """Let the job shipped as ``code`` hold its large partials on the workers."""
        self._reducer_code = self._executor._hold_partials(code, self._reducer)

    def add(self, index: int, partial: Any, location: str) -> None:
        if not isinstance(partial, HeldPartial):
            super().add(index, partial, location)
            return
        self.added += 1
        if self.changed is not None:
            self.changed.set()
        self._pair(partial.future, 1)

    def _pair(self, future: distributed.Future[Any], chunks: int) -> None:
        if self._closed:
            return
        if self._unpaired is None:
            self._unpaired = (future, chunks)
            return
        (other, more), self._unpaired = self._unpaired, None
        assert self._reducer_code is not None, "bind() comes before held partials"
        task = asyncio.ensure_future(self._executor._combine(self._reducer_code.fn, other, future))
        self.running.add(cast("asyncio.Future[None]", task))  # reaped like a fold
        task.add_done_callback(lambda done: self._combined(done, chunks + more))

    def _combined(self, task: asyncio.Future[Any], chunks: int) -> None:
        # The dispatcher (or `drain`) reaps the task and reports its failure.
        if not task.cancelled() and task.exception() is None:
            self._pair(task.result(), chunks)

    async def drain(self) -> Any:
        await super().drain()  # every local fold and every combine under way
        if self._unpaired is not None:
            (future, chunks), self._unpaired = self._unpaired, None
            value = await self._executor._fetch_held(future)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(
                self._thread, self._fold, value, "the partials combined on the Dask workers"
            )
            self.folded += chunks - 1
        return self._value

    async def aclose(self) -> None:
        self._unpaired = None
        await super().aclose()
        if self._reducer_code is not None:
            self._reducer_code.release()
