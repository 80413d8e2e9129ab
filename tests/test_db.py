"""Database sources and sinks against real databases: PostgreSQL and SQLite files, no mocks.

PostgreSQL is reached at ``AIOMR_TEST_POSTGRES_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/test``). When it cannot be reached its tests skip,
unless ``AIOMR_REQUIRE_POSTGRES=1`` (as in CI), where they fail. Every test works on a table
of its own, dropped at the end, and tags its connections with that name
(``application_name``) to find its server backends in ``pg_stat_activity``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import decimal
import functools
import json
import operator
import os
import pathlib
import pickle
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiosqlite
import asyncpg
import psycopg
import psycopg_pool
import pytest
import sqlalchemy.exc
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import create_async_engine

import aiomr
from aiomr._db.copy_text import CopyLayout, CopyRows
from aiomr._db.driver import Bounds
from aiomr.executors import ProcessExecutor
from aiomr.sources import RangeSplit, query

DSN = os.environ.get("AIOMR_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
ROWS = 2000
"""Rows with an id (1..ROWS); three more have a NULL id."""
NULL_IDS = 3
PG_KINDS = ["asyncpg", "asyncpg-pool", "psycopg", "psycopg-pool", "sqlalchemy", "sqlalchemy-engine"]
PG_PARALLEL = ["asyncpg-pool", "asyncpg-factory", "psycopg-pool", "sqlalchemy-engine"]
SQLITE_KINDS = ["aiosqlite", "aiosqlite-factory", "sqlalchemy-aiosqlite"]
DEADLINE = 30.0
"""Seconds to wait for a state to show up; generous, as CPU load may slow anything."""


def table_rows() -> list[tuple[Any, ...]]:
    """``(id, store, amount, day)``: ids 1..ROWS, then NULL ids."""
    rows: list[tuple[Any, ...]] = [
        (i, i % 7, (i * 37) % 1000, datetime.date(2024, 1, 1) + datetime.timedelta(days=i % 500))
        for i in range(1, ROWS + 1)
    ]
    rows += [(None, 3, 11 + n, datetime.date(2023, 6, 1)) for n in range(NULL_IDS)]
    return rows


def expected_totals() -> dict[int, int]:
    totals: collections.Counter[int] = collections.Counter()
    for _, store, amount, _ in table_rows():
        totals[store] += amount
    return dict(totals)


def pair(row: tuple[Any, ...]) -> list[tuple[Any, Any]]:
    return [(row[0], row[1])]


def id_of(row: tuple[Any, ...]) -> Any:
    return row[0]


async def poll(check: Callable[[], Any], what: str) -> Any:
    """Await ``check()`` until it returns something true; fail after `DEADLINE` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > end:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# --- PostgreSQL fixtures -----------------------------------------------------------------


def reachable_postgres() -> str:
    """The DSN of a reachable PostgreSQL; skip (or fail, when it is required) otherwise."""

    async def probe() -> None:
        connection = await asyncpg.connect(DSN, timeout=5)
        await connection.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        reason = f"PostgreSQL is not reachable at {DSN}: {type(exc).__name__}: {exc}"
        if os.environ.get("AIOMR_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{reason} (AIOMR_REQUIRE_POSTGRES=1 requires it)")
        pytest.skip(reason)
    return DSN


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """See `reachable_postgres`."""
    return reachable_postgres()


@dataclass
class Pg:
    dsn: str
    table: str
    """Also the ``application_name`` of the test's connections."""
    monitor: asyncpg.Connection

    async def backends(self) -> list[tuple[int, str, str]]:
        """``(pid, state, query)`` of the server backends of the test's connections."""
        records = await self.monitor.fetch(
            "SELECT pid, state, query FROM pg_stat_activity WHERE application_name = $1",
            self.table,
        )
        return [(r["pid"], r["state"], r["query"]) for r in records]

    async def reading(self) -> list[int]:
        """Pids of backends holding a transaction open (a cursor waiting for us)."""
        return [pid for pid, state, _ in await self.backends() if state == "idle in transaction"]

    async def all_idle(self) -> bool:
        return all(state in ("idle", None) for _, state, _ in await self.backends())

    async def count(self, table: str) -> int:
        value: int = await self.monitor.fetchval(f"SELECT count(*) FROM {table}")
        return value


@pytest.fixture
async def pg(postgres_dsn: str) -> AsyncIterator[Pg]:
    """A fresh table of `table_rows` (and an empty ``<table>_out``), dropped afterwards."""
    name = f"aiomr_test_{uuid.uuid4().hex[:12]}"
    monitor = await asyncpg.connect(postgres_dsn)
    await monitor.execute(
        f"CREATE TABLE {name} (id integer, store integer NOT NULL, amount bigint NOT NULL,"
        f" day date NOT NULL);"
        f"CREATE TABLE {name}_out (store integer NOT NULL, total bigint NOT NULL)"
    )
    await monitor.copy_records_to_table(name, records=table_rows())
    try:
        yield Pg(postgres_dsn, name, monitor)
    finally:
        await monitor.execute(f"DROP TABLE IF EXISTS {name}; DROP TABLE IF EXISTS {name}_out")
        await monitor.close()


