"""Hand a query's rows out one at a time, while the next batch is already being fetched.

Two costs decide how fast rows leave a query: the round trip per batch, and the cost per
row of getting it to the consumer.

* While the consumer takes the rows of one batch, a task fetches the next, so the database
  produces rows while the caller is busy with the previous ones rather than after.
* The iterator is a class whose ``__anext__`` is a coroutine returning the next row of a list
  iterator: about 40% cheaper per row than an async generator's ``yield`` (which wraps every
  value and goes through an extra ``asend`` object), and rows are the hot path.

At most two batches are held: the one being handed out and the one fetched ahead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Any, Generic, TypeVar

__all__ = ["RowIterator"]

Row = TypeVar("Row")


class RowIterator(Generic[Row]):
    """The rows of ``batches``, one by one; errors name the row where they happened.

    Cancellation: `aclose` (called by jobs when they end, however they end) cancels the
    fetch running ahead and closes ``batches``, which ends the cursor's transaction and
    gives back its connection.
    """

    def __init__(self, batches: AsyncGenerator[list[Any], None], describe: Callable[[], str]):
        self._batches = batches
        self._describe = describe
        self._next: Callable[[], Any] = iter(()).__next__
        self._ahead: asyncio.Task[list[Any] | None] | None = None
        self._position = 0
        """Rows in the batches handed out so far, the current one included."""
        self._done = False

    def __aiter__(self) -> RowIterator[Row]:
        return self

    async def __anext__(self) -> Row:
        try:
            row: Row = self._next()
        except StopIteration:
            return await self._advance()
        return row

    async def _advance(self) -> Row:
        """Take the batch fetched ahead (fetching it now if none is), start the next one."""
        while not self._done:
            if self._ahead is None:
                self._ahead = self._fetch_ahead()
            try:
                batch = await self._ahead
            except Exception as exc:
                exc.add_note(f"aiomr: reading {self._describe()} failed at row {self._position}")
                raise
            finally:
                if self._ahead.done():
                    self._ahead = None
            if batch is None:
                break
            self._ahead = self._fetch_ahead()
            self._position += len(batch)
            self._next = iter(batch).__next__
            with contextlib.suppress(StopIteration):
                row: Row = self._next()
                return row
        self._done = True
        await self.aclose()
        raise StopAsyncIteration

    def _fetch_ahead(self) -> asyncio.Task[list[Any] | None]:
        task = asyncio.ensure_future(self._next_batch())
        # Read its outcome even if nobody awaits it (the consumer stopped early), so a
        # failed fetch nobody asked for is not reported as "never retrieved".
        task.add_done_callback(_retrieve)
        return task

    async def _next_batch(self) -> list[Any] | None:
        try:
            return await anext(self._batches)
        except StopAsyncIteration:
            return None

    async def aclose(self) -> None:
        """Stop reading: cancel the fetch ahead, close the cursor. Idempotent."""
        self._done = True
        self._next = iter(()).__next__
        ahead, self._ahead = self._ahead, None
        if ahead is not None and not ahead.done():
            ahead.cancel()
            # Its end runs the generator's own clean-up (a rollback): wait for it. `wait`
            # does not raise the task's outcome, only our own cancellation.
            await asyncio.wait([ahead])
        await self._batches.aclose()


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
