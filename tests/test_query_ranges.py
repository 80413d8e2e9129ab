"""`sources.sqlite_ranges` and `sources.postgres_ranges`: queries read by the workers, for real."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import operator
import pathlib
import sqlite3
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aiomr
from aiomr.executors import ProcessExecutor
from aiomr.sources import PageSplit, RangeSplit, postgres_ranges, sqlite_ranges
from tests.test_db import Pg, expected_totals, poll, table_rows
from tests.test_db import pg as pg
from tests.test_db import postgres_dsn as postgres_dsn

ROWS = 3000
SQL = "SELECT id, store, amount FROM sales"


@pytest.fixture
def sales(tmp_path: pathlib.Path) -> str:
    """``sales``: ids 1..ROWS (the rowid), then three rows with no id, so NULL ids."""
    path = str(tmp_path / "sales.db")
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE sales (n INTEGER PRIMARY KEY, id INTEGER, store, amount)")
        db.execute("CREATE INDEX sales_id ON sales (id)")
        rows = [(i, i % 7, (i * 37) % 1000) for i in range(1, ROWS + 1)]
        rows += [(None, 3, 11 + n) for n in range(3)]
        db.executemany("INSERT INTO sales (id, store, amount) VALUES (?, ?, ?)", rows)
        db.commit()
    return path


def group_by(path: str) -> dict[int, int]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return dict(db.execute("SELECT store, sum(amount) FROM sales GROUP BY store"))


def store_amount(row: tuple[Any, ...]) -> list[tuple[int, int]]:
    return [(row[1], row[2])]


def amount_of(row: tuple[Any, ...]) -> int:
    return int(row[2])


async def test_a_key_value_job_equals_group_by(
    sales: str, process_executor: ProcessExecutor
) -> None:
    split = RangeSplit("id", 1, ROWS + 1, 8)
    stats = aiomr.JobStats()
    totals = await aiomr.map_reduce_by_key(
        sqlite_ranges(sales, SQL, split=split, batch_size=250),
        store_amount,
        operator.add,
        executor=process_executor,
        stats=stats,
    )
    assert totals == group_by(sales)
    assert stats.records == ROWS + 3
    assert stats.chunks_done == 8  # one task per range
    assert len(stats.worker_pids) >= 1


async def test_every_mode_sees_every_row(sales: str, process_executor: ProcessExecutor) -> None:
    source = sqlite_ranges(sales, SQL, split=RangeSplit("id", 1, ROWS + 1, 4), batch_size=400)
    want = sum(group_by(sales).values())
    by_record = await aiomr.map_reduce(source, amount_of, operator.add, executor=process_executor)

    def chunk_total(rows: list[tuple[Any, ...]]) -> int:
        assert 0 < len(rows) <= 400  # one fetched batch at a time
        return sum(row[2] for row in rows)

    by_chunk = await aiomr.map_reduce(
        source, chunk_total, operator.add, mode="chunk", executor=process_executor
    )

    def blocks_total(blocks: Any) -> int:
        return sum(row[2] for block in blocks for row in block)

    by_blocks = await aiomr.map_reduce(
        source, blocks_total, operator.add, mode="blocks", executor=process_executor
    )
    assert by_record == by_chunk == by_blocks == want


async def test_parameters_and_dict_rows(sales: str) -> None:
    split = RangeSplit("id", 1, ROWS + 1, 3)
    sql = "SELECT id, store, amount FROM sales WHERE store = :store AND amount >= :least"
    source = sqlite_ranges(sales, sql, {"store": 2, "least": 500}, split=split, row="dict")
    got = await aiomr.map_reduce(source, lambda row: [row["id"]], operator.add, executor="inline")
    with contextlib.closing(sqlite3.connect(sales)) as db:
        want = [r[0] for r in db.execute("SELECT id FROM sales WHERE store = 2 AND amount >= 500")]
    assert sorted(got) == sorted(want)
    positional = sqlite_ranges(
        sales, "SELECT id, store, amount FROM sales WHERE store = ?", 2, split=split
    )
    count = await aiomr.map_reduce(positional, lambda row: 1, operator.add, executor="inline")
    assert count == len([i for i in range(1, ROWS + 1) if i % 7 == 2])


@settings(max_examples=30, deadline=None)
@given(
    lower=st.integers(-50, 3100),
    width=st.integers(1, 4000),
    partitions=st.integers(1, 12),
)
def test_every_row_is_read_exactly_once(
    tmp_path_factory: pytest.TempPathFactory, lower: int, width: int, partitions: int
) -> None:
    path = str(tmp_path_factory.mktemp("ranges") / "values.db")
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE t (n INTEGER, x REAL)")
        values = [*range(-30, 130), None, None, -1000, 10**6, 7, 7]
        db.executemany("INSERT INTO t VALUES (?, ?)", [(v, v) for v in values])
        db.commit()
        everything = collections.Counter(db.execute("SELECT n, x FROM t"))
    split = RangeSplit("n", lower, lower + width, partitions)
    source = sqlite_ranges(path, "SELECT n, x FROM t", split=split)
    got = asyncio.run(
        aiomr.map_reduce(
            source, lambda row: collections.Counter([row]), operator.add, executor="inline"
        )
    )
    assert got == everything


def test_bad_arguments_fail_at_once(sales: str, tmp_path: pathlib.Path) -> None:
    split = RangeSplit("id", 1, 10, 2)
    with pytest.raises(FileNotFoundError, match=r"missing\.db: no such SQLite database file"):
        sqlite_ranges(tmp_path / "missing.db", SQL, split=split)
    with pytest.raises(TypeError, match=r"split must be an aiomr\.sources\.RangeSplit"):
        sqlite_ranges(sales, SQL, split=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="row must be 'tuple' or 'dict'"):
        sqlite_ranges(sales, SQL, split=split, row="list")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        sqlite_ranges(sales, SQL, split=split, batch_size=0)
    with pytest.raises(TypeError, match="sql must be a str"):
        sqlite_ranges(sales, b"SELECT 1", split=split)  # type: ignore[arg-type]


async def test_a_query_sqlite_refuses_fails_before_any_row(
    sales: str, tmp_path: pathlib.Path
) -> None:
    split = RangeSplit("id", 1, 10, 2)
    source = sqlite_ranges(sales, "SELECT id, store FROM no_such_table", split=split)
    with pytest.raises(sqlite3.OperationalError, match="no such table") as caught:
        await aiomr.map_reduce(source, lambda row: 1, operator.add)
    assert any("no_such_table" in note and "sales.db" in note for note in caught.value.__notes__)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        await aiomr.map_reduce(sqlite_ranges(junk, SQL, split=split), lambda row: 1, operator.add)


class Unlucky(Exception):
    pass


def fail_on_1234(row: tuple[Any, ...]) -> int:
    if row[0] == 1234:
        raise Unlucky(f"row {row}")
    return 1


async def test_a_mapper_error_names_the_range(
    sales: str, process_executor: ProcessExecutor
) -> None:
    split = RangeSplit("id", 1, ROWS + 1, 4)
    source = sqlite_ranges(sales, SQL, split=split)
    with pytest.raises(Unlucky) as caught:
        await aiomr.map_reduce(source, fail_on_1234, operator.add, executor=process_executor)
    notes = " ".join(caught.value.__notes__)
    assert "range 1 (id >= 751 and < 1501)" in notes


async def test_skipped_rows_are_located_in_their_range(
    sales: str, process_executor: ProcessExecutor
) -> None:
    split = RangeSplit("id", 1, ROWS + 1, 4)
    source = sqlite_ranges(sales, SQL, split=split)
    stats = aiomr.JobStats()
    total = await aiomr.map_reduce(
        source,
        fail_on_1234,
        operator.add,
        on_error="collect",
        executor=process_executor,
        stats=stats,
    )
    assert total == ROWS + 3 - 1
    (bad,) = stats.bad_records
    assert bad.location == f"{sales}: row 483 of range 1 (id >= 751 and < 1501)"
    assert bad.error.startswith("Unlucky")


# --- PostgreSQL: psycopg in the workers ---------------------------------------------------


def with_app(dsn: str, app: str) -> str:
    """``dsn`` with an ``application_name``, to find the workers' backends."""
    return f"{dsn}{'&' if '?' in dsn else '?'}application_name={app}"


