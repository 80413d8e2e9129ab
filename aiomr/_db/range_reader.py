"""Read the ranges of a `RangeSplit` concurrently and merge their batches as they arrive.

One task per range; a semaphore lets ``max_connections`` of them hold a connection at once,
and a queue of that many batches hands their rows to the single consumer. A reader whose
batch does not fit waits, so memory stays at about two batches per connection however fast
the database is, and the source is still read only as fast as the job takes its rows.

The tasks belong to the iteration that started them: when it ends (exhausted, failed, closed
or cancelled) every task still running is cancelled and awaited, which rolls back its
transaction and gives back its connection, before the iteration's ``aclose()`` returns. A
`asyncio.TaskGroup` cannot own them, because the iteration is a generator that suspends
between rows, and a task group must not stay open across a suspension of its owner.

The queue is closed before the readers are cancelled (`_Handoff`): a reader that goes on
all the same (a library that drops a cancellation; see `open_connection` for the one known)
stops at its next batch instead of waiting for a consumer that has gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from .connect import Target, note_lost, open_connection
from .driver import Bounds, Params, RowType, Transfer
from .range_splits import RangeSplit

__all__ = ["read_ranges"]


@dataclass(frozen=True, slots=True)
class _Failed:
    error: Exception


_DONE = object()
"""Put in the queue by a range reader that has read all its rows."""


class _Handoff:
    """The bounded queue from the readers to the iteration, which the iteration can close."""

    def __init__(self, size: int) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue(size)
        self._closed = False

    async def put(self, item: Any) -> None:
        """Queue ``item``; once the queue is closed, raise `asyncio.CancelledError` instead."""
        if self._closed:
            raise asyncio.CancelledError
        await self._queue.put(item)

    async def get(self) -> Any:
        return await self._queue.get()

    def close(self) -> None:
        """Refuse every later item, and drop the queued ones so no reader waits to put."""
        self._closed = True
        while not self._queue.empty():
            self._queue.get_nowait()


async def read_ranges(
    target: Target,
    sql: str,
    params: Params,
    split: RangeSplit,
    ranges: list[Bounds],
    *,
    batch_size: int,
    row: RowType,
    transfer: Transfer = "rows",
) -> AsyncGenerator[Any, None]:
    """Yield the batches of every range of ``ranges`` (``split``'s plan), as they arrive.

    Cancellation: closing the iterator cancels the readers and waits for them to let go of
    their cursors, transactions and connections.
    """
    queue = _Handoff(split.connections)
    gate = asyncio.Semaphore(split.connections)
    tasks = [
        asyncio.create_task(
            _read_range(
                target, sql, params, split.column, bounds, queue, gate, batch_size, row, transfer
            ),
            name=f"aiomr-query-range-{bounds.index}",
        )
        for bounds in ranges
    ]
    running = len(tasks)
    try:
        while running:
            item = await queue.get()
            if item is _DONE:
                running -= 1
            elif isinstance(item, _Failed):
                raise item.error
            else:
                yield item
    finally:
        queue.close()
        for task in tasks:
            task.cancel()
        # Their errors, if any, were queued already; only their ending matters here.
        await asyncio.gather(*tasks, return_exceptions=True)


async def _read_range(
    target: Target,
    sql: str,
    params: Params,
    column: str,
    bounds: Bounds,
    queue: _Handoff,
    gate: asyncio.Semaphore,
    batch_size: int,
    row: RowType,
    transfer: Transfer,
) -> None:
    """Read one range into ``queue``, then `_DONE`, or `_Failed` with what went wrong."""
    try:
        async with gate, open_connection(target) as (driver, connection):
            driver.check_params(params)
            text, values = driver.restrict(connection, sql, params, column, bounds)
            read = driver.stream(
                connection, text, values, batch_size=batch_size, row=row, transfer=transfer
            )
            try:
                async with contextlib.aclosing(read) as batches:
                    async for batch in batches:
                        await queue.put(batch)
            except Exception as exc:
                note_lost(exc, driver, connection)  # while the connection is still ours
                raise
    except Exception as exc:
        exc.add_note(f"aiomr: in {bounds.describe(column)} of a range split")
        await queue.put(_Failed(exc))
        return
    await queue.put(_DONE)
