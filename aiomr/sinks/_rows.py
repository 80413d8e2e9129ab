"""``write_rows``: rows into a table in one transaction, by the fastest path a driver has."""

from __future__ import annotations

import contextlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Iterable,
    Mapping,
    Sequence,
)
from typing import Any

from .._db.connect import open_connection, resolve
from .._db.driver import Table

__all__ = ["DEFAULT_WRITE_BATCH_SIZE", "write_rows"]

DEFAULT_WRITE_BATCH_SIZE = 1_000
"""Rows per ``executemany`` (aiosqlite, SQLAlchemy): large enough that the per-call cost is
noise, small enough that a batch in flight costs little memory. COPY streams row by row."""

RowsLike = (
    Mapping[Any, Any]
    | Iterable[Sequence[Any] | Mapping[str, Any]]
    | AsyncIterable[Sequence[Any] | Mapping[str, Any]]
)


async def write_rows(
    db: object,
    table: str,
    rows: RowsLike,
    *,
    columns: Sequence[str],
    schema: str | None = None,
    batch_size: int = DEFAULT_WRITE_BATCH_SIZE,
) -> int:
    """Write ``rows`` into ``table`` in one transaction; return how many were written.

    ```python
    import operator

    import asyncpg

    import aiomr


    async def main() -> None:
        async with asyncpg.create_pool("postgresql://localhost/shop") as pool:
            source = aiomr.sources.query(pool, "SELECT store, amount FROM sales")
            totals = await aiomr.map_reduce_by_key(source, lambda row: [row], operator.add)
            columns = ("store", "total")
            await aiomr.sinks.write_rows(pool, "store_totals", totals, columns=columns)


    if __name__ == "__main__":
        aiomr.run(main())
    ```

    asyncpg writes with one binary ``COPY`` (``copy_records_to_table``), psycopg with
    ``COPY ... FROM STDIN``, aiosqlite and SQLAlchemy with ``executemany`` of ``batch_size``
    rows. Rows stream into the database as they come: an async iterable is not read ahead.

    All or nothing: the rows are written in one transaction, committed once the last row is
    in. If anything fails first (a bad row, the database, an exception raised by ``rows``
    itself, cancellation), it is rolled back and the table is left as it was. On a connection
    already inside a transaction, the write is a savepoint within it, and the rows last only
    if that transaction commits.

    Args:
        db: a connection, pool, engine or connection factory, as for `aiomr.sources.query`.
        table: the table's name, taken literally (it is quoted: case matters).
        rows: tuples or lists of values in the order of ``columns``, or mappings from
            column name to value; or a mapping such as a job's ``{key: value}`` result,
            written as ``(key, value)`` rows; plain or async iterables (the pairs of
            `aiomr.open_by_key` too).
        columns: the table's columns the rows fill, in order (quoted like ``table``).
        schema: the table's schema, if not the connection's default.
        batch_size: rows per ``executemany``.

    Returns:
        The number of rows written.

    Raises:
        ValueError: a row whose number of values differs from ``columns``, naming the row.
        TypeError: a row that is neither a sequence nor a mapping.

    Cancellation: cancelling the call rolls the transaction back; nothing is written.
    """
    if not isinstance(table, str) or not table:
        raise TypeError(f"table must be a non-empty str, got {table!r}")
    if schema is not None and (not isinstance(schema, str) or not schema):
        raise TypeError(f"schema must be a non-empty str or None, got {schema!r}")
    if isinstance(columns, str) or not all(isinstance(c, str) and c for c in columns):
        raise TypeError(f"columns must be a sequence of column names, got {columns!r}")
    if not columns:
        raise ValueError("columns must name at least one column")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be an int, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if not isinstance(rows, Mapping | Iterable | AsyncIterable):
        raise TypeError(f"rows must be iterable, got {type(rows).__qualname__}")
    target = resolve(db, "aiomr.sinks.write_rows()")
    spec = Table(table, schema, tuple(columns))
    written = 0

    async def shaped() -> AsyncGenerator[tuple[Any, ...], None]:
        nonlocal written
        async for item in _items(rows):
            yield _shape(item, spec.columns, written)
            written += 1

    async with (
        open_connection(target) as (driver, connection),
        contextlib.aclosing(shaped()) as values,
    ):
        await driver.write(connection, spec, values, batch_size)
    return written


async def _items(rows: RowsLike) -> AsyncIterator[Any]:
    if isinstance(rows, Mapping):
        for pair in rows.items():
            yield pair
    elif isinstance(rows, AsyncIterable):
        async for item in rows:
            yield item
    else:
        for item in rows:
            yield item


def _shape(item: Any, columns: tuple[str, ...], index: int) -> tuple[Any, ...]:
    """Turn one row into a tuple of values in column order, or say what is wrong with it."""
    if isinstance(item, Mapping):
        missing = [name for name in columns if name not in item]
        if missing:
            raise ValueError(f"row {index} has no value for column {missing[0]!r}: {item!r}")
        return tuple(item[name] for name in columns)
    if not isinstance(item, tuple | list):
        raise TypeError(f"row {index} is a {type(item).__qualname__}, not a tuple, list or dict")
    if len(item) != len(columns):
        raise ValueError(f"row {index} has {len(item)} values for {len(columns)} columns")
    return tuple(item)