def first_and_day(row: tuple[Any, ...]) -> list[tuple[str, int]]:
    return [(type(row[3]).__name__, 1)]


async def test_postgres_ranges_equal_group_by_and_close_their_connections(
    pg: Pg, process_executor: ProcessExecutor
) -> None:
    split = RangeSplit("id", 1, 2001, 6)
    dsn = with_app(pg.dsn, pg.table)
    sql = f"SELECT id, store, amount, day FROM {pg.table}"
    stats = aiomr.JobStats()
    totals = await aiomr.map_reduce_by_key(
        postgres_ranges(dsn, sql, split=split, batch_size=300),
        store_amount,
        operator.add,
        executor=process_executor,
        stats=stats,
    )
    assert totals == expected_totals()
    assert stats.records == len(table_rows())  # the NULL ids too, once
    assert stats.chunks_done == 6
    kinds = await aiomr.map_reduce_by_key(
        postgres_ranges(dsn, sql, split=split), first_and_day, operator.add, executor="inline"
    )
    assert kinds == {"date": len(table_rows())}  # rows come as psycopg decodes them
    await poll(lambda: _no_backends(pg), "the workers' connections to close")


async def _no_backends(pg: Pg) -> bool:
    return not await pg.backends()


async def test_postgres_ranges_take_parameters_and_give_dicts(pg: Pg) -> None:
    sql = f"SELECT id, store, amount FROM {pg.table} WHERE store = %s"
    source = postgres_ranges(pg.dsn, sql, 4, split=RangeSplit("id", 1, 2001, 3), row="dict")
    ids = await aiomr.map_reduce(source, lambda row: [row["id"]], operator.add, executor="inline")
    assert sorted(ids) == [r[0] for r in table_rows() if r[1] == 4 and r[0] is not None]


