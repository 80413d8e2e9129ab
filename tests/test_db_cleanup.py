"""Readers let go of cursors, transactions and connections however they are stopped.

Cancellations that arrive at awkward moments: a second one while a cursor is being closed,
one that a library drops while it waits, one that ends a range split while its other ranges
are still starting. Everything runs against the real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import psycopg
import pytest

from aiomr.sources import _db_driver, query
from aiomr.sources._db_driver import uninterrupted
from tests.test_db import Pg
from tests.test_db import pg as pg
from tests.test_db import postgres_dsn as postgres_dsn


def open_psycopg_cursors() -> list[Any]:
    """psycopg server-side cursors that were never closed, collected or not yet."""
    return [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, psycopg.AsyncServerCursor) and not obj.closed
    ]


async def test_a_cursor_closing_when_its_task_is_cancelled_closes_to_the_end(pg: Pg) -> None:
    async with await psycopg.AsyncConnection.connect(pg.dsn, application_name=pg.table) as conn:
        rows = aiter(query(conn, f"SELECT id FROM {pg.table}", batch_size=10))
        await anext(rows)
        closing = asyncio.create_task(rows.aclose())  # type: ignore[attr-defined]
        for _ in range(3):  # cancelled at once, and again while its clean-up waits
            await asyncio.sleep(0)
            closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert open_psycopg_cursors() == []
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)


async def test_uninterrupted_finishes_the_step_then_raises_the_cancellation() -> None:
    finished = asyncio.Event()

    async def step() -> str:
        await asyncio.sleep(0.2)
        finished.set()
        return "done"

    waiter = asyncio.create_task(uninterrupted(step()))
    await asyncio.sleep(0.05)
    waiter.cancel()
    await asyncio.sleep(0.05)
    waiter.cancel()  # a second cancellation does not cut the step short either
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert finished.is_set()
    assert await uninterrupted(step()) == "done"


async def test_uninterrupted_gives_up_after_its_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_db_driver, "CLEANUP_GRACE", 0.1)
    ended = asyncio.Event()

    async def stuck() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            ended.set()

    waiter = asyncio.create_task(uninterrupted(stuck()))
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiter, 5)
    await asyncio.wait_for(ended.wait(), 5)


async def test_uninterrupted_passes_the_step_error_on() -> None:
    async def failing() -> None:
        raise OSError("the connection is gone")

    with pytest.raises(OSError, match="the connection is gone"):
        await uninterrupted(failing())
