"""Queries read by the workers themselves, one range of a column per task.

::

    sqlite_ranges(path, ...) / postgres_ranges(dsn, ...) ──► QueryRangesSource
        caller: check the database and the query (EXPLAIN), plan the ranges of the
                RangeSplit, send each task one QueryRange: the range's query and bounds
        worker: open its own connection (sqlite3 read-only; psycopg), run the range's
                query, fetch its rows in batches, map them there

The rows never pass through the caller: it neither decodes nor pickles them, so reading
grows with the workers instead of stopping at what one cursor in the caller delivers
(`query` streams every row through the caller). Each range is read in a transaction of its
own, so the ranges do not share one snapshot (as with `RangeSplit` over a pool).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from .._db.driver import Params, RowType, check_read, pack_params
from .._db.page_splits import PAGES, PageSplit
from .._db.range_splits import RangeSplit
from ._range_readers import PostgresReader, QueryRange, RangeReader, SqliteReader
from ._split_source import SplitSource

__all__ = ["DEFAULT_BATCH_SIZE", "QueryRangesSource", "postgres_ranges", "sqlite_ranges"]

DEFAULT_BATCH_SIZE = 10_000
"""Rows per fetch in a worker: a round trip is cheap next to the mapping of 10,000 rows,
and they take about a megabyte; a key-value job combines each batch as one block."""


class _RangePlan:
    """The ranges, handed out one per task, in column order."""

    total = None

    def __init__(self, ranges: list[QueryRange]) -> None:
        self._ranges = iter(ranges)

    def cut(self, size: int) -> QueryRange | None:
        return next(self._ranges, None)


class QueryRangesSource(SplitSource):
    """A query read by the workers, one range of a column per task (see `sqlite_ranges`,
    `postgres_ranges`)."""

    record_noun = ("row", "the query")

    def __init__(
        self, reader: RangeReader, sql: str, params: Params, split: RangeSplit | PageSplit
    ) -> None:
        self.reader: RangeReader = reader
        self.sql = sql
        """The query."""
        self.params = params
        """Its parameters: positional values or one mapping."""
        self.split = split
        """How the query is cut into ranges."""

    def __repr__(self) -> str:
        return f"QueryRangesSource({self.reader.name!r}, {self.sql!r}, split={self.split!r})"

    def batch_reader(self) -> Any:
        """Ranges as Arrow record batches, where the database's driver can give them
        (`postgres_ranges`, with ADBC installed); ``None`` otherwise."""
        return self.reader.arrow_reader()

    def cutter(self, workers: int) -> tuple[_RangePlan, int]:
        """Check the database and the query, then plan the ranges (blocking)."""
        try:
            connection = self.reader.connect()
        except Exception as exc:
            exc.add_note(f"aiomr: connecting to {self.reader.name} for the query {self.sql!r}")
            raise
        try:
            ranges = self.reader.restrict(connection, self.sql, self.params, self.split)
            # Compiling the first range's query finds a missing table or column, or a
            # file that is no database, before any worker starts on it.
            try:
                self.reader.explain(connection, ranges[0].sql, ranges[0].params)
            except Exception as exc:
                exc.add_note(f"aiomr: the query {self.sql!r} on {self.reader.name}")
                raise
        finally:
            connection.close()
        return _RangePlan(ranges), 0


def _check(
    sql: object, split: object, row: object, batch_size: object, *, pages: bool = False
) -> None:
    check_read(sql, row, batch_size)
    if pages and isinstance(split, PageSplit):
        if PAGES not in str(sql):
            raise ValueError(
                f"a PageSplit puts each range's condition where the query says {PAGES} "
                f"(in its WHERE clause): {sql!r} has none"
            )
    elif not isinstance(split, RangeSplit):
        kinds = "a RangeSplit or a PageSplit" if pages else "an aiomr.sources.RangeSplit"
        raise TypeError(f"split must be {kinds}, got {split!r}")


def sqlite_ranges(
    path: str | os.PathLike[str],
    sql: str,
    *params: Any,
    split: RangeSplit,
    row: RowType = "tuple",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> QueryRangesSource:
    """Read a query on an SQLite file in the workers, one range of a column per task.

    ```python
    import operator

    import aiomr


    def store_amount(row: tuple[int, int, int]) -> list[tuple[int, int]]:
        _, store, amount = row
        return [(store, amount)]


    async def main() -> None:
        split = aiomr.sources.RangeSplit("id", lower=1, upper=1_000_001, partitions=16)
        source = aiomr.sources.sqlite_ranges(
            "sales.db", "SELECT id, store, amount FROM sales", split=split
        )
        totals = await aiomr.map_reduce_by_key(source, store_amount, operator.add)
        print(totals)


    if __name__ == "__main__":
        aiomr.run(main())
    ```

    Each worker opens the file read-only with the standard library's ``sqlite3`` and reads
    the rows of one range, which its task then maps: the caller sends only the range's
    query, so it decodes and pickles no row (`query` over aiosqlite streams every row through
    the caller, which caps a job at what one cursor there delivers). Every row is read
    exactly once (see `RangeSplit`); ``max_connections`` does not apply: as many ranges are
    read at once as there are workers. More ranges than workers balance the load (a range
    is one task, which cannot be split further) and let a shared `Engine` interleave jobs.
    The split column should be indexed (an ``INTEGER PRIMARY KEY`` is), or every range
    scans the whole table.

    Args:
        path: the database file; it must exist (it is opened read-only).
        sql: the query.
        params: its parameters: positional values (``?``) or one mapping (``:name``).
        split: the ranges (`RangeSplit`): a column of the query's result and its bounds.
        row: ``"tuple"`` (the default) or ``"dict"`` (column name to value).
        batch_size: rows per fetch in a worker; a ``mode="chunk"`` mapper gets one batch.

    Returns:
        A `QueryRangesSource`, for the job functions (not an async iterable: its rows exist
        only in the workers).

    Raises:
        TypeError, ValueError: bad arguments; FileNotFoundError: no such file (both at
            once). When the job starts: `sqlite3.Error`, with a note naming the query and
            the file, for a query SQLite refuses or a file that is no database. An error
            while a range is read names the range.
    """
    _check(sql, split, row, batch_size)
    name = os.fspath(path)
    if not isinstance(name, str):
        raise TypeError(f"path must be a str or os.PathLike[str], got {path!r}")
    if not os.path.isfile(name):
        raise FileNotFoundError(f"{name}: no such SQLite database file")
    packed = pack_params(params)
    SqliteReader.driver.check_params(packed)
    return QueryRangesSource(SqliteReader(name, row, batch_size), sql, packed, split)


def postgres_ranges(
    dsn: str,
    sql: str,
    *params: Any,
    split: RangeSplit | PageSplit,
    row: RowType = "tuple",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> QueryRangesSource:
    """Read a PostgreSQL query in the workers, one range per task, with psycopg.

    ```python
    import collections

    import aiomr


    def per_store(rows: list[tuple[str, int]]) -> collections.Counter[str]:
        totals: collections.Counter[str] = collections.Counter()
        for store, amount in rows:
            totals[store] += amount
        return totals


    async def main() -> None:
        source = aiomr.sources.postgres_ranges(
            "postgresql://localhost/shop",
            "SELECT store, amount FROM sales WHERE {pages}",
            split=aiomr.sources.PageSplit("sales", partitions=16),
        )
        totals = await aiomr.map_reduce(source, per_store, lambda a, b: a + b, mode="chunk")
        print(totals.most_common(5))


    if __name__ == "__main__":
        aiomr.run(main())
    ```

    Each worker connects with psycopg 3 (``pip install 'aiomr[psycopg]'``), reads one range
    through a server-side cursor (binary, ``batch_size`` rows per fetch) and maps its rows
    there; the caller sends only the range's query, so it decodes and pickles no row.
    Every row is read once, with either split. ``max_connections`` does not apply: each
    worker holds one connection while it reads a range. Index a `RangeSplit`'s column (a
    primary key is), or every range scans the whole table; a `PageSplit` needs no index and
    reads each page once (PostgreSQL 14 or later). Rows come as psycopg returns them
    (``Decimal`` for ``numeric``, ``date`` for ``date``...), as tuples or dicts.

    With ``mode="batches"`` (and `aiomr.aggregate`) each range is read instead by ADBC's
    PostgreSQL driver (``pip install 'aiomr[postgres-arrow]'``) as Arrow record batches of
    up to ``batch_size`` rows, decoded into columns in C; psycopg writes the parameters
    into each range's query as literals, as the server would read them.

    Args:
        dsn: a libpq connection string or URI, used by every worker; whatever a worker
            needs to connect (a password, a ``sslmode``) must be in it or in its
            environment (``PGPASSWORD``, ``~/.pgpass``).
        sql: the query.
        params: its parameters: positional values (``%s``) or one mapping (``%(name)s``).
        split: the ranges: a `RangeSplit` (a column of the query's result and its
            bounds), or a `PageSplit` (the pages of one table: no index needed; the query
            says where the condition goes with ``{pages}``).
        row: ``"tuple"`` (the default) or ``"dict"`` (column name to value).
        batch_size: rows per fetch in a worker; a ``mode="chunk"`` mapper gets one batch.

    Returns:
        A `QueryRangesSource`, for the job functions (its rows exist only in the workers).

    Raises:
        TypeError, ValueError: bad arguments; ImportError: psycopg is not installed (both
            at once). When the job starts: psycopg's errors, with a note naming the query,
            when the server cannot be reached or refuses the query. An error while a range
            is read names the range. Messages name the server and the database, never
            the password.
    """
    _check(sql, split, row, batch_size, pages=True)
    if not isinstance(dsn, str):
        raise TypeError(f"dsn must be a str, got {type(dsn).__qualname__}")
    try:
        conninfo: Any = importlib.import_module("psycopg.conninfo")
    except ImportError as exc:
        raise ImportError(
            "postgres_ranges reads with psycopg 3 in the workers: pip install 'aiomr[psycopg]'"
        ) from exc
    parts = conninfo.conninfo_to_dict(dsn)
    name = f"postgresql://{parts.get('host', 'localhost')}/{parts.get('dbname', '')}"
    packed = pack_params(params)
    PostgresReader.driver.check_params(packed)
    return QueryRangesSource(PostgresReader(dsn, name, row, batch_size), sql, packed, split)