@contextlib.asynccontextmanager
async def open_pg(kind: str, dsn: str, app: str) -> AsyncIterator[Any]:
    """What ``kind`` names, connected as ``application_name=app``; closed afterwards."""
    settings_ = {"application_name": app}
    if kind == "asyncpg":
        connection = await asyncpg.connect(dsn, server_settings=settings_)
        try:
            yield connection
        finally:
            await connection.close()
    elif kind == "asyncpg-pool":
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4, server_settings=settings_)
        try:
            yield pool
        finally:
            await pool.close()
    elif kind == "asyncpg-factory":
        yield functools.partial(asyncpg.connect, dsn, server_settings=settings_)
    elif kind == "psycopg":
        async with await psycopg.AsyncConnection.connect(dsn, application_name=app) as conn:
            yield conn
    elif kind == "psycopg-pool":
        pool_ = psycopg_pool.AsyncConnectionPool(
            dsn, kwargs={"application_name": app}, min_size=1, max_size=4, open=False
        )
        await pool_.open(wait=True)
        try:
            yield pool_
        finally:
            await pool_.close()
    else:
        url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
        engine = create_async_engine(url, connect_args={"server_settings": settings_})
        try:
            if kind == "sqlalchemy-engine":
                yield engine
            else:
                async with engine.connect() as connection:
                    yield connection
        finally:
            await engine.dispose()


def mark(kind: str, n: int) -> str:
    """The ``n``-th parameter placeholder of ``kind``'s driver."""
    if kind.startswith("asyncpg"):
        return f"${n}"
    if kind.startswith("psycopg"):
        return "%s"
    if kind.startswith("sqlalchemy"):
        return f":p{n}"
    return "?"


def args(kind: str, *values: Any) -> tuple[Any, ...]:
    """Parameters as ``kind``'s driver takes them: SQLAlchemy wants one mapping."""
    if kind.startswith("sqlalchemy"):
        return ({f"p{i}": v for i, v in enumerate(values, 1)},)
    return values


# --- SQLite fixtures ---------------------------------------------------------------------


@pytest.fixture
def sqlite_path(tmp_path: pathlib.Path) -> str:
    """A SQLite file with the table ``sales`` of `table_rows` and an empty ``sales_out``."""
    path = str(tmp_path / "sales.db")
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE sales (id INTEGER, store INTEGER, amount INTEGER, day TEXT)")
        db.execute("CREATE TABLE sales_out (store INTEGER NOT NULL, total INTEGER NOT NULL)")
        db.executemany(
            "INSERT INTO sales VALUES (?, ?, ?, ?)",
            [(i, s, a, d.isoformat()) for i, s, a, d in table_rows()],
        )
        db.commit()
    return path


@contextlib.asynccontextmanager
async def open_sqlite(kind: str, path: str) -> AsyncIterator[Any]:
    if kind == "aiosqlite":
        async with aiosqlite.connect(path) as connection:
            yield connection
    elif kind == "aiosqlite-factory":
        yield lambda: aiosqlite.connect(path)
    else:
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        try:
            yield engine
        finally:
            await engine.dispose()


