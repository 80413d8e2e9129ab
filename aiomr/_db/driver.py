"""What aiomr needs from a database driver, and the pieces every driver shares.

A `Driver` knows one library's objects: which are connections and which hand connections
out (pools, engines), how to stream a query's rows in batches inside the transaction its
cursors need, how to restrict a query to one range of a column, and how to write rows in
one transaction. Drivers never import their library at module level: an object's type tells
which library made it, and that library is then already imported.
"""

from __future__ import annotations

import abc
import contextlib
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeAlias

__all__ = [
    "Bounds",
    "Driver",
    "Kind",
    "Params",
    "RowType",
    "Table",
    "Transfer",
    "bounds_query",
    "check_identifier",
    "check_read",
    "pack_params",
    "quote_identifier",
    "range_query",
]

RowType: TypeAlias = Literal["tuple", "dict"]
"""What a row becomes: a `tuple` of its values, or a `dict` from column name to value."""

Transfer: TypeAlias = Literal["rows", "copy"]
"""How rows reach the caller: decoded by the driver, or as ``COPY`` text for the workers."""

Kind: TypeAlias = Literal["connection", "pool"]
"""A connection reads itself; a pool (or an engine) hands out connections."""

Params: TypeAlias = tuple[Any, ...] | Mapping[str, Any]
"""Query parameters: positional values, or one mapping of named ones."""

_IDENTIFIER = re.compile(r'[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+"')


def check_identifier(what: str, name: str) -> str:
    """Return ``name`` if it is a plain or double-quoted SQL identifier, else raise."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"{what} must be a column name (a plain or double-quoted identifier)")
    return name


def check_read(sql: object, row: object, batch_size: object) -> None:
    """Raise for a bad query text, row type or batch size, the arguments every read takes."""
    if not isinstance(sql, str):
        raise TypeError(f"sql must be a str, got {type(sql).__qualname__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be an int, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if row not in ("tuple", "dict"):
        raise ValueError(f"row must be 'tuple' or 'dict', got {row!r}")


def pack_params(params: tuple[Any, ...]) -> Params:
    """The query parameters as a driver takes them: the values, or the one mapping given."""
    if len(params) == 1 and isinstance(params[0], Mapping):
        return params[0]
    return params


def quote_identifier(name: str) -> str:
    """Quote ``name`` for SQL, so it is taken literally (case and all)."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class Bounds:
    """One range of a split read: ``lower <= column < upper``; ``None`` leaves a side open."""

    index: int
    """Position of the range among the split's ranges, from 0."""
    lower: Any | None
    upper: Any | None
    nulls: bool
    """Whether the rows where the column is NULL belong to this range."""

    def where(self, column: str, mark: Callable[[Any], str]) -> str:
        """The condition selecting this range; ``mark`` turns a bound into SQL text."""
        parts = []
        if self.lower is not None:
            parts.append(f"{column} >= {mark(self.lower)}")
        if self.upper is not None:
            parts.append(f"{column} < {mark(self.upper)}")
        condition = " AND ".join(parts) or "1 = 1"
        if self.nulls:
            condition = f"({condition}) OR {column} IS NULL" if parts else "1 = 1"
        return condition

    def describe(self, column: str) -> str:
        """Name the range for messages: ``range 2 (id >= 100 and < 200)``."""
        parts = []
        if self.lower is not None:
            parts.append(f">= {_show(self.lower)}")
        if self.upper is not None:
            parts.append(f"< {_show(self.upper)}")
        text = f"{column} {' and '.join(parts)}" if parts else "all rows"
        if self.nulls and parts:
            text += ", or NULL"
        return f"range {self.index} ({text})"


def _show(value: Any) -> str:
    """A bound as people write it: ``100``, ``2.5``, ``2024-05-01``, ``0.25`` (a Decimal)."""
    if isinstance(value, int | float):
        return repr(value)
    return str(value)


def range_query(sql: str, column: str, bounds: Bounds, mark: Callable[[Any], str]) -> str:
    """Wrap ``sql`` so that it returns only the rows of ``bounds``."""
    body = sql.strip().rstrip(";")
    return f"SELECT * FROM ({body}) AS aiomr_range WHERE {bounds.where(column, mark)}"


