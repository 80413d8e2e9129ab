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
import psycopg_pool
import pytest

from aiomr._db import cleanup as _db_cleanup
from aiomr._db.cleanup import uninterrupted
from aiomr.sources import RangeSplit, query
from tests.test_db import Pg, poll
from tests.test_db import pg as pg
from tests.test_db import postgres_dsn as postgres_dsn


def open_psycopg_cursors() -> list[Any]:
    """psycopg server-side cursors that were never closed, collected or not yet."""
    return [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, psycopg.AsyncServerCursor) and not obj.closed
    ]


async def test_a_failing_range_ends_every_reader_on_a_pool_smaller_than_the_split(
    pg: Pg,
) -> None:
    # More ranges than the pool's 4 connections: when range 50 fails, some readers are
    # waiting for a connection (psycopg_pool waits with asyncio.wait_for, which on Python
    # 3.11 can drop the cancellation), others are reading, others have just read their last
    # row and are closing their cursors. Each attempt must end, with no cursor left open.
    pool = psycopg_pool.AsyncConnectionPool(
        pg.dsn, kwargs={"application_name": pg.table}, min_size=1, max_size=4, open=False
    )
    await pool.open(wait=True)
    try:
        for attempt in range(40):
            split = RangeSplit("id", 0, 100, 3 + attempt % 5)
            sql = f"SELECT id, 1 / (id - 50) FROM {pg.table}"
            source = query(pool, sql, split=split, batch_size=1 + attempt % 4)
            with pytest.raises(psycopg.errors.DivisionByZero):
                await asyncio.wait_for(_read_all(source), 30)
            assert open_psycopg_cursors() == [], f"attempt {attempt}"
            stats = pool.get_stats()
            assert stats["pool_available"] == stats["pool_size"], f"attempt {attempt}"
        await poll(pg.all_idle, "every backend of the test to be idle")
    finally:
        await pool.close()


async def _read_all(source: Any) -> list[Any]:
    return [row async for row in source]


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
    monkeypatch.setattr(_db_cleanup, "CLEANUP_GRACE", 0.1)
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
