"""Range splits without ``lower`` and ``upper``: the bounds come from the column's MIN and MAX.

Against the real databases, through every driver a range split reads with: asyncpg (pool and
connection factory), psycopg's pool and SQLAlchemy's engine for PostgreSQL, aiosqlite and
SQLAlchemy for SQLite in the caller, and psycopg and ``sqlite3`` in the workers.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import decimal
import functools
import operator
import os
import pathlib
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

import aiomr
from aiomr._db.driver import Bounds
from aiomr.executors import ProcessExecutor
from aiomr.sources import RangeSplit, postgres_ranges, query, sqlite_ranges
from tests.test_db import (
    NULL_IDS,
    PG_PARALLEL,
    ROWS,
    Pg,
    expected_totals,
    open_pg,
    open_sqlite,
    poll,
    table_rows,
)
from tests.test_db import pg as pg
from tests.test_db import postgres_dsn as postgres_dsn
from tests.test_db import sqlite_path as sqlite_path

SQLITE_PARALLEL = ["aiosqlite-factory", "sqlalchemy-aiosqlite"]
EVERY_ID = collections.Counter(row[0] for row in table_rows())
"""Ids 1..ROWS once each, and NULL three times."""
PG_COLUMNS = {
    "integer": "id",
    "date": "day",
    "timestamp": "day::timestamp",
    "numeric": "(amount / 7.0)::numeric",
    "float": "amount::float8 / 3",
}
"""Expressions of the test table for each column type a split can cut."""


def store_amount(row: tuple[Any, ...]) -> list[tuple[int, int]]:
    return [(row[1], row[2])]


def count_rows(row: tuple[Any, ...]) -> int:
    return 1


@contextlib.asynccontextmanager
async def counted_factory(dsn: str, app: str) -> AsyncIterator[tuple[Any, list[int]]]:
    """An asyncpg connection factory that counts the connections it opens."""
    opened: list[int] = []

    def connect() -> Any:
        opened.append(1)
        return asyncpg.connect(dsn, server_settings={"application_name": app})

    yield connect, opened


# --- the plan -------------------------------------------------------------------------------


def test_a_split_needs_no_bounds() -> None:
    split = RangeSplit("rowid", partitions=4)
    assert split.reads_bounds
    assert split.connections == 4
    assert not RangeSplit("id", 0, 10, 2).reads_bounds
    assert RangeSplit("id", lower=5, partitions=2).reads_bounds
    with pytest.raises(ValueError, match=r"takes its bounds from the column's MIN and MAX"):
        split.plan()
    with pytest.raises(TypeError, match=r"^RangeSplit\(\) needs partitions=$"):
        RangeSplit("id")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="lower must be less than upper"):
        RangeSplit("id", 5, 5, 2)
    with pytest.raises(TypeError, match="lower must be a number, a date or a datetime"):
        RangeSplit("id", lower="a", partitions=2)  # type: ignore[call-overload]


def test_plans_from_min_and_max() -> None:
    split = RangeSplit("id", partitions=4)
    # Integers: [MIN, MAX + 1) in strides of equal width, so MAX itself is in the last one.
    assert split.plan_from(1, 2000) == RangeSplit("id", 1, 2001, 4).plan()
    assert [b.lower for b in split.plan_from(1, 2000)] == [None, 501, 1001, 1501]
    days = split.plan_from(datetime.date(2024, 1, 1), datetime.date(2024, 1, 4))
    assert [b.lower for b in days] == [None, *(datetime.date(2024, 1, d) for d in (2, 3, 4))]
    # SQLite's ISO text dates cut as dates (its range queries compare them as text).
    assert split.plan_from("2024-01-01", "2024-01-04") == days
    moment = datetime.datetime(2024, 1, 1)
    assert len(split.plan_from(moment, moment + datetime.timedelta(hours=4))) == 4
    assert len(split.plan_from(decimal.Decimal("0.5"), decimal.Decimal("8.5"))) == 4
    assert len(split.plan_from(-1.5, 2.5)) == 4
    every_row = [Bounds(0, None, None, nulls=True)]
    assert split.plan_from(None, None) == every_row  # an empty table, or only NULLs
    assert split.plan_from(2.5, 2.5) == every_row  # one value: no room for a cut
    assert split.plan_from(7, 7) == [Bounds(0, None, 7, nulls=True), Bounds(1, 7, None, False)]
    # A bound that is given is kept; the other comes from the data.
    assert RangeSplit("id", lower=1001, partitions=2).plan_from(1, 2000) == [
        Bounds(0, None, 1501, nulls=True),
        Bounds(1, 1501, None, nulls=False),
    ]
    assert RangeSplit("id", lower=5000, partitions=2).plan_from(1, 2000) == every_row


def test_bounds_the_split_cannot_cut_are_refused_clearly() -> None:
    split = RangeSplit("name", partitions=4)
    with pytest.raises(TypeError) as caught:
        split.plan_from("apple", "pear")
    assert str(caught.value) == (
        "RangeSplit: the MIN of the column name is 'apple' (str); a range split without "
        "lower= and upper= needs a column of numbers, dates or timestamps (in SQLite, also "
        "ISO 8601 text)"
    )
    with pytest.raises(TypeError, match=r"the MIN of the column name is False \(bool\)"):
        split.plan_from(False, True)
    with pytest.raises(ValueError, match=r"the MAX of the column name is nan, between which"):
        split.plan_from(1.0, float("nan"))
    with pytest.raises(ValueError, match=r"the MIN of the column name is Decimal\('-Infinity'\)"):
        split.plan_from(decimal.Decimal("-Infinity"), decimal.Decimal(3))
    with pytest.raises(
        TypeError,
        match=r"^RangeSplit: lower is a number, but the MIN and MAX of the column name are "
        r"datetime\.date\(2024, 1, 1\) and datetime\.date\(2024, 2, 1\)$",
    ):
        RangeSplit("name", lower=3, partitions=2).plan_from(
            datetime.date(2024, 1, 1), datetime.date(2024, 2, 1)
        )


# --- PostgreSQL, read by the caller ----------------------------------------------------------


@pytest.mark.parametrize("kind", PG_PARALLEL)
@pytest.mark.parametrize("column", PG_COLUMNS)
async def test_postgres_split_without_bounds_reads_every_row_once(
    pg: Pg, kind: str, column: str
) -> None:
    sql = f"SELECT id, {PG_COLUMNS[column]} AS c FROM {pg.table}"
    split = RangeSplit("c", partitions=4, max_connections=3)
    async with open_pg(kind, pg.dsn, pg.table) as db:
        source = query(db, sql, split=split, batch_size=64)
        ids = collections.Counter([row[0] async for row in source])
    assert ids == EVERY_ID
    await poll(pg.all_idle, "every backend of the test to be idle")


async def test_postgres_bounds_query_comes_first_then_one_connection_per_range(pg: Pg) -> None:
    async with counted_factory(pg.dsn, pg.table) as (connect, opened):
        source = query(
            connect,
            f"SELECT id, store, amount FROM {pg.table}",
            split=RangeSplit("id", partitions=4),
        )
        totals = await aiomr.map_reduce_by_key(
            source, store_amount, operator.add, executor="inline"
        )
    assert totals == expected_totals()
    assert len(opened) == 1 + 4  # MIN and MAX on one connection, then the four ranges
    await poll(pg.all_idle, "every backend of the test to be idle")


@pytest.mark.parametrize("kind", PG_PARALLEL)
async def test_postgres_empty_table_is_an_empty_job(pg: Pg, kind: str) -> None:
    await pg.monitor.execute(f"DELETE FROM {pg.table}")
    split = RangeSplit("id", partitions=4)
    async with open_pg(kind, pg.dsn, pg.table) as db:
        source = query(db, f"SELECT id, store, amount FROM {pg.table}", split=split)
        assert [row async for row in source] == []
        run = functools.partial(aiomr.map_reduce, source, count_rows, operator.add)
        assert await run(initial=0, executor="inline") == 0
        with pytest.raises(aiomr.EmptySourceError):
            await run(executor="inline")
        by_key = functools.partial(aiomr.map_reduce_by_key, source, store_amount, operator.add)
        assert await by_key(executor="inline") == {}
    await poll(pg.all_idle, "every backend of the test to be idle")


async def test_postgres_column_of_nulls_is_read_as_one_range(pg: Pg) -> None:
    await pg.monitor.execute(f"UPDATE {pg.table} SET id = NULL")
    async with open_pg("asyncpg-pool", pg.dsn, pg.table) as pool:
        source = query(pool, f"SELECT id FROM {pg.table}", split=RangeSplit("id", partitions=4))
        assert [row async for row in source] == [(None,)] * (ROWS + NULL_IDS)


@pytest.mark.parametrize("kind", PG_PARALLEL)
async def test_postgres_text_column_is_refused_before_any_row(pg: Pg, kind: str) -> None:
    split = RangeSplit("name", partitions=4)
    async with open_pg(kind, pg.dsn, pg.table) as db:
        source = query(db, f"SELECT id, 'store ' || store AS name FROM {pg.table}", split=split)
        with pytest.raises(
            TypeError, match=r"^RangeSplit: the MIN of the column name is 'store 0'"
        ):
            [row async for row in source]
    await poll(pg.all_idle, "every backend of the test to be idle")


async def test_postgres_bounds_query_errors_name_it(pg: Pg) -> None:
    async with open_pg("asyncpg-pool", pg.dsn, pg.table) as pool:
        source = query(pool, f"SELECT nope FROM {pg.table}", split=RangeSplit("nope", partitions=2))
        with pytest.raises(asyncpg.UndefinedColumnError) as caught:
            [row async for row in source]
        notes = "\n".join(caught.value.__notes__)
        assert "reading the MIN and MAX of nope for a range split" in notes
    await poll(pg.all_idle, "every backend of the test to be idle")


# --- PostgreSQL and SQLite, read by the workers ----------------------------------------------


async def test_postgres_ranges_without_bounds(pg: Pg, process_executor: ProcessExecutor) -> None:
    stats = aiomr.JobStats()
    totals = await aiomr.map_reduce_by_key(
        postgres_ranges(
            pg.dsn,
            f"SELECT id, store, amount FROM {pg.table}",
            split=RangeSplit("id", partitions=4),
        ),
        store_amount,
        operator.add,
        executor=process_executor,
        stats=stats,
    )
    assert totals == expected_totals()
    assert stats.chunks_done == 4  # one task per range, cut between MIN and MAX
    assert stats.records == stats.records_reduced + stats.records_skipped == ROWS + NULL_IDS
    for column in PG_COLUMNS.values():
        sql = f"SELECT id, {column} AS c FROM {pg.table}"
        got = await aiomr.map_reduce(
            postgres_ranges(pg.dsn, sql, split=RangeSplit("c", partitions=3)),
            lambda row: collections.Counter([row[0]]),
            operator.add,
            executor="inline",
        )
        assert got == EVERY_ID


async def test_postgres_ranges_of_an_empty_table(pg: Pg, process_executor: ProcessExecutor) -> None:
    await pg.monitor.execute(f"DELETE FROM {pg.table}")
    source = postgres_ranges(
        pg.dsn, f"SELECT id, store, amount FROM {pg.table}", split=RangeSplit("id", partitions=4)
    )
    run = functools.partial(aiomr.map_reduce, source, count_rows, operator.add)
    by_key = functools.partial(aiomr.map_reduce_by_key, source, store_amount, operator.add)
    assert await by_key(executor=process_executor) == {}
    assert await run(initial=0, executor=process_executor) == 0
    with pytest.raises(aiomr.EmptySourceError):
        await run(executor=process_executor)


@pytest.mark.usefixtures("nothing_left_running")
async def test_postgres_ranges_refuse_a_text_column_and_leave_nothing(
    pg: Pg, tmp_path: pathlib.Path
) -> None:
    source = postgres_ranges(
        pg.dsn,
        f"SELECT id, 'store ' || store AS name FROM {pg.table}",
        split=RangeSplit("name", partitions=4),
    )
    with pytest.raises(TypeError, match=r"^RangeSplit: the MIN of the column name is 'store 0'"):
        await aiomr.map_reduce_by_key(
            source, store_amount, operator.add, executor="process", temp_dir=str(tmp_path)
        )
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("column", ["id", "day", "amount / 7.0"])
async def test_sqlite_ranges_without_bounds(
    sqlite_path: str, column: str, process_executor: ProcessExecutor
) -> None:
    # ``day`` is ISO 8601 text, as SQLite keeps dates.
    stats = aiomr.JobStats()
    totals = await aiomr.map_reduce_by_key(
        sqlite_ranges(
            sqlite_path,
            f"SELECT {column} AS c, store, amount FROM sales",
            split=RangeSplit("c", partitions=4),
        ),
        store_amount,
        operator.add,
        executor=process_executor,
        stats=stats,
    )
    assert totals == expected_totals()
    assert stats.chunks_done == 4
    assert stats.records == ROWS + NULL_IDS


async def test_sqlite_ranges_split_the_rowid(sqlite_path: str) -> None:
    stats = aiomr.JobStats()
    source = sqlite_ranges(
        sqlite_path,
        "SELECT rowid, store, amount FROM sales",
        split=RangeSplit("rowid", partitions=4),
    )
    totals = await aiomr.map_reduce_by_key(
        source, store_amount, operator.add, executor="inline", stats=stats
    )
    assert totals == expected_totals()
    assert stats.chunks_done == 4


async def test_sqlite_ranges_of_an_empty_table(sqlite_path: str) -> None:
    with contextlib.closing(sqlite3.connect(sqlite_path)) as db:
        db.execute("DELETE FROM sales")
        db.commit()
    source = sqlite_ranges(
        sqlite_path, "SELECT id, store, amount FROM sales", split=RangeSplit("id", partitions=4)
    )
    assert (
        await aiomr.map_reduce_by_key(source, store_amount, operator.add, executor="inline") == {}
    )
    with pytest.raises(aiomr.EmptySourceError):
        await aiomr.map_reduce(source, count_rows, operator.add, executor="inline")


async def test_sqlite_ranges_refuse_a_text_column(sqlite_path: str) -> None:
    source = sqlite_ranges(
        sqlite_path,
        "SELECT 'store ' || store AS name FROM sales",
        split=RangeSplit("name", partitions=4),
    )
    with pytest.raises(TypeError, match=r"^RangeSplit: the MIN of the column name is 'store 0'"):
        await aiomr.map_reduce(source, count_rows, operator.add, executor="inline")


# --- SQLite, read by the caller --------------------------------------------------------------


@pytest.mark.parametrize("kind", SQLITE_PARALLEL)
@pytest.mark.parametrize("column", ["id", "rowid", "day", "amount / 3.0"])
async def test_sqlite_split_without_bounds_reads_every_row_once(
    sqlite_path: str, kind: str, column: str
) -> None:
    split = RangeSplit("c", partitions=4, max_connections=2)
    async with open_sqlite(kind, sqlite_path) as db:
        source = query(db, f"SELECT id, {column} AS c FROM sales", split=split)
        ids = collections.Counter([row[0] async for row in source])
    assert ids == EVERY_ID


@pytest.mark.parametrize("kind", SQLITE_PARALLEL)
async def test_sqlite_split_of_an_empty_table_and_a_text_column(
    sqlite_path: str, kind: str
) -> None:
    split = RangeSplit("c", partitions=4)
    async with open_sqlite(kind, sqlite_path) as db:
        text = query(db, "SELECT 'store ' || store AS c FROM sales", split=split)
        with pytest.raises(TypeError, match=r"^RangeSplit: the MIN of the column c is 'store 0'"):
            [row async for row in text]
        empty = query(db, "SELECT id AS c, store, amount FROM sales WHERE store > 99", split=split)
        by_key = functools.partial(aiomr.map_reduce_by_key, empty, store_amount, operator.add)
        assert await by_key(executor="inline") == {}
        with pytest.raises(aiomr.EmptySourceError):
            await aiomr.map_reduce(empty, count_rows, operator.add, executor="inline")


@pytest.mark.usefixtures("nothing_left_running")
async def test_a_refused_split_in_the_caller_leaves_nothing(pg: Pg, tmp_path: pathlib.Path) -> None:
    async with open_pg("asyncpg-pool", pg.dsn, pg.table) as pool:
        sql = f"SELECT 'store ' || store AS name, store, amount FROM {pg.table}"
        source = query(pool, sql, split=RangeSplit("name", partitions=3))
        with pytest.raises(TypeError, match=r"^RangeSplit: the MIN of the column name is"):
            await aiomr.map_reduce_by_key(
                source, store_amount, operator.add, executor="process", temp_dir=str(tmp_path)
            )
        stats = aiomr.JobStats()
        source = query(
            pool, f"SELECT id, store, amount FROM {pg.table}", split=RangeSplit("id", partitions=3)
        )
        totals = await aiomr.map_reduce_by_key(
            source, store_amount, operator.add, executor="process", stats=stats
        )
    assert totals == expected_totals()
    assert stats.records == stats.records_reduced + stats.records_skipped == ROWS + NULL_IDS
    assert os.listdir(tmp_path) == []
    await poll(pg.all_idle, "every backend of the test to be idle")