def bounds_query(sql: str, column: str) -> str:
    """Wrap ``sql`` so that it returns one row: the ``MIN`` and ``MAX`` of ``column``.

    The query's own parameters keep their places: nothing is added to them.
    """
    body = sql.strip().rstrip(";")
    return f"SELECT MIN({column}), MAX({column}) FROM ({body}) AS aiomr_bounds"


@dataclass(frozen=True, slots=True)
class Table:
    """Where a sink writes: a table, its schema if any, and the columns in row order."""

    name: str
    schema: str | None
    columns: tuple[str, ...]

    def qualified(self) -> str:
        """The quoted ``schema.table`` (or ``table``)."""
        name = quote_identifier(self.name)
        return name if self.schema is None else f"{quote_identifier(self.schema)}.{name}"


class Driver(abc.ABC):
    """How aiomr talks to one database library."""

    name: ClassVar[str]
    """The library, for messages (``"asyncpg"``)."""
    modules: ClassVar[frozenset[str]]
    """Top-level modules whose objects this driver handles."""
    copies: ClassVar[bool] = False
    """Whether `read_copy` can read a query as ``COPY`` text."""

    @abc.abstractmethod
    def kind_of(self, target: object) -> Kind | None:
        """Say whether ``target`` is a connection, a pool (or engine), or neither."""

    @abc.abstractmethod
    def acquire(self, pool: Any) -> AbstractAsyncContextManager[Any]:
        """Borrow a connection from ``pool`` for the duration of the context."""

    async def close(self, connection: Any) -> None:
        """Close a connection aiomr opened itself (from a connection factory)."""
        await connection.close()

    def is_lost(self, connection: Any) -> bool:
        """Whether ``connection`` is closed or broken, so an error means the link was lost."""
        return False

    def check_params(self, params: Params) -> None:
        """Raise `TypeError` if the driver cannot take ``params`` in this form."""
        if not isinstance(params, tuple | Mapping):
            raise TypeError(f"query parameters must be values or one mapping, got {params!r}")

    @abc.abstractmethod
    def read(
        self, connection: Any, sql: str, params: Params, *, batch_size: int, row: RowType
    ) -> AsyncGenerator[list[Any], None]:
        """Stream the query's rows in lists of at most ``batch_size``, converted to ``row``.

        The cursor lives in a transaction (a savepoint inside one already open) that ends
        when the iterator does: committed at the end, rolled back on error and on
        ``aclose()``; either way the cursor is closed.
        """

    def read_copy(
        self, connection: Any, sql: str, params: Params, *, row: RowType
    ) -> AsyncGenerator[Any, None]:
        """Stream the query's rows as blocks of ``COPY`` text (`CopyRows`), if the driver can."""
        raise TypeError(
            f"transfer='copy' reads with PostgreSQL's COPY through asyncpg; {self.name} "
            f"connections read rows only (transfer='rows')"
        )

    def stream(
        self,
        connection: Any,
        sql: str,
        params: Params,
        *,
        batch_size: int,
        row: RowType,
        transfer: Transfer,
    ) -> AsyncGenerator[Any, None]:
        """Read the query the way ``transfer`` says: `read` or `read_copy`."""
        if transfer == "copy":
            return self.read_copy(connection, sql, params, row=row)
        return self.read(connection, sql, params, batch_size=batch_size, row=row)

    async def column_bounds(
        self, connection: Any, sql: str, params: Params, column: str
    ) -> tuple[Any, Any]:
        """Return the ``MIN`` and ``MAX`` of ``column`` over the query, read as `read` reads."""
        read = self.read(connection, bounds_query(sql, column), params, batch_size=1, row="tuple")
        rows = []
        async with contextlib.aclosing(read) as batches:
            async for batch in batches:
                rows.extend(batch)
        if len(rows) != 1 or len(rows[0]) != 2:
            raise ValueError(f"the MIN and MAX of {column} came back as {rows!r}, not one pair")
        return rows[0][0], rows[0][1]

    @abc.abstractmethod
    def restrict(
        self, connection: Any, sql: str, params: Params, column: str, bounds: Bounds
    ) -> tuple[str, Params]:
        """Return the query and parameters that read only the rows of ``bounds``."""

    @abc.abstractmethod
    async def write(
        self, connection: Any, table: Table, rows: AsyncIterator[Sequence[Any]], batch_size: int
    ) -> None:
        """Write every row in one transaction (a savepoint inside one already open)."""
