"""An SQLite database file read by the workers themselves, one range of a column per task.

::

    sqlite_ranges(path, sql, split=RangeSplit(...)) ──► SqliteRangeSource
        caller: check the file and the query, plan the ranges (RangeSplit.plan),
                send each task one SqliteRange: the restricted query and its bounds
        worker: open the file read-only with the standard library's sqlite3,
                run the range's query, fetch its rows in batches, map them there

The rows never pass through the caller: it neither decodes nor pickles them, so reading
scales with the workers instead of stopping at what one cursor in the caller delivers.
SQLite allows any number of readers at once; each range runs in a read transaction of its
own, so the ranges do not share one snapshot (as with `RangeSplit` over a pool).
"""

from __future__ import annotations

import itertools
import os
import pathlib
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ._db_driver import Params, RowType
from ._db_ranges import RangeSplit
from ._db_sqlite import SqliteDriver
from ._splits import SplitSource

__all__ = ["SqliteRange", "SqliteRangeReader", "SqliteRangeSource", "sqlite_ranges"]

DEFAULT_BATCH_SIZE = 10_000
"""Rows per ``fetchmany`` in a worker: no round trip to save, so only memory bounds it
(some 1 MB of small rows); a key-value job combines each batch as one block."""


@dataclass(frozen=True, slots=True)
class SqliteRange:
    """One task of an `SqliteRangeSource`: a range's query, and how to name it."""

    index: int
    sql: str
    params: Params
    label: str
    """``range 2 (id >= 500001 and < 750001)``."""

    @property
    def size(self) -> int:
        """Bytes covered: unknown for a range of rows."""
        return 0

    def describe(self) -> str:
        """Name the range for messages."""
        return self.label


class _RangePlan:
    """The ranges, handed out one per task, in column order."""

    total = None

    def __init__(self, ranges: list[SqliteRange]) -> None:
        self._ranges = iter(ranges)

    def cut(self, size: int) -> SqliteRange | None:
        return next(self._ranges, None)


class SqliteRangeReader:
    """Read the rows of one range in a worker (see `aiomr.sources.SplitReading`)."""

    def __init__(self, uri: str, path: str, row: RowType, batch_size: int) -> None:
        self.uri = uri
        self.path = path
        self.row: RowType = row
        self.batch_size = batch_size

    def line_blocks(self, split: SqliteRange) -> Iterator[list[Any]]:
        """The range's rows, ``batch_size`` at a time, as tuples or dicts."""
        connection = sqlite3.connect(self.uri, uri=True)
        try:
            try:
                cursor = connection.execute(split.sql, split.params)
            except sqlite3.Error as exc:
                exc.add_note(f"aiomr: reading {split.label} of {self.path}")
                raise
            names = [column[0] for column in cursor.description or ()]
            size = self.batch_size
            dicts = self.row == "dict"
            while batch := cursor.fetchmany(size):
                yield (
                    [dict(zip(names, values, strict=True)) for values in batch] if dicts else batch
                )
        finally:
            connection.close()

    def records(self, split: SqliteRange) -> Iterator[Any]:
        """The range's rows one by one."""
        return itertools.chain.from_iterable(self.line_blocks(split))

    def blocks(self, split: SqliteRange) -> Iterator[list[Any]]:
        """What a ``mode="blocks"`` mapper gets: the lists of rows of `line_blocks`."""
        return self.line_blocks(split)

    @staticmethod
    def records_in_block(block: list[Any]) -> int:
        """The rows in one block."""
        return len(block)

    def located_lines(self, split: SqliteRange) -> Iterator[tuple[str, int, Any]]:
        """Each row with its range and its position there, from 0."""
        for position, row in enumerate(self.records(split)):
            yield split.label, position, row

    def where(self, place: str, offset: int) -> str:
        """Name a row: ``sales.db: row 17 of range 2 (id >= 500001 and < 750001)``."""
        return f"{self.path}: row {offset} of {place}"

    @staticmethod
    def decode_and_parse(raw: Any) -> Any:
        """Rows need no decoding: the row as it is."""
        return raw


class SqliteRangeSource(SplitSource):
    """An SQLite database file read by the workers, a range of a column per task (see
    `sqlite_ranges`)."""

    record_noun = ("row", "the query")

    def __init__(
        self,
        path: str,
        sql: str,
        params: Params,
        split: RangeSplit,
        *,
        row: RowType,
        batch_size: int,
    ) -> None:
        self.path = path
        """The database file."""
        self.sql = sql
        """The query."""
        self.params = params
        """Its parameters: positional values or one mapping."""
        self.split = split
        """How the query is cut into ranges."""
        uri = pathlib.Path(path).resolve().as_uri() + "?mode=ro"
        self.reader: SqliteRangeReader = SqliteRangeReader(uri, path, row, batch_size)

    def __repr__(self) -> str:
        return f"SqliteRangeSource({self.path!r}, {self.sql!r}, split={self.split!r})"

    def ranges(self) -> list[SqliteRange]:
        """The tasks: each range's query and parameters, in column order."""
        driver = SqliteDriver()
        ranges = []
        for bounds in self.split.plan():
            text, values = driver.restrict(None, self.sql, self.params, self.split.column, bounds)
            ranges.append(
                SqliteRange(bounds.index, text, values, bounds.describe(self.split.column))
            )
        return ranges

    def cutter(self, workers: int) -> tuple[_RangePlan, int]:
        """Check the file and the query (blocking), then plan the ranges."""
        ranges = self.ranges()
        try:
            connection = sqlite3.connect(self.reader.uri, uri=True)
        except sqlite3.Error as exc:
            raise FileNotFoundError(
                f"{self.path}: cannot open as an SQLite database ({exc})"
            ) from exc
        try:
            # Compiling the first range's query finds a missing table or column, or a
            # file that is no database, before any worker starts on it.
            connection.execute(f"EXPLAIN {ranges[0].sql}", ranges[0].params).fetchone()
        except sqlite3.Error as exc:
            exc.add_note(f"aiomr: the query {self.sql!r} on {self.path}")
            raise
        finally:
            connection.close()
        return _RangePlan(ranges), 0


def sqlite_ranges(
    path: str | os.PathLike[str],
    sql: str,
    *params: Any,
    split: RangeSplit,
    row: RowType = "tuple",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> SqliteRangeSource:
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
        A `SqliteRangeSource`, for the job functions (not an async iterable: its rows exist
        only in the workers).

    Raises:
        TypeError, ValueError: bad arguments; FileNotFoundError: no such file (both at
            once). When the job starts: `sqlite3.Error`, with a note naming the query and
            the file, for a query SQLite refuses or a file that is no database. An error
            while a range is read names the range.
    """
    if not isinstance(sql, str):
        raise TypeError(f"sql must be a str, got {type(sql).__qualname__}")
    if not isinstance(split, RangeSplit):
        raise TypeError(f"split must be an aiomr.sources.RangeSplit, got {split!r}")
    if row not in ("tuple", "dict"):
        raise ValueError(f"row must be 'tuple' or 'dict', got {row!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be an int, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    name = os.fspath(path)
    if not isinstance(name, str):
        raise TypeError(f"path must be a str or os.PathLike[str], got {path!r}")
    if not os.path.isfile(name):
        raise FileNotFoundError(f"{name}: no such SQLite database file")
    packed: Params = params
    if len(params) == 1 and isinstance(params[0], Mapping):
        packed = params[0]
    SqliteDriver().check_params(packed)
    return SqliteRangeSource(name, sql, packed, split, row=row, batch_size=batch_size)
