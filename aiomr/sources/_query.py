"""The rows of a database query as a source: `query` and `QuerySource`.

::

    query(db, sql) ──► QuerySource ── aiter() ──► RowIterator ──► one row at a time (the job)
                                                     │ the next batch is fetched ahead
                                                     ▼
                         one cursor ◄──── batches ────► range split (`aiomr._db.range_reader`)
                         open_connection                a task per range, at most
                         driver.read                    max_connections at once:
                         (a transaction,                open_connection, restrict,
                          a server-side cursor)         driver.read ─► bounded queue

Rows come in batches of ``batch_size`` (one round trip each) and leave one by one, as plain
tuples or dicts that pickle, or a batch at a time to a job (`QuerySource.open_batches`,
`RowIterator.take`).
With ``transfer="copy"`` the batches are blocks of ``COPY`` text that only the workers decode
(`aiomr._db.copy_text`). A failure names the query and the row where it happened; the
position of a row is the one the chunker gives it too, so a skipped row and a failed read say
``row N of the query`` alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any, Generic, Literal, TypeVar, overload

from .._db.connect import Target, note_lost, open_connection, resolve
from .._db.driver import Bounds, Params, RowType, Transfer, check_read, pack_params
from .._db.range_reader import read_ranges
from .._db.range_splits import RangeSplit
from .._db.rows import RowIterator
from ._source import BatchReader, Source

__all__ = ["DEFAULT_BATCH_SIZE", "QuerySource", "query"]

DEFAULT_BATCH_SIZE = 1_000
"""Rows per fetch. The next batch is fetched while this one is handed out, so round trips
mostly overlap with the caller's work; small batches let the driver's row objects die young,
before the garbage collector promotes them to its oldest generation, and keep memory low."""

Row = TypeVar("Row")


class QuerySource(Source, Generic[Row]):
    """The rows of a query, as an async iterable (see `query`).

    Each iteration runs the query anew; an iteration that is closed early (``aclose()``,
    the end of a job, cancellation) closes its cursors, ends its transactions and gives
    back its connections before ``aclose()`` returns.
    """

    record_noun = ("row", "the query")
    """How job messages name this source's records: ``row 1234 of the query``."""

    def __init__(
        self,
        target: Target,
        sql: str,
        params: Params,
        *,
        batch_size: int,
        row: RowType,
        split: RangeSplit | None,
        transfer: Transfer = "rows",
    ) -> None:
        self.sql = sql
        """The query."""
        self.params = params
        """Its parameters: positional values or one mapping."""
        self.batch_size = batch_size
        """Rows per fetch."""
        self.row: RowType = row
        """What each row becomes: ``"tuple"`` or ``"dict"``."""
        self.split = split
        """How the query is read in ranges, or ``None`` for one cursor."""
        self.transfer: Transfer = transfer
        """``"rows"`` (decoded by the driver) or ``"copy"`` (``COPY`` text, decoded by
        the workers)."""
        self._target = target

    def __repr__(self) -> str:
        if self.transfer == "copy":
            return f"QuerySource({_short(self.sql)!r}, transfer='copy')"
        return f"QuerySource({_short(self.sql)!r}, batch_size={self.batch_size})"

    def __aiter__(self) -> RowIterator[Row]:
        """Start reading: run the query and return an iterator over its rows.

        The iterator has an ``aclose()`` method: call it (or use `contextlib.aclosing`) to
        stop early; jobs call it themselves.
        """
        return RowIterator(self._batches(), self._describe)

    def open_batches(self) -> BatchReader:
        """Start a job's reading: run the query anew, and hand its rows over in batches."""
        return self.__aiter__().open_batches()

    def _batches(self) -> AsyncGenerator[Any, None]:
        split = self.split
        if split is None:
            return self._one_cursor()
        if split.reads_bounds:
            return self._after_bounds(split)
        return self._ranges(split, split.plan())

    def _ranges(self, split: RangeSplit, ranges: list[Bounds]) -> AsyncGenerator[Any, None]:
        if len(ranges) == 1:  # one range holds every row: the query as it is
            return self._one_cursor()
        return read_ranges(
            self._target,
            self.sql,
            self.params,
            split,
            ranges,
            batch_size=self.batch_size,
            row=self.row,
            transfer=self.transfer,
        )

    async def _after_bounds(self, split: RangeSplit) -> AsyncGenerator[Any, None]:
        """Read the column's MIN and MAX, then the ranges planned between them."""
        async with open_connection(self._target) as (driver, connection):
            driver.check_params(self.params)
            try:
                low, high = await driver.column_bounds(
                    connection, self.sql, self.params, split.column
                )
            except Exception as exc:
                note_lost(exc, driver, connection)
                exc.add_note(f"aiomr: reading the MIN and MAX of {split.column} for a range split")
                raise
        async with contextlib.aclosing(self._ranges(split, split.plan_from(low, high))) as batches:
            async for batch in batches:
                yield batch

    async def _one_cursor(self) -> AsyncGenerator[Any, None]:
        async with open_connection(self._target) as (driver, connection):
            driver.check_params(self.params)
            read = driver.stream(
                connection,
                self.sql,
                self.params,
                batch_size=self.batch_size,
                row=self.row,
                transfer=self.transfer,
            )
            try:
                async with contextlib.aclosing(read) as batches:
                    async for batch in batches:
                        yield batch
            except Exception as exc:
                note_lost(exc, driver, connection)
                raise

    def _describe(self) -> str:
        driver = self._target.driver
        through = f" through {driver.name}" if driver is not None else ""
        return f"the query {_short(self.sql)!r}{through}"


