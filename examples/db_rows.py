"""Total sales per store, read from a database table by aiomr and checked against SQL.

By default the example makes its own SQLite file in a temporary directory, fills a ``sales``
table with seeded random rows and reads it back; ``--dsn`` does the same in PostgreSQL (with
a table of its own, dropped at the end)::

    python3 examples/db_rows.py                                  # SQLite, 100,000 rows
    python3 examples/db_rows.py --rows 1000000 --partitions 4    # read as 4 id ranges
    python3 examples/db_rows.py --dsn postgresql://postgres@127.0.0.1:5432/test
    python3 examples/db_rows.py --dsn postgresql://postgres@127.0.0.1:5432/test --copy
    python3 examples/db_rows.py --rows 1000000 --partitions 8 --in-workers

The rows stream out of the database in batches (``aiomr.sources.query``), are mapped and
combined by store in worker processes, and the totals are written back to a table in one
transaction (``aiomr.sinks.write_rows``). The answer is compared with the database's own
``GROUP BY``; amounts are integer cents, so the comparison is exact. With ``--copy``
PostgreSQL sends the rows as ``COPY`` text that the workers decode (``transfer="copy"``):
the caller passes blocks of text on and builds no row. With ``--in-workers`` the workers
read the id ranges themselves (``aiomr.sources.sqlite_ranges``, or ``postgres_ranges`` with
``--dsn``): no row passes through the caller at all.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import aiomr

STORES = ("Aarhus", "Bergen", "Bruges", "Cork", "Graz", "Lyon", "Porto", "Turin", "Uppsala")
GROUP_BY = "SELECT store, sum(amount), count(*) FROM {table} GROUP BY store"


def generate_rows(rows: int, seed: int) -> Iterator[tuple[int, str, int]]:
    """Yield ``(id, store, amount in cents)``, the same rows for the same ``seed``."""
    rng = random.Random(seed)
    weights = [rng.randint(1, 10) for _ in STORES]
    for row_id in range(1, rows + 1):
        yield row_id, rng.choices(STORES, weights)[0], rng.randint(99, 25_000)


def sale(row: tuple[int, str, int]) -> list[tuple[str, tuple[int, int]]]:
    """Map one ``(id, store, amount)`` row to ``(store, (amount, 1))``: one sale."""
    _, store, amount = row
    return [(store, (amount, 1))]


def add(first: tuple[int, int], second: tuple[int, int]) -> tuple[int, int]:
    """Add two ``(total, sales)`` of the same store."""
    return first[0] + second[0], first[1] + second[1]


def dollars(cents: int) -> str:
    """Format cents exactly: ``123456 -> 1,234.56``."""
    return f"{cents // 100:,}.{cents % 100:02d}"


def print_table(title: str, totals: dict[str, tuple[int, int]]) -> None:
    """Print stores by total sales, largest first."""
    ranked = sorted(totals.items(), key=lambda item: (-item[1][0], item[0]))
    rows = [(store, f"{count:,}", dollars(cents)) for store, (cents, count) in ranked]
    headers = ("store", "sales", "total")
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(3)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            f"{cell:<{width}}" if i == 0 else f"{cell:>{width}}"
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    print(title)
    print(line(headers))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print(line(row))


@contextlib.asynccontextmanager
async def sqlite_database(rows: int, seed: int) -> AsyncIterator[tuple[Any, str, str, Any]]:
    """A fresh SQLite file with the tables; yield a connection factory, the table names and
    the function that reads ranges in the workers."""
    import aiosqlite

    with tempfile.TemporaryDirectory(prefix="aiomr-db-rows-") as directory:
        path = os.path.join(directory, "sales.db")
        connect = functools.partial(aiosqlite.connect, path)
        async with connect() as db:
            await db.execute(
                "CREATE TABLE sales (id INTEGER PRIMARY KEY, store TEXT, amount INTEGER)"
            )
            await db.execute("CREATE TABLE store_totals (store TEXT, total INTEGER, sales INTEGER)")
        await aiomr.sinks.write_rows(
            connect, "sales", generate_rows(rows, seed), columns=("id", "store", "amount")
        )
        yield connect, "sales", "store_totals", functools.partial(aiomr.sources.sqlite_ranges, path)


@contextlib.asynccontextmanager
async def postgres_database(
    dsn: str, rows: int, seed: int
) -> AsyncIterator[tuple[Any, str, str, Any]]:
    """Tables of this run's own in PostgreSQL, dropped at the end; yield a pool, the names
    and the function that reads ranges in the workers."""
    import asyncpg

    sales, totals = f"aiomr_example_sales_{os.getpid()}", f"aiomr_example_totals_{os.getpid()}"
    async with asyncpg.create_pool(dsn, min_size=1, max_size=4) as pool:
        await pool.execute(
            f"CREATE TABLE {sales} (id integer PRIMARY KEY, store text, amount bigint);"
            f"CREATE TABLE {totals} (store text, total bigint, sales bigint)"
        )
        try:
            await aiomr.sinks.write_rows(
                pool, sales, generate_rows(rows, seed), columns=("id", "store", "amount")
            )
            yield pool, sales, totals, functools.partial(aiomr.sources.postgres_ranges, dsn)
        finally:
            await pool.execute(f"DROP TABLE IF EXISTS {sales}; DROP TABLE IF EXISTS {totals}")


async def totals_of(db: Any, sql: str) -> dict[str, tuple[int, int]]:
    """``{store: (total, sales)}`` from a query returning those three columns."""
    rows = [row async for row in aiomr.sources.query(db, sql)]
    return {store: (int(total), int(count)) for store, total, count in rows}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="a postgresql:// DSN; SQLite in a temporary file if absent")
    parser.add_argument("--rows", type=int, default=100_000, help="rows (default: 100000)")
    parser.add_argument("--seed", type=int, default=2024, help="random seed (default: 2024)")
    parser.add_argument(
        "--partitions", type=int, default=1, help="read as this many id ranges (default: 1)"
    )
    parser.add_argument("--workers", type=int, default=None, help="worker processes")
    parser.add_argument(
        "--copy",
        action="store_true",
        help="PostgreSQL only: read with COPY, the rows decoded by the workers",
    )
    parser.add_argument(
        "--in-workers",
        action="store_true",
        help="the workers read the id ranges themselves (needs --partitions > 1)",
    )
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be >= 1")
    if args.partitions < 1:
        parser.error("--partitions must be >= 1")
    if args.dsn is not None and not args.dsn.startswith(("postgresql://", "postgres://")):
        parser.error("--dsn must be a postgresql:// DSN")
    if args.copy and args.dsn is None:
        parser.error("--copy reads with PostgreSQL's COPY: it needs --dsn")
    if args.in_workers and args.partitions < 2:
        parser.error("--in-workers reads id ranges: give --partitions 2 or more")
    if args.in_workers and args.copy:
        parser.error("--in-workers and --copy are two different ways to read: choose one")
    return args


async def main(args: argparse.Namespace) -> int:
    kind = "PostgreSQL" if args.dsn else "SQLite"
    database = (
        postgres_database(args.dsn, args.rows, args.seed)
        if args.dsn
        else sqlite_database(args.rows, args.seed)
    )
    async with database as (db, sales, totals_table, in_workers):
        started = time.perf_counter()
        split = None
        if args.partitions > 1:
            split = aiomr.sources.RangeSplit("id", 1, args.rows + 1, args.partitions)
        sql = f"SELECT id, store, amount FROM {sales}"
        source = (
            in_workers(sql, split=split)
            if args.in_workers
            else aiomr.sources.query(db, sql, split=split, transfer="copy" if args.copy else "rows")
        )
        totals = await aiomr.map_reduce_by_key(
            source, sale, add, sort=True, max_workers=args.workers
        )
        seconds = time.perf_counter() - started
        written = await aiomr.sinks.write_rows(
            db,
            totals_table,
            ((store, total, count) for store, (total, count) in totals.items()),
            columns=("store", "total", "sales"),
        )
        expected = await totals_of(db, GROUP_BY.format(table=sales))
        stored = await totals_of(db, f"SELECT store, total, sales FROM {totals_table}")
    print_table(f"TOTAL SALES PER STORE ({kind}, {args.rows:,} rows)", totals)
    print()
    if totals != expected:
        print("MISMATCH: aiomr's totals differ from SQL GROUP BY", file=sys.stderr)
        return 1
    if stored != totals:
        print("MISMATCH: the totals written back differ", file=sys.stderr)
        return 1
    print(f"equal to SQL GROUP BY over {kind}; {written} totals written back")
    print(f"{args.rows:,} rows read and reduced in {seconds:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(aiomr.run(main(parse_args())))