def sqlite_count(path: str, table: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        count: int = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return count


# --- results equal GROUP BY ---------------------------------------------------------------


@pytest.mark.parametrize("kind", PG_KINDS)
async def test_postgres_totals_equal_group_by(
    pg: Pg, kind: str, process_executor: ProcessExecutor
) -> None:
    grouped = await pg.monitor.fetch(f"SELECT store, sum(amount) FROM {pg.table} GROUP BY store")
    expected = {r[0]: int(r[1]) for r in grouped}
    assert expected == expected_totals()
    async with open_pg(kind, pg.dsn, pg.table) as db:
        source = query(db, f"SELECT store, amount FROM {pg.table}", batch_size=300)
        totals = await aiomr.map_reduce_by_key(
            source, lambda row: [row], operator.add, executor=process_executor
        )
        assert totals == expected
    await poll(pg.all_idle, "every backend of the test to be idle")


@pytest.mark.parametrize("kind", SQLITE_KINDS)
async def test_sqlite_totals_equal_group_by(
    sqlite_path: str, kind: str, process_executor: ProcessExecutor
) -> None:
    with contextlib.closing(sqlite3.connect(sqlite_path)) as db:
        expected = dict(db.execute("SELECT store, sum(amount) FROM sales GROUP BY store"))
    async with open_sqlite(kind, sqlite_path) as db:
        source = query(db, "SELECT store, amount FROM sales", batch_size=300)
        totals = await aiomr.map_reduce_by_key(
            source, lambda row: [row], operator.add, executor=process_executor
        )
    assert totals == expected == expected_totals()


async def check_parameters_and_dict_rows(db: Any, kind: str, table: str) -> None:
    sql = f"SELECT id, store FROM {table} WHERE id <= {mark(kind, 1)} ORDER BY id"
    rows = [row async for row in query(db, sql, *args(kind, 3), row="dict", batch_size=2)]
    assert rows == [{"id": 1, "store": 1}, {"id": 2, "store": 2}, {"id": 3, "store": 3}]
    tuples = [row async for row in query(db, sql, *args(kind, 2))]
    assert tuples == [(1, 1), (2, 2)]


@pytest.mark.parametrize("kind", PG_KINDS)
async def test_postgres_parameters_and_dict_rows(pg: Pg, kind: str) -> None:
    async with open_pg(kind, pg.dsn, pg.table) as db:
        await check_parameters_and_dict_rows(db, kind, pg.table)


@pytest.mark.parametrize("kind", SQLITE_KINDS)
async def test_sqlite_parameters_and_dict_rows(sqlite_path: str, kind: str) -> None:
    async with open_sqlite(kind, sqlite_path) as db:
        await check_parameters_and_dict_rows(db, kind, "sales")


async def test_plain_async_cursors_are_sources_as_they_are(pg: Pg, sqlite_path: str) -> None:
    async with aiosqlite.connect(sqlite_path) as db, db.execute("SELECT id FROM sales") as cursor:
        assert (
            await aiomr.map_reduce(cursor, len, operator.add, executor="thread") == ROWS + NULL_IDS
        )
    async with open_pg("asyncpg", pg.dsn, pg.table) as conn, conn.transaction():
        cursor_ = conn.cursor(f"SELECT id FROM {pg.table} WHERE id IS NOT NULL")
        total = await aiomr.map_reduce(cursor_, id_of, operator.add, executor="thread")
        assert total == ROWS * (ROWS + 1) // 2


# --- cancellation and broken connections --------------------------------------------------


def gated_job(
    source: Any, gate: threading.Event, stats: aiomr.JobStats
) -> asyncio.Task[dict[Any, Any]]:
    """A job whose mapper waits for ``gate``: the source stays open mid-stream meanwhile.

    Two chunks of 100 rows are in flight at most, so the job holds about 200 rows of the
    table's 2,003 while it waits.
    """

    def mapper(row: tuple[Any, ...]) -> list[tuple[Any, Any]]:
        gate.wait(DEADLINE)
        return [(row[0], row[1])]

    return asyncio.create_task(
        aiomr.map_reduce_by_key(
            source,
            mapper,
            operator.add,
            executor="thread",
            max_workers=2,
            chunk_size=100,
            max_in_flight=2,
            stats=stats,
        )
    )


@pytest.mark.parametrize("kind", [*PG_KINDS, "asyncpg-factory"])
async def test_cancelling_mid_stream_ends_cursor_and_transaction(pg: Pg, kind: str) -> None:
    gate = threading.Event()
    stats = aiomr.JobStats()
    async with open_pg(kind, pg.dsn, pg.table) as db:
        source = query(db, f"SELECT store, amount FROM {pg.table}", batch_size=100)
        job = gated_job(source, gate, stats)
        await poll(lambda: stats.records >= 200, "the job to fill its window")
        await poll(pg.reading, "the query's cursor to be open in a transaction")
        job.cancel()
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await job
        # Closing happened before the cancelled job returned; the server may show it late.
        await poll(pg.all_idle, "no backend left in a transaction or running the query")
        assert stats.records < ROWS
        if kind == "asyncpg":
            assert not db.is_in_transaction()
            assert await db.fetchval("SELECT count(*) FROM pg_cursors WHERE name <> ''") == 0
        elif kind == "psycopg":
            assert db.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        elif kind == "sqlalchemy":
            assert not db.in_transaction()


async def test_cancelling_a_sqlite_read_releases_its_lock(sqlite_path: str) -> None:
    def exclusive_lock_free() -> bool:
        with contextlib.closing(sqlite3.connect(sqlite_path, timeout=0)) as other:
            try:
                other.execute("BEGIN EXCLUSIVE")
            except sqlite3.OperationalError:
                return False
            other.rollback()
            return True

    gate = threading.Event()
    stats = aiomr.JobStats()
    async with aiosqlite.connect(sqlite_path) as db:
        job = gated_job(query(db, "SELECT store, amount FROM sales", batch_size=100), gate, stats)
        await poll(lambda: stats.records >= 200, "the job to fill its window")
        assert not exclusive_lock_free()  # the open cursor holds SQLite's read lock
        job.cancel()
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await job
        assert exclusive_lock_free()
        assert not db.in_transaction


@pytest.mark.parametrize("kind", PG_KINDS)
async def test_a_backend_terminated_mid_stream_is_a_clear_error(pg: Pg, kind: str) -> None:
    gate = threading.Event()
    stats = aiomr.JobStats()
    async with open_pg(kind, pg.dsn, pg.table) as db:
        sql = f"SELECT store, amount FROM {pg.table}"
        job = gated_job(query(db, sql, batch_size=100), gate, stats)
        await poll(lambda: stats.records >= 200, "the job to fill its window")
        [pid] = await poll(pg.reading, "the query's cursor to be open in a transaction")
        assert await pg.monitor.fetchval("SELECT pg_terminate_backend($1)", pid)
        gate.set()
        # The driver's own exception, as it raised it. asyncpg's depends on when it
        # notices the end of the session: a lost connection, or an internal state error.
        driver_errors = (
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.exceptions.InternalClientError,
            psycopg.OperationalError,
            sqlalchemy.exc.DBAPIError,
        )
        with pytest.raises(driver_errors) as caught:
            await job
    error = caught.value
    notes = "\n".join(getattr(error, "__notes__", []))
    assert f"reading the query '{sql}'" in notes
    assert "connection was lost" in notes
    assert "failed at row " in notes
    position = int(notes.split("failed at row ")[1].split()[0])
    assert 200 <= position < ROWS


# --- range splits -------------------------------------------------------------------------


SPLITS = [
    pytest.param(1, ROWS + 1, 4, id="bounds-cover-all"),
    pytest.param(500, 1500, 3, id="rows-outside-both-bounds"),
    pytest.param(-10, 5, 7, id="most-rows-above"),
    pytest.param(0, 3, 10, id="more-partitions-than-values"),
    pytest.param(1, ROWS + 1, 1, id="one-partition"),
    pytest.param(5000, 6000, 2, id="all-rows-below"),
]


@pytest.mark.parametrize("kind", PG_PARALLEL)
@pytest.mark.parametrize(("lower", "upper", "partitions"), SPLITS)
async def test_postgres_range_split_reads_every_row_once(
    pg: Pg, kind: str, lower: int, upper: int, partitions: int
) -> None:
    split = RangeSplit("id", lower, upper, partitions, max_connections=3)
    async with open_pg(kind, pg.dsn, pg.table) as db:
        sql = f"SELECT id, store FROM {pg.table} WHERE store <> {mark(kind, 1)}"
        source = query(db, sql, *args(kind, 99), split=split, batch_size=64)
        ids = collections.Counter([row[0] async for row in source])
    assert ids == collections.Counter(row[0] for row in table_rows())
    await poll(pg.all_idle, "every backend of the test to be idle")


async def test_postgres_range_split_on_dates_and_decimals(pg: Pg) -> None:
    everything = collections.Counter(row[0] for row in table_rows())
    async with open_pg("asyncpg-pool", pg.dsn, pg.table) as pool:
        by_day = RangeSplit("day", datetime.date(2024, 2, 1), datetime.date(2024, 5, 1), 6)
        source = query(pool, f"SELECT id, day FROM {pg.table}", split=by_day)
        assert collections.Counter([row[0] async for row in source]) == everything
        moment = datetime.datetime(2024, 3, 1)
        by_time = RangeSplit("at", moment, moment + datetime.timedelta(days=30), 4)
        sql = f"SELECT id, day::timestamp AS at FROM {pg.table}"
        assert (
            collections.Counter([r[0] async for r in query(pool, sql, split=by_time)]) == everything
        )
        by_amount = RangeSplit("amount", decimal.Decimal("0.5"), decimal.Decimal("900.25"), 5)
        sql = f"SELECT id, amount::numeric AS amount FROM {pg.table}"
        assert (
            collections.Counter([r[0] async for r in query(pool, sql, split=by_amount)])
            == everything
        )


@pytest.fixture(scope="module")
def sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite file shared by the examples of a property test (read only)."""
    path = str(tmp_path_factory.mktemp("split") / "values.db")
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE t (n INTEGER, x REAL)")
        values = [*range(-30, 130), None, None, -1000, 10**6]
        db.executemany(
            "INSERT INTO t VALUES (?, ?)", [(v, None if v is None else v / 7) for v in values]
        )
        db.commit()
    return path


@settings(max_examples=40, deadline=None)
@given(
    lower=st.integers(-50, 150),
    width=st.integers(1, 200),
    partitions=st.integers(1, 12),
    on_floats=st.booleans(),
)
def test_sqlite_range_split_reads_every_row_once(
    sqlite_file: str, lower: int, width: int, partitions: int, on_floats: bool
) -> None:
    column = "x" if on_floats else "n"
    low: float = lower / 3 if on_floats else lower
    high: float = (lower + width) / 3 if on_floats else lower + width

    async def read() -> tuple[collections.Counter[Any], collections.Counter[Any]]:
        split = RangeSplit(column, low, high, partitions, max_connections=4)
        source = query(lambda: aiosqlite.connect(sqlite_file), "SELECT n, x FROM t", split=split)
        got = collections.Counter([row async for row in source])
        async with aiosqlite.connect(sqlite_file) as db:
            everything = collections.Counter(await db.execute_fetchall("SELECT n, x FROM t"))
        return got, everything

    got, everything = asyncio.run(read())
    assert got == everything


def test_range_plan_covers_every_value_and_null_once() -> None:
    plan = RangeSplit("id", 0, 10, 4).plan()
    assert plan == [
        Bounds(0, None, 2, nulls=True),
        Bounds(1, 2, 5, nulls=False),
        Bounds(2, 5, 7, nulls=False),
        Bounds(3, 7, None, nulls=False),
    ]
    assert [b.lower for b in RangeSplit("id", 0, 2, 8).plan()] == [None, 0, 1]
    assert RangeSplit("id", 0, 2, 1).plan() == [Bounds(0, None, None, nulls=True)]
    days = RangeSplit("day", datetime.date(2024, 1, 1), datetime.date(2024, 1, 31), 3).plan()
    assert [b.upper for b in days] == [datetime.date(2024, 1, 11), datetime.date(2024, 1, 21), None]
    assert plan[1].describe("id") == "range 1 (id >= 2 and < 5)"
    assert plan[0].describe("id") == "range 0 (id < 2, or NULL)"
    assert days[2].describe("day") == "range 2 (day >= 2024-01-21)"


def test_range_split_arguments() -> None:
    with pytest.raises(ValueError, match="lower must be less than upper"):
        RangeSplit("id", 5, 5, 2)
    with pytest.raises(ValueError, match="partitions must be >= 1"):
        RangeSplit("id", 0, 5, 0)
    with pytest.raises(TypeError, match="partitions must be an int"):
        RangeSplit("id", 0, 5, 2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="both be numbers, both dates or both datetimes"):
        RangeSplit("id", 0, datetime.date(2024, 1, 1), 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="lower must be a number, a date or a datetime"):
        RangeSplit("id", "a", "b", 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="column must be a column name"):
        RangeSplit("id; DROP TABLE t", 0, 5, 2)
    assert RangeSplit('"Odd name"', 0, 5, 2).column == '"Odd name"'
    assert RangeSplit("id", 0, 5, 8, max_connections=3).connections == 3


# --- bad rows -----------------------------------------------------------------------------


def picky(row: tuple[Any, ...]) -> list[tuple[Any, Any]]:
    if row[0] % 500 == 0:
        raise ValueError(f"no sales for id {row[0]}")
    return [(row[1], row[2])]


async def check_bad_rows_are_located(db: Any, table: str, executor: ProcessExecutor) -> None:
    sql = f"SELECT id, store, amount FROM {table} WHERE id IS NOT NULL ORDER BY id"
    stats = aiomr.JobStats()
    await aiomr.map_reduce_by_key(
        query(db, sql, batch_size=128),
        picky,
        operator.add,
        on_error="collect",
        chunk_size=300,
        executor=executor,
        stats=stats,
    )
    # Row N of the query (from 0, in ORDER BY id) has id N + 1.
    located = {(bad.location, bad.error) for bad in stats.bad_records}
    assert located == {
        (f"row {i - 1} of the query", f"ValueError: no sales for id {i}")
        for i in (500, 1000, 1500, 2000)
    }
    assert stats.records_skipped == 4
    assert stats.records == ROWS
    with pytest.raises(ValueError, match="no sales for id 500") as caught:
        await aiomr.map_reduce_by_key(
            query(db, sql), picky, operator.add, chunk_size=300, max_in_flight=1, executor=executor
        )
    notes = "\n".join(caught.value.__notes__)
    assert "chunk 1 (rows [300, 600) of the query)" in notes


async def test_bad_postgres_rows_follow_the_error_policy(
    pg: Pg, process_executor: ProcessExecutor
) -> None:
    async with open_pg("asyncpg-pool", pg.dsn, pg.table) as pool:
        await check_bad_rows_are_located(pool, pg.table, process_executor)


async def test_bad_sqlite_rows_follow_the_error_policy(
    sqlite_path: str, process_executor: ProcessExecutor
) -> None:
    async with open_sqlite("aiosqlite", sqlite_path) as db:
        await check_bad_rows_are_located(db, "sales", process_executor)


async def test_an_error_of_the_query_names_it(pg: Pg, sqlite_path: str) -> None:
    async with open_pg("asyncpg", pg.dsn, pg.table) as conn:
        with pytest.raises(asyncpg.UndefinedColumnError) as caught:
            await aiomr.map_reduce(query(conn, f"SELECT nope FROM {pg.table}"), len, operator.add)
        assert "reading the query 'SELECT nope FROM" in caught.value.__notes__[-1]
        assert not conn.is_in_transaction()
    async with open_pg("psycopg-pool", pg.dsn, pg.table) as pool:
        split = RangeSplit("id", 0, 100, 3)
        source = query(pool, f"SELECT id, 1 / (id - 50) FROM {pg.table}", split=split)
        with pytest.raises(psycopg.errors.DivisionByZero) as caught_:
            [row async for row in source]
        notes = "\n".join(caught_.value.__notes__)
        assert "in range 1 (id >= 33 and < 66) of a range split" in notes
        assert "connection was lost" not in notes
    async with open_pg("asyncpg-pool", pg.dsn, pg.table) as pool:
        source = query(pool, f"SELECT store FROM {pg.table}", split=RangeSplit("id", 0, 9, 2))
        with pytest.raises(asyncpg.UndefinedColumnError) as caught:
            [row async for row in source]
        assert "connection was lost" not in "\n".join(caught.value.__notes__)
    await poll(pg.all_idle, "every backend of the test to be idle")
    async with aiosqlite.connect(sqlite_path) as db:
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            [row async for row in query(db, "SELECT * FROM missing")]


@pytest.mark.parametrize("kind", ["asyncpg", "psycopg", "sqlalchemy"])
async def test_closing_an_iteration_by_hand_ends_its_transaction(pg: Pg, kind: str) -> None:
    async with open_pg(kind, pg.dsn, pg.table) as db:
        source = query(db, f"SELECT id FROM {pg.table} ORDER BY id", batch_size=50)
        first = []
        async with contextlib.aclosing(aiter(source)) as rows:
            async for row in rows:
                first.append(row)
                if len(first) == 120:
                    break
        assert first[:2] == [(1,), (2,)]
        await poll(pg.all_idle, "every backend of the test to be idle")
        # The source reads anew at each iteration, on the same connection.
        assert len([row async for row in source]) == ROWS + NULL_IDS


# --- reading inside the caller's transaction, arguments, imports ----------------------------


async def test_a_read_inside_an_open_transaction_leaves_it_open(pg: Pg) -> None:
    async with open_pg("asyncpg", pg.dsn, pg.table) as conn:
        async with conn.transaction():
            await conn.execute(f"DELETE FROM {pg.table} WHERE id > 10")
            rows = [row async for row in query(conn, f"SELECT id FROM {pg.table} WHERE id > 0")]
            assert len(rows) == 10
            assert conn.is_in_transaction()
        assert not conn.is_in_transaction()
    assert await pg.count(pg.table) == 10 + NULL_IDS


async def test_query_arguments(pg: Pg, sqlite_path: str) -> None:
    with pytest.raises(TypeError, match=r"aiomr.sources.query\(\) needs an asyncpg Connection"):
        query(object(), "SELECT 1")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        query(lambda: None, "SELECT 1", batch_size=0)
    with pytest.raises(ValueError, match="row must be 'tuple' or 'dict'"):
        query(lambda: None, "SELECT 1", row="list")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"split must be an aiomr\.sources\.RangeSplit"):
        query(lambda: None, "SELECT 1", split=("id", 0, 10, 2))  # type: ignore[call-overload]
    async with aiosqlite.connect(sqlite_path) as db:
        with pytest.raises(ValueError, match="a range split reads over several connections"):
            query(db, "SELECT id FROM sales", split=RangeSplit("id", 0, 10, 2))
    async with open_pg("asyncpg", pg.dsn, pg.table) as conn:
        with pytest.raises(TypeError, match=r"asyncpg takes positional parameters \(\$1"):
            query(conn, "SELECT $1", {"x": 1})
    async with open_pg("sqlalchemy-engine", pg.dsn, pg.table) as engine:
        with pytest.raises(TypeError, match="SQLAlchemy takes named parameters"):
            query(engine, "SELECT :x", 1)
    with pytest.raises(TypeError, match="the connection factory returned int"):
        [row async for row in query(lambda: 42, "SELECT 1")]
    source = query(lambda: aiosqlite.connect(sqlite_path), "SELECT 1")
    assert repr(source) == "QuerySource('SELECT 1', batch_size=1000)"


def test_no_driver_is_imported_with_aiomr() -> None:
    code = (
        "import sys, aiomr, aiomr.sources, aiomr.sinks\n"
        "drivers = ['asyncpg', 'psycopg', 'psycopg_pool', 'aiosqlite', 'sqlalchemy']\n"
        "print([name for name in drivers if name in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


# --- sinks --------------------------------------------------------------------------------


async def failing_rows(after: int) -> AsyncIterator[tuple[int, int]]:
    """Rows that fail after ``after`` of them, as a job that breaks half-way would."""
    for i in range(after):
        yield i % 7, i
    raise RuntimeError("the job failed")


async def check_sink(db: Any, table: str, count: Callable[[], Any]) -> None:
    totals = expected_totals()
    with pytest.raises(RuntimeError, match="the job failed"):
        await aiomr.sinks.write_rows(db, table, failing_rows(1500), columns=("store", "total"))
    assert await count() == 0
    rows: list[Any] = [(1, 2)] * 700 + [(1, 2, 3)]
    with pytest.raises(ValueError, match="row 700 has 3 values for 2 columns"):
        await aiomr.sinks.write_rows(db, table, rows, columns=("store", "total"), batch_size=64)
    assert await count() == 0
    written = await aiomr.sinks.write_rows(db, table, totals, columns=("store", "total"))
    assert written == len(totals) == 7
    dicts = [{"total": i, "store": i % 7} for i in range(1000)]
    assert await aiomr.sinks.write_rows(db, table, dicts, columns=("store", "total")) == 1000
    assert await count() == 1007


@pytest.mark.parametrize("kind", [*PG_KINDS, "asyncpg-factory"])
async def test_postgres_sinks_write_all_or_nothing(pg: Pg, kind: str) -> None:
    async with open_pg(kind, pg.dsn, pg.table) as db:
        await check_sink(db, f"{pg.table}_out", lambda: pg.count(f"{pg.table}_out"))
        if kind == "psycopg":
            assert db.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    await poll(pg.all_idle, "every backend of the test to be idle")


@pytest.mark.parametrize("kind", SQLITE_KINDS)
async def test_sqlite_sinks_write_all_or_nothing(sqlite_path: str, kind: str) -> None:
    async def count() -> int:
        return sqlite_count(sqlite_path, "sales_out")

    async with open_sqlite(kind, sqlite_path) as db:
        await check_sink(db, "sales_out", count)


async def test_a_job_streams_into_a_sink_and_cancelling_writes_nothing(pg: Pg) -> None:
    out = f"{pg.table}_out"
    async with open_pg("asyncpg-pool", pg.dsn, pg.table) as pool:
        source = query(pool, f"SELECT store, amount FROM {pg.table}")
        spec = aiomr.ReduceByKey(lambda row: [row], operator.add)
        async with aiomr.open_by_key(source, spec, sort=True, executor="thread") as pairs:
            written = await aiomr.sinks.write_rows(pool, out, pairs, columns=("store", "total"))
        assert written == 7
        stored = await pg.monitor.fetch(f"SELECT store, total FROM {out} ORDER BY store")
        assert dict(stored) == expected_totals()
        await pg.monitor.execute(f"TRUNCATE {out}")

        halfway = asyncio.Event()

        async def stalled() -> AsyncIterator[tuple[int, int]]:
            for i in range(100):
                yield i % 7, i
            halfway.set()
            await asyncio.Event().wait()
            yield 0, 0  # pragma: no cover - never reached

        writer = asyncio.create_task(
            aiomr.sinks.write_rows(pool, out, stalled(), columns=("store", "total"))
        )
        await halfway.wait()
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer
    assert await pg.count(out) == 0
    await poll(pg.all_idle, "every backend of the test to be idle")


async def test_sink_arguments(sqlite_path: str) -> None:
    async with aiosqlite.connect(sqlite_path) as db:
        write = functools.partial(aiomr.sinks.write_rows, db, "sales_out")
        with pytest.raises(TypeError, match="columns must be a sequence of column names"):
            await write([(1, 2)], columns="store")
        with pytest.raises(ValueError, match="columns must name at least one column"):
            await write([(1, 2)], columns=())
        with pytest.raises(TypeError, match="row 0 is a int, not a tuple, list or dict"):
            await write([5], columns=("store",))
        with pytest.raises(ValueError, match="row 1 has no value for column 'total'"):
            await write([{"store": 1, "total": 2}, {"store": 1}], columns=("store", "total"))
        with pytest.raises(TypeError, match="rows must be iterable"):
            await write(5, columns=("store",))  # type: ignore[arg-type]
    assert sqlite_count(sqlite_path, "sales_out") == 0


# --- COPY text, decoded by the workers (transfer="copy") -----------------------------------

TRICKY_TEXT = [
    "plain",
    "",
    "tab\there",
    "new\nline",
    "back\\slash",
    "\\N",
    "\\",
    "carriage\rreturn\x08\x0c\x0b",
    "ünïcødé 漢字 🙂",
    "  spaces  ",
    "\x01\x1f control",
]

TYPES_TABLE = """
CREATE TABLE {name} (
    i int, b bigint, s smallint, f float8, r real, n numeric, t text, v varchar(9),
    c char(3), bo bool, d date, ts timestamp, tz timestamptz, by bytea, u uuid, j jsonb,
    tm time, o oid
)
"""

TYPES_ROWS = """
INSERT INTO {name} VALUES
(1, 9223372036854775807, -32768, 1.1, 1.1, 123.4500, 'a', 'x y', 'ab', true, '2024-02-29',
 '2024-01-01 12:00:00.123456', '2024-06-01 12:00:00+02', '\\x00ff5c0a09',
 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{"a": [1, "\\t"]}}', '23:59:59.5', 4294967295),
(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL),
(3, -1, 0, 'NaN', '-Infinity', 'NaN', '', '', '', false, 'infinity', '-infinity', 'infinity',
 '', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', 'null', '00:00', 0),
(4, 0, 1, 1e308, 3.4e38, '-0.000001', 'z', 'q', 'z', true, '0001-01-01',
 '1999-12-31 23:59:59', '1970-01-01 00:00:00-03:30', '\\x', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a13',
 '[]', '00:00:00.000001', 1),
(5, 1, 2, -0.0, 1e-40, 'Infinity', 'w', 'w', 'w', false, '-infinity', 'infinity', '-infinity',
 '\\x5c', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a14', '"\\\\N"', '12:00', 2)
"""


def same_value(ours: Any, theirs: Any) -> bool:
    """Equal with the same type; NaN equals NaN; asyncpg's UUIDs are a subclass of ours."""
    if isinstance(theirs, uuid.UUID):
        return type(ours) is uuid.UUID and ours == theirs
    if isinstance(theirs, float | decimal.Decimal) and theirs != theirs:
        return type(ours) is type(theirs) and ours != ours
    if isinstance(theirs, float) and theirs == 0:
        return type(ours) is float and str(ours) == str(theirs)  # keeps the sign of zero
    return type(ours) is type(theirs) and ours == theirs


def assert_same_rows(ours: list[Any], theirs: list[Any]) -> None:
    assert len(ours) == len(theirs)
    for mine, row in zip(ours, theirs, strict=True):
        assert type(mine) is type(row)
        values = mine.values() if isinstance(mine, dict) else mine
        expected = row.values() if isinstance(row, dict) else row
        if isinstance(mine, dict):
            assert list(mine) == list(row)
        for a, b in zip(values, expected, strict=True):
            assert same_value(a, b), (a, b)


def rows_as_they_are(rows: list[Any]) -> list[Any]:
    """Chunk mode mapper: the chunk itself, to see what a worker received."""
    return list(rows)


@pytest.mark.parametrize("row", ["tuple", "dict"])
async def test_copy_rows_equal_the_drivers_rows(
    pg: Pg, row: str, process_executor: ProcessExecutor
) -> None:
    table = f"{pg.table}_types"
    await pg.monitor.execute(TYPES_TABLE.format(name=table) + ";" + TYPES_ROWS.format(name=table))
    await pg.monitor.executemany(
        f"INSERT INTO {table} (i, t, v, j) VALUES ($1, $2, $3, $4)",
        [(100 + n, text, text[:9], json_text(text)) for n, text in enumerate(TRICKY_TEXT)],
    )
    try:
        async with open_pg("asyncpg", pg.dsn, pg.table) as conn:
            # Timestamps with time zones are written in the session's zone: not UTC here.
            await conn.execute("SET TimeZone = 'America/St_Johns'")
            sql = f"SELECT * FROM {table} WHERE i > $1 ORDER BY i"
            records = await conn.fetch(sql, 0)
            theirs: list[Any] = [dict(r) if row == "dict" else tuple(r) for r in records]
            # Decoded where they are (an `async for` in the caller) ...
            source = query(conn, sql, 0, transfer="copy", row=row)  # type: ignore[call-overload]
            assert_same_rows([r async for r in source], theirs)
            # ... and decoded by worker processes, as a job's chunks.
            chunks = await aiomr.map_reduce(
                source, rows_as_they_are, operator.add, mode="chunk", executor=process_executor
            )
            assert_same_rows(chunks, theirs)
    finally:
        await pg.monitor.execute(f"DROP TABLE {table}")


def json_text(text: str) -> str:
    return json.dumps({"text": text})


COPY_SPLIT = RangeSplit("id", 1, ROWS + 1, 3)


@pytest.mark.parametrize(
    ("kind", "split"),
    [
        ("asyncpg", None),
        ("asyncpg-pool", None),
        ("asyncpg-factory", None),
        ("asyncpg-pool", COPY_SPLIT),
        ("asyncpg-factory", COPY_SPLIT),
    ],
)
async def test_copy_totals_equal_group_by(
    pg: Pg, kind: str, split: RangeSplit | None, process_executor: ProcessExecutor
) -> None:
    grouped = await pg.monitor.fetch(f"SELECT store, sum(amount) FROM {pg.table} GROUP BY store")
    expected = {r[0]: int(r[1]) for r in grouped}
    stats = aiomr.JobStats()
    async with open_pg(kind, pg.dsn, pg.table) as db:
        sql = f"SELECT id, store, amount FROM {pg.table}"
        source = query(db, sql, split=split, transfer="copy")
        totals = await aiomr.map_reduce_by_key(
            source,
            lambda row: [(row[1], row[2])],
            operator.add,
            executor=process_executor,
            stats=stats,
        )
        assert totals == expected
        assert stats.records == ROWS + NULL_IDS
        ids = collections.Counter([row[0] async for row in source])
        assert ids == collections.Counter(row[0] for row in table_rows())
    await poll(pg.all_idle, "every backend of the test to be idle")


@contextlib.asynccontextmanager
async def big_table(pg: Pg, rows: int = 300_000) -> AsyncIterator[str]:
    """A table whose COPY is still running while a job waits.

    Its ``pad`` column makes the COPY text (over 30 MB) more than the sockets between the
    server and the test can buffer: without it, the server may finish writing every row
    while the job is still held back, and the COPY is then over before the test acts.
    """
    name = f"{pg.table}_big"
    await pg.monitor.execute(
        f"CREATE TABLE {name} AS SELECT g AS id, g % 7 AS store, g AS amount,"
        f" repeat('x', 100) AS pad FROM generate_series(1, {rows}) g"
    )
    try:
        yield name
    finally:
        await pg.monitor.execute(f"DROP TABLE IF EXISTS {name}")


async def copying(pg: Pg) -> list[int]:
    """Pids of the test's backends running a COPY."""
    return [
        pid
        for pid, state, text in await pg.backends()
        if state == "active" and text.startswith("COPY")
    ]


@pytest.mark.parametrize("kind", ["asyncpg", "asyncpg-pool"])
async def test_cancelling_a_copy_mid_stream_ends_it(pg: Pg, kind: str) -> None:
    gate = threading.Event()
    stats = aiomr.JobStats()
    async with big_table(pg) as table, open_pg(kind, pg.dsn, pg.table) as db:
        source = query(db, f"SELECT store, amount, pad FROM {table}", transfer="copy")
        job = gated_job(source, gate, stats)
        await poll(lambda: stats.records >= 1, "the job to start")
        await poll(lambda: copying(pg), "the COPY to be running, held back by the job")
        job.cancel()
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await job
        await poll(pg.all_idle, "no backend left running the COPY")
        assert stats.records < 300_000
        if kind == "asyncpg":  # the connection is still good
            assert await db.fetchval(f"SELECT count(*) FROM {table}") == 300_000


async def test_a_copy_closed_at_any_moment_leaves_the_connection_usable(pg: Pg) -> None:
    # Closing after 1 to 7 blocks, taken at three paces, stops the copy in each of the
    # states its task can be in: waiting for the server, handing a block over, or about to
    # resume with data that has just arrived.
    async with big_table(pg) as table, open_pg("asyncpg", pg.dsn, pg.table) as db:
        for attempt in range(60):
            rows = aiter(query(db, f"SELECT store, amount, pad FROM {table}", transfer="copy"))
            for _ in range(attempt % 7 + 1):
                await anext(rows)
                for _ in range(attempt % 3):
                    await asyncio.sleep(0)
            await rows.aclose()  # type: ignore[attr-defined]
            assert await db.fetchval("SELECT count(*) FROM generate_series(1, 3)") == 3, attempt
        await poll(pg.all_idle, "no backend left running the COPY")


async def test_a_backend_terminated_mid_copy_is_a_clear_error(pg: Pg) -> None:
    gate = threading.Event()
    stats = aiomr.JobStats()
    async with big_table(pg) as table, open_pg("asyncpg", pg.dsn, pg.table) as db:
        sql = f"SELECT store, amount, pad FROM {table}"
        job = gated_job(query(db, sql, transfer="copy"), gate, stats)
        [pid] = await poll(lambda: copying(pg), "the COPY to be running, held back by the job")
        assert await pg.monitor.fetchval("SELECT pg_terminate_backend($1)", pid)
        gate.set()
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)) as caught:
            await job
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert f"reading the query '{sql}' through asyncpg failed at row " in notes
    assert "connection was lost" in notes


async def test_what_copy_cannot_read_is_refused_by_name(pg: Pg, sqlite_path: str) -> None:
    async with open_pg("asyncpg", pg.dsn, pg.table) as conn:
        sql = f"SELECT id, interval '1 day' AS span, day FROM {pg.table}"
        with pytest.raises(TypeError, match=r"column\(s\) 'span' \(pg_catalog.interval\)"):
            [row async for row in query(conn, sql, transfer="copy")]
        await conn.execute("SET DateStyle = 'German'")
        with pytest.raises(ValueError, match="DateStyle is 'German, DMY', not ISO"):
            [row async for row in query(conn, f"SELECT day FROM {pg.table}", transfer="copy")]
        assert len([r async for r in query(conn, f"SELECT id FROM {pg.table}", transfer="copy")])
        with pytest.raises(ValueError, match="transfer must be 'rows' or 'copy'"):
            query(conn, "SELECT 1", transfer="binary")  # type: ignore[call-overload]
        source = query(conn, "SELECT 1", transfer="copy")
        assert repr(source) == "QuerySource('SELECT 1', transfer='copy')"
    async with open_pg("psycopg", pg.dsn, pg.table) as conn_:
        with pytest.raises(TypeError, match="transfer='copy' reads with PostgreSQL's COPY"):
            query(conn_, "SELECT 1", transfer="copy")
    async with aiosqlite.connect(sqlite_path) as db:
        with pytest.raises(TypeError, match="aiosqlite reads rows only"):
            query(db, "SELECT 1", transfer="copy")
    factory = functools.partial(aiosqlite.connect, sqlite_path)
    with pytest.raises(TypeError, match="aiosqlite connections read rows only"):
        [row async for row in query(factory, "SELECT 1", transfer="copy")]


def test_copy_text_that_does_not_decode_fails_its_task_not_the_pool() -> None:
    layout = CopyLayout(("a", "b"), ("int4", "text"), "tuple")
    good = CopyRows(layout, [b"1\tx\n", b"2\t\\N\n"], 2, 0)
    assert len(good) == 2
    assert pickle.loads(pickle.dumps(good)) == [(1, "x"), (2, None)]
    assert list(good) == [(1, "x"), (2, None)]
    bad = CopyRows(layout, [b"1\tx\nnope\ty\n"], 2, 40)
    arrived = pickle.loads(pickle.dumps(bad))  # unpickling itself never raises
    with pytest.raises(aiomr.RecordError, match="row 41 of the query: ValueError"):
        list(arrived)
    with pytest.raises(aiomr.RecordError, match="row 41 of the query"):
        bad[0]
