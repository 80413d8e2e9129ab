"""Reading one range of a query in a worker: the range, and a reader per database.

A `QueryRangesSource` (`aiomr.sources._query_ranges`) plans its ranges in the caller and
ships a `RangeReader` to the workers once per job; each task then gets one `QueryRange`, the
range's query and bounds, and the worker opens its own connection (``sqlite3`` read-only, or
psycopg), runs that query and fetches its rows in batches. The caller side uses a reader
too, once, to check the query and plan the ranges (`RangeReader.restrict`).
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import itertools
import pathlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

from .._columnar.imports import check_installed, require
from .._db.driver import Driver, Params, RowType, bounds_query
from .._db.page_splits import PAGES, PageSplit
from .._db.psycopg_driver import PsycopgDriver
from .._db.range_splits import RangeSplit
from .._db.sqlite_driver import SqliteDriver

__all__ = ["PostgresArrowReader", "PostgresReader", "QueryRange", "RangeReader", "SqliteReader"]


@dataclass(frozen=True, slots=True)
class QueryRange:
    """One task of a `QueryRangesSource`: a range's query, and how to name it."""

    index: int
    sql: str
    params: Params
    label: str
    """``range 2 (id >= 500001 and < 750001)``."""
    literal: str | None = None
    """The query with its parameters written in as literals (PostgreSQL), for a driver
    that binds none: the Arrow reader (`PostgresArrowReader`)."""

    @property
    def size(self) -> int:
        """Bytes covered: unknown for a range of rows."""
        return 0

    def describe(self) -> str:
        """Name the range for messages."""
        return self.label


class RangeReader(abc.ABC):
    """Read the rows of one range in a worker (see `aiomr.sources.SplitSource`).

    Subclasses open a connection and a cursor; the reader fetches ``batch_size`` rows at a
    time and turns them into tuples or dicts. It is pickled once per job with its code.
    """

    driver: ClassVar[Driver]
    """The database's driver as `query` uses it: ranges are restricted and parameters
    checked the same way."""

    def __init__(self, name: str, row: RowType, batch_size: int) -> None:
        self.name = name
        """The database, for messages (no password)."""
        self.row: RowType = row
        self.batch_size = batch_size

    @abc.abstractmethod
    def connect(self) -> Any:
        """Open a connection (in the worker, and once in the caller to check the query)."""

    def execute(self, connection: Any, sql: str, params: Params) -> Any:
        """Run the query; return a cursor to fetch from."""
        return connection.execute(sql, params)

    def explain(self, connection: Any, sql: str, params: Params) -> None:
        """Have the database compile the query without running it."""
        connection.execute(f"EXPLAIN {sql}", params).close()

    def restrict(self, connection: Any, sql: str, params: Params, split: Any) -> list[QueryRange]:
        """The query of each range of ``split``, with its parameters (`Driver.restrict`).

        A split without bounds reads the column's MIN and MAX first, on ``connection``.
        """
        if split.reads_bounds:
            try:
                low, high = self.column_bounds(connection, sql, params, split.column)
            except Exception as exc:
                exc.add_note(f"aiomr: reading the MIN and MAX of {split.column} on {self.name}")
                raise
            plan = split.plan_from(low, high)
        else:
            plan = split.plan()
        ranges = []
        for bounds in plan:
            text, values = self.driver.restrict(connection, sql, params, split.column, bounds)
            ranges.append(QueryRange(bounds.index, text, values, bounds.describe(split.column)))
        return ranges

    def column_bounds(
        self, connection: Any, sql: str, params: Params, column: str
    ) -> tuple[Any, Any]:
        """Return the ``MIN`` and ``MAX`` of ``column`` over the query (blocking)."""
        cursor = connection.execute(bounds_query(sql, column), self.bind(params))
        try:
            low, high = cursor.fetchone()
        finally:
            cursor.close()
        return low, high

    def bind(self, params: Params) -> Any:
        """The parameters as the connection's ``execute`` takes them."""
        return params

    def arrow_reader(self) -> Any:
        """What reads a range as Arrow record batches (``mode="batches"``), or ``None``
        where the database's driver cannot give Arrow (the default)."""
        return None

    def line_blocks(self, split: QueryRange) -> Iterator[list[Any]]:
        """The range's rows, ``batch_size`` at a time, as tuples or dicts."""
        connection = self.connect()
        try:
            try:
                cursor = self.execute(connection, split.sql, split.params)
            except Exception as exc:
                exc.add_note(f"aiomr: reading {split.label} of {self.name}")
                raise
            try:
                names = [column[0] for column in cursor.description or ()]
                size = self.batch_size
                dicts = self.row == "dict"
                while batch := cursor.fetchmany(size):
                    yield (
                        [dict(zip(names, values, strict=True)) for values in batch]
                        if dicts
                        else batch
                    )
            finally:
                cursor.close()
        finally:
            connection.close()

    def records(self, split: QueryRange) -> Iterator[Any]:
        """The range's rows one by one."""
        return itertools.chain.from_iterable(self.line_blocks(split))

    def blocks(self, split: QueryRange) -> Iterator[list[Any]]:
        """What a ``mode="blocks"`` mapper gets: the lists of rows of `line_blocks`."""
        return self.line_blocks(split)

    @staticmethod
    def records_in_block(block: list[Any]) -> int:
        """The rows in one block."""
        return len(block)

    def located_lines(self, split: QueryRange) -> Iterator[tuple[str, int, Any]]:
        """Each row with its range and its position there, from 0."""
        for position, row in enumerate(self.records(split)):
            yield split.label, position, row

    def where(self, place: str, offset: int) -> str:
        """Name a row: ``sales.db: row 17 of range 2 (id >= 500001 and < 750001)``."""
        return f"{self.name}: row {offset} of {place}"

    @staticmethod
    def decode_and_parse(raw: Any) -> Any:
        """Rows need no decoding: the row as it is."""
        return raw