async def test_postgres_ranges_refused_or_unreachable_fail_before_any_row(pg: Pg) -> None:
    split = RangeSplit("id", 1, 10, 2)
    source = postgres_ranges(pg.dsn, "SELECT id FROM no_such_table", split=split)
    with pytest.raises(psycopg.errors.UndefinedTable) as caught:
        await aiomr.map_reduce(source, lambda row: 1, operator.add, executor="inline")
    assert any("no_such_table" in note for note in caught.value.__notes__)
    unreachable = "postgresql://someone:hunter2@127.0.0.1:1/test"
    source = postgres_ranges(unreachable, f"SELECT id FROM {pg.table}", split=split)
    with pytest.raises(psycopg.OperationalError) as refused:
        await aiomr.map_reduce(source, lambda row: 1, operator.add, executor="inline")
    told = " ".join([str(refused.value), *refused.value.__notes__])
    assert "connecting to postgresql://127.0.0.1/test" in told
    assert "hunter2" not in told
    assert "hunter2" not in repr(source)


async def test_a_failing_mapper_leaves_no_backend_behind(
    pg: Pg, process_executor: ProcessExecutor
) -> None:
    split = RangeSplit("id", 1, 2001, 4)
    source = postgres_ranges(
        with_app(pg.dsn, pg.table), f"SELECT id, store, amount FROM {pg.table}", split=split
    )
    with pytest.raises(Unlucky) as caught:
        await aiomr.map_reduce(source, fail_on_1234, operator.add, executor=process_executor)
    assert "range 2 (id >= 1001 and < 1501)" in " ".join(caught.value.__notes__)
    await poll(lambda: _no_backends(pg), "the workers' connections to close")


async def test_a_page_split_reads_every_row_once_without_an_index(
    pg: Pg, process_executor: ProcessExecutor
) -> None:
    await pg.monitor.execute(f"INSERT INTO {pg.table} SELECT * FROM {pg.table} WHERE id < 100")
    everything = collections.Counter(
        tuple(r) for r in await pg.monitor.fetch(f"SELECT id, store, amount FROM {pg.table}")
    )
    sql = f"SELECT id, store, amount FROM {pg.table} AS s WHERE s.amount >= 0 AND {{pages}}"
    for partitions in (1, 2, 5, 40):  # 40: more ranges than the table has pages
        split = PageSplit(pg.table, partitions, alias="s")
        got = await aiomr.map_reduce(
            postgres_ranges(pg.dsn, sql, split=split),
            lambda row: collections.Counter([row]),
            operator.add,
            executor=process_executor,
        )
        assert got == everything, partitions