def _short(sql: str, limit: int = 120) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@overload
def query(
    db: object,
    sql: str,
    *params: Any,
    batch_size: int = ...,
    row: Literal["tuple"] = ...,
    split: RangeSplit | None = ...,
    transfer: Transfer = ...,
) -> QuerySource[tuple[Any, ...]]: ...


@overload
def query(
    db: object,
    sql: str,
    *params: Any,
    batch_size: int = ...,
    row: Literal["dict"],
    split: RangeSplit | None = ...,
    transfer: Transfer = ...,
) -> QuerySource[dict[str, Any]]: ...


def query(
    db: object,
    sql: str,
    *params: Any,
    batch_size: int = DEFAULT_BATCH_SIZE,
    row: RowType = "tuple",
    split: RangeSplit | None = None,
    transfer: Transfer = "rows",
) -> QuerySource[Any]:
    """Stream the rows of a query, in batches, as records that travel to worker processes.

    ```python
    import datetime
    import operator

    import asyncpg

    import aiomr


    async def main() -> None:
        since = datetime.date(2024, 1, 1)
        async with asyncpg.create_pool("postgresql://localhost/shop") as pool:
            sql = "SELECT store, amount FROM sales WHERE day >= $1"
            source = aiomr.sources.query(pool, sql, since)
            totals = await aiomr.map_reduce_by_key(source, lambda row: [row], operator.add)
        print(totals)


    if __name__ == "__main__":
        aiomr.run(main())
    ```

    The adapter is chosen from ``db``: asyncpg (server-side cursor, ``fetch(batch_size)``,
    in the transaction asyncpg requires), psycopg 3 (a named server-side cursor), aiosqlite
    (``fetchmany``) or SQLAlchemy's asyncio extension (``stream()`` with ``yield_per``).
    No driver is imported by aiomr itself.

    Args:
        db: a connection (used as it is, never closed), a pool or an engine (a connection
            is borrowed for the read), or a function that opens a connection (called for
            each connection needed, which is closed afterwards).
        sql: the query.
        params: its parameters, in the driver's own style: positional values (asyncpg
            ``$1``, psycopg ``%s``, SQLite ``?``) or one mapping (psycopg ``%(name)s``,
            SQLite and SQLAlchemy ``:name``).
        batch_size: rows per fetch.
        row: ``"tuple"`` (the default) makes each row a tuple of its values, in column
            order; ``"dict"`` a dict from column name to value.
        split: read the query as ranges of a column over several connections at once
            (`RangeSplit`); needs a pool, an engine or a connection factory.
        transfer: ``"rows"`` (the default) has the driver decode the rows in the caller;
            ``"copy"`` (asyncpg only) runs ``COPY (sql) TO STDOUT`` and sends the text to the
            workers, which decode it into the same tuples or dicts: the caller builds no
            row. Refuses, before the first row, column types it cannot decode exactly.

    Returns:
        A `QuerySource`: an async iterable of rows, and a job source whose errors say
        ``row N of the query``. Rows are numbered from 0 in the order they are read.

    Raises:
        TypeError, ValueError: for an unknown ``db`` or bad arguments, at once. Errors of
            the database reach the caller as the driver raised them, with a note naming the
            query and the row (and, for a range split, the range).

    Cancellation: closing the iteration, or cancelling the job reading it, closes the
    cursors and rolls back their transactions; borrowed connections go back to their pool
    and opened ones are closed.
    """
    check_read(sql, row, batch_size)
    if transfer not in ("rows", "copy"):
        raise ValueError(f"transfer must be 'rows' or 'copy', got {transfer!r}")
    if split is not None and not isinstance(split, RangeSplit):
        raise TypeError(f"split must be an aiomr.sources.RangeSplit, got {split!r}")
    target = resolve(db, "aiomr.sources.query()")
    packed = pack_params(params)
    if target.driver is not None:
        target.driver.check_params(packed)
        if transfer == "copy" and not target.driver.copies:
            raise TypeError(
                f"transfer='copy' reads with PostgreSQL's COPY through asyncpg; "
                f"{target.driver.name} reads rows only (transfer='rows')"
            )
    if split is not None and not target.parallel:
        raise ValueError(
            "a range split reads over several connections at once: pass a pool, an engine "
            "or a function that opens a connection, not a single connection"
        )
    return QuerySource(
        target, sql, packed, batch_size=batch_size, row=row, split=split, transfer=transfer
    )
