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

A reader may miss its cancellation: on Python 3.11, `asyncio.wait_for` drops a cancellation
that arrives just as what it waits for completes (CPython issue gh-86296), and psycopg_pool
waits for a free connection with it. Such a reader goes on reading. So the queue is closed
first (`_Handoff`): a reader that would hand a batch over after that stops instead of waiting
for a consumer that has gone, and readers still running are cancelled again until they end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from ._db_connect import Target, note_lost, open_connection
from ._db_driver import Bounds, Params, RowType, Transfer
from ._db_ranges import RangeSplit

__all__ = ["read_ranges"]


@dataclass(frozen=True, slots=True)
class _Failed:
    error: Exception


_DONE = object()
"""Put in the queue by a range reader that has read all its rows."""

RECANCEL_SECONDS = 1.0
"""How often readers that are still running after their cancellation are cancelled again."""


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
    *,
    batch_size: int,
    row: RowType,
    transfer: Transfer = "rows",
) -> AsyncGenerator[Any, None]:
    """Yield the batches of every range of ``split``, in the order they arrive.

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
        for bounds in split.plan()
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
        await _stop(tasks)


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the readers, again while any is still running, and wait until all have ended.

    Their errors, if any, were queued already; only their ending matters here.
    """
    running = [task for task in tasks if not task.done()]
    while running:
        for task in running:
            task.cancel()
        await asyncio.wait(running, timeout=RECANCEL_SECONDS)
        running = [task for task in running if not task.done()]
    for task in tasks:
        if not task.cancelled():
            task.exception()


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