def test_page_splits_are_checked() -> None:
    with pytest.raises(ValueError, match="table must be a table name"):
        PageSplit("sales; DROP TABLE x", 4)
    with pytest.raises(ValueError, match="partitions must be >= 1"):
        PageSplit("shop.sales", 0)
    with pytest.raises(ValueError, match="alias must be a plain name"):
        PageSplit("sales", 2, alias="s s")
    with pytest.raises(ValueError, match=r"where the query says \{pages\}"):
        postgres_ranges("postgresql://h/d", "SELECT 1 FROM sales", split=PageSplit("sales", 2))
    with pytest.raises(TypeError, match=r"split must be an aiomr\.sources\.RangeSplit"):
        sqlite_ranges(__file__, "SELECT 1 WHERE {pages}", split=PageSplit("t", 2))  # type: ignore[arg-type]
    ranges = PageSplit("sales", 3).ranges(10)
    assert [label for _, label in ranges] == [
        "range 0 (pages 0 to 2 of sales)",
        "range 1 (pages 3 to 5 of sales)",
        "range 2 (pages 6 to the end of sales)",
    ]
    assert ranges[0][0] == "(sales.ctid < '(3,0)'::tid)"
    assert PageSplit("sales", 4).ranges(0) == [("TRUE", "range 0 (pages 0 to the end of sales)")]


async def test_postgres_ranges_as_arrow_batches(pg: Pg) -> None:
    """Ranges read by ADBC's driver as record batches: the same totals as a GROUP BY, with
    parameters written into each range's query as literals, with either split."""
    pytest.importorskip(
        "adbc_driver_postgresql", reason="the postgres-arrow extra is not installed"
    )
    dsn = with_app(pg.dsn, pg.table)
    per_store = aiomr.Aggregate(by="store", total=("amount", "sum"))
    splits: list[RangeSplit | PageSplit] = [RangeSplit("id", 1, 2001, 6), PageSplit(pg.table, 4)]
    for split in splits:
        where = "WHERE {pages}" if isinstance(split, PageSplit) else ""
        source = postgres_ranges(
            dsn, f"SELECT id, store, amount FROM {pg.table} {where}", split=split, batch_size=250
        )
        stats = aiomr.JobStats()
        table = await aiomr.aggregate(source, per_store, stats=stats, max_workers=2)
        got = dict(zip(table["store"].to_pylist(), table["total"].to_pylist(), strict=True))
        assert got == expected_totals()
        assert stats.records == len(table_rows())
    # A parameter with a quote in it, written in as a literal: still one value.
    sql = f"SELECT store, amount FROM {pg.table} WHERE store = %s AND %s = 'it''s'"
    source = postgres_ranges(dsn, sql, 4, "it's", split=RangeSplit("store", 0, 10, 3))
    rows = await aiomr.map_reduce(source, len, operator.add, mode="batches", executor="inline")
    assert rows == sum(1 for r in table_rows() if r[1] == 4)
    await poll(lambda: _no_backends(pg), "the workers' connections to close")


def test_a_libpq_string_becomes_a_uri_for_adbc() -> None:
    from aiomr.sources._range_readers import _as_uri

    parts = {"host": "db.local", "port": "6432", "dbname": "sales", "user": "ana"}
    assert _as_uri({**parts, "password": "p@ss/word", "sslmode": "require"}) == (
        "postgresql://ana:p%40ss%2Fword@db.local:6432/sales?sslmode=require"
    )
    assert _as_uri({"dbname": "test"}) == "postgresql:///test"


async def test_sqlite_ranges_have_no_arrow_batches(sales: str) -> None:
    source = sqlite_ranges(sales, SQL, split=RangeSplit("id", 1, ROWS + 1, 3))
    with pytest.raises(ValueError, match="mode='batches' needs a columnar source"):
        await aiomr.map_reduce(source, len, operator.add, mode="batches", executor="inline")