class SqliteReader(RangeReader):
    """Ranges of an SQLite file, each read with its own read-only ``sqlite3`` connection."""

    driver = SqliteDriver()

    def __init__(self, path: str, row: RowType, batch_size: int) -> None:
        super().__init__(path, row, batch_size)
        self.uri = pathlib.Path(path).resolve().as_uri() + "?mode=ro"

    def connect(self) -> Any:
        """See `RangeReader.connect`."""
        try:
            return sqlite3.connect(self.uri, uri=True)
        except sqlite3.Error as exc:
            raise FileNotFoundError(
                f"{self.name}: cannot open as an SQLite database ({exc})"
            ) from exc


class PostgresReader(RangeReader):
    """Ranges of a PostgreSQL query, each read by a psycopg server-side cursor of its own."""

    driver = PsycopgDriver()

    def __init__(self, dsn: str, name: str, row: RowType, batch_size: int) -> None:
        super().__init__(name, row, batch_size)
        self.dsn = dsn

    def connect(self) -> Any:
        """See `RangeReader.connect`: a new connection, in a transaction once used."""
        return importlib.import_module("psycopg").connect(self.dsn)

    def execute(self, connection: Any, sql: str, params: Params) -> Any:
        """See `RangeReader.execute`: a named (server-side) cursor, binary results."""
        cursor = connection.cursor("aiomr_range", binary=True)
        cursor.execute(sql, params or None)
        return cursor

    def explain(self, connection: Any, sql: str, params: Params) -> None:
        """See `RangeReader.explain`; with no parameters, a ``%`` in the query is itself."""
        connection.execute(f"EXPLAIN {sql}", self.bind(params)).close()

    def bind(self, params: Params) -> Any:
        """See `RangeReader.bind`: no parameters, ``None``, so a ``%`` stays a ``%``."""
        return params or None

    def restrict(
        self, connection: Any, sql: str, params: Params, split: RangeSplit | PageSplit
    ) -> list[QueryRange]:
        """See `RangeReader.restrict`; a `PageSplit` reads the table's size and puts each
        range's condition at ``{pages}``."""
        if isinstance(split, PageSplit):
            size = connection.execute(
                "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int",
                (split.table,),
            ).fetchone()[0]
            ranges = [
                QueryRange(i, sql.replace(PAGES, condition), params, label)
                for i, (condition, label) in enumerate(split.ranges(int(size)))
            ]
        else:
            ranges = super().restrict(connection, sql, params, split)
        # psycopg quotes the values as the server would read them: the literal query
        # means the same as the query with its parameters bound.
        client = importlib.import_module("psycopg").ClientCursor(connection)
        return [
            dataclasses.replace(r, literal=client.mogrify(r.sql, self.bind(r.params)))
            for r in ranges
        ]

    def arrow_reader(self) -> PostgresArrowReader:
        """See `RangeReader.arrow_reader`: ADBC's PostgreSQL driver, which must be
        installed. Checked here, in the caller, before any work, without importing it: the
        import takes a quarter of a second, which only the workers pay."""
        check_installed("adbc_driver_postgresql", "postgres_ranges with mode='batches'")
        conninfo: Any = importlib.import_module("psycopg.conninfo")
        uri = _as_uri(conninfo.conninfo_to_dict(self.dsn))
        return PostgresArrowReader(uri, self.name, self.batch_size)


def _as_uri(parts: dict[str, Any]) -> str:
    """A libpq URI for connection parameters (ADBC takes URIs, libpq strings are common)."""
    user = quote(str(parts.pop("user", "")), safe="")
    password = parts.pop("password", None)
    if password is not None:
        user = f"{user}:{quote(str(password), safe='')}"
    host = str(parts.pop("host", ""))
    port = parts.pop("port", None)
    where = quote(host, safe="") + (f":{port}" if port else "")
    dbname = quote(str(parts.pop("dbname", "")), safe="")
    query = urlencode({key: str(value) for key, value in parts.items()})
    return f"postgresql://{user}{'@' if user else ''}{where}/{dbname}" + (
        f"?{query}" if query else ""
    )


class PostgresArrowReader:
    """Read a PostgreSQL range as Arrow record batches in a worker, with the ADBC driver
    (the rows arrive in PostgreSQL's binary COPY format and are decoded into columns in C:
    no Python object per value)."""

    def __init__(self, uri: str, name: str, batch_size: int) -> None:
        self.uri = uri
        self.name = name
        self.batch_size = batch_size

    def batches(self, split: QueryRange, skipped: list[Any] | None = None) -> Iterator[Any]:
        """The range's rows as ``pyarrow.RecordBatch`` es of 1 to ``batch_size`` rows.
        Typed rows always parse: ``skipped`` (``on_error``) stays empty."""
        dbapi: Any = _adbc()
        with dbapi.connect(self.uri) as connection, connection.cursor() as cursor:
            try:
                # Planned ranges of PostgreSQL always carry their literal query.
                cursor.execute(split.literal)
            except Exception as exc:
                exc.add_note(f"aiomr: reading {split.label} of {self.name}")
                raise
            for batch in cursor.fetch_record_batch():
                for start in range(0, batch.num_rows, self.batch_size):
                    yield batch.slice(start, self.batch_size)


def _adbc() -> Any:
    return require("adbc_driver_postgresql.dbapi", "postgres_ranges with mode='batches'")
