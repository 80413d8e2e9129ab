"""Fold partial results into the job's result, incrementally, off the event loop.

Partials are folded the moment they arrive (``ordered=False``) or in input order
(``ordered=True``, out-of-order partials wait in a buffer). The fold itself is user code, and
merging large partials takes milliseconds, so every fold runs on one dedicated helper thread:
one thread keeps folds sequential and in submission order without a lock, and the event loop
only schedules them. The dispatcher counts `Folder.backlog` against its in-flight window,
so buffered and unfolded partials stay bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ._sentinels import MISSING
from ._worker.envelope import EMPTY
from ._worker.sealing import unseal

if TYPE_CHECKING:
    from .executors import ShippedCode

__all__ = ["Folder"]


class Folder:
    """Fold partials with ``reducer``, starting from ``initial`` when one is given.

    Cancellation: `aclose` abandons folds not yet started; a fold already running on the
    helper thread finishes there, and its result is dropped.
    """

    def __init__(
        self,
        reducer: Callable[[Any, Any], Any],
        *,
        initial: Any = MISSING,
        ordered: bool = False,
    ) -> None:
        self._reducer = reducer
        self._value: Any = initial
        self._ordered = ordered
        self._next_index = 0
        self._buffer: dict[int, tuple[Any, str]] = {}
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="aiomr-fold")
        self.running: set[asyncio.Future[None]] = set()
        """Folds scheduled on the helper thread and not finished."""
        self.folded = 0
        self._closed = False
        self.added = 0
        """Partials handed to `add` so far."""
        self.changed: asyncio.Event | None = None
        """Set by `add` when given: lets a watcher of the running value wake up."""

    def bind(self, code: ShippedCode) -> None:
        """Learn the job's shipped code, before its first task; a folder the executor made
        (`aiomr.executors.Executor.open_folder`) may need it. This one does not."""

    @property
    def backlog(self) -> int:
        """Partials held here: buffered for order, or waiting to be folded."""
        return len(self._buffer) + len(self.running)

    @property
    def value(self) -> Any:
        """The running result (`MISSING` before anything was folded without initial)."""
        return self._value

    def add(self, index: int, partial: Any, location: str) -> None:
        """Accept the partial of chunk ``index``; fold it now or when its turn comes."""
        self.added += 1
        if self.changed is not None:
            self.changed.set()
        if partial is EMPTY:
            self.folded += 1
            if not self._ordered:
                return
        if not self._ordered:
            self._schedule(partial, location)
            return
        self._buffer[index] = (partial, location)
        while self._next_index in self._buffer:
            partial, location = self._buffer.pop(self._next_index)
            self._next_index += 1
            self._schedule(partial, location)

    def _schedule(self, partial: Any, location: str) -> None:
        if partial is EMPTY:  # an ordered slot that holds nothing
            return
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._thread, self._fold, partial, location)
        self.running.add(future)

    def _fold(self, partial: Any, location: str) -> None:
        partial = unseal(partial)  # here, off the event loop, in slices
        if self._value is MISSING:
            self._value = partial
        else:
            try:
                self._value = self._reducer(self._value, partial)
            except Exception as exc:
                exc.add_note(
                    f"aiomr: raised by the reducer while folding the partial of {location}"
                )
                raise
        self.folded += 1

    async def snapshot(self, view: Callable[[Any], Any]) -> Any:
        """Return ``view(value)``, computed on the helper thread after every fold scheduled so
        far, so it sees a consistent value; `MISSING` while nothing was folded."""
        if self._closed:
            return MISSING
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, self._view, view)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            return MISSING  # the job ended meanwhile and closed the folder

    def _view(self, view: Callable[[Any], Any]) -> Any:
        value = self._value
        return MISSING if value is MISSING else view(value)

    async def drain(self) -> Any:
        """Wait for every scheduled fold and return the result."""
        while self.running:
            future = self.running.pop()
            await future
        if self._buffer:  # pragma: no cover - the dispatcher never leaves gaps
            raise RuntimeError(f"partials of chunks {sorted(self._buffer)} were never folded")
        return self._value

    def reap(self, future: asyncio.Future[None]) -> None:
        """Forget a finished fold; raise its exception if it failed."""
        self.running.discard(future)
        future.result()

    async def aclose(self) -> None:
        """Release the helper thread. Idempotent."""
        self._closed = True
        for future in self.running:
            future.cancel()
        self._thread.shutdown(wait=False, cancel_futures=True)
