"""Tell which driver made an object, and get connections from it for as long as needed.

What callers pass, and what a connection costs:

* a connection: used as it is, never closed (it is the caller's);
* a pool or an engine: a connection is borrowed and given back;
* a function that opens a connection (``functools.partial(asyncpg.connect, dsn)``,
  ``lambda: aiosqlite.connect(path)``): called, awaited if it returns an awaitable, and the
  connection it made is closed afterwards.

A type is recognised by the module that defined it (or one of its bases), so no driver is
ever imported here: an object of a driver's type means the driver is imported already.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from .asyncpg_driver import AsyncpgDriver
from .cleanup import first_error_wins
from .driver import Driver, Kind
from .psycopg_driver import PsycopgDriver
from .sqlalchemy_driver import SqlAlchemyDriver
from .sqlite_driver import SqliteDriver

__all__ = [
    "DRIVERS",
    "SUPPORTED",
    "Target",
    "driver_for",
    "note_lost",
    "open_connection",
    "resolve",
]

DRIVERS: tuple[Driver, ...] = (
    AsyncpgDriver(),
    PsycopgDriver(),
    SqliteDriver(),
    SqlAlchemyDriver(),
)

SUPPORTED = (
    "an asyncpg Connection or Pool, a psycopg AsyncConnection or AsyncConnectionPool, "
    "an aiosqlite Connection, a SQLAlchemy AsyncConnection or AsyncEngine, "
    "or a function that opens one of those connections"
)


@dataclass(frozen=True, slots=True)
class Target:
    """Where connections come from: one connection, a pool or engine, or a factory."""

    value: Any
    kind: Kind | Literal["factory"]
    driver: Driver | None
    """``None`` for a factory: known once it has opened a connection."""

    @property
    def parallel(self) -> bool:
        """Whether several connections can be open at once."""
        return self.kind != "connection"


def driver_for(value: object) -> tuple[Driver, Kind] | None:
    """Return the driver that handles ``value`` and what it is, or ``None``."""
    roots = {cls.__module__.partition(".")[0] for cls in type(value).__mro__}
    for driver in DRIVERS:
        if roots & driver.modules:
            kind = driver.kind_of(value)
            if kind is not None:
                return driver, kind
    return None


def resolve(value: object, what: str) -> Target:
    """Recognise ``value``; raise `TypeError` naming ``what`` needed it if it is unknown."""
    found = driver_for(value)
    if found is not None:
        return Target(value, found[1], found[0])
    if callable(value):
        return Target(value, "factory", None)
    raise TypeError(f"{what} needs {SUPPORTED}; got {type(value).__qualname__}")


def note_lost(exc: BaseException, driver: Driver, connection: Any) -> None:
    """Say so on ``exc`` if it came with the loss of the connection.

    A driver's own message for a dropped connection can be obscure (asyncpg may report an
    internal state error when the server ended the session between two fetches).
    """
    try:
        lost = driver.is_lost(connection)
    except Exception:  # asking must never hide the error itself
        lost = False
    if lost:
        exc.add_note(f"aiomr: the {driver.name} connection was lost (its session is closed)")


@asynccontextmanager
async def open_connection(target: Target) -> AsyncIterator[tuple[Driver, Any]]:
    """Yield ``(driver, connection)`` from ``target``, giving back what was borrowed.

    Cancellation: a borrowed connection goes back to its pool and an opened one is closed.
    """
    if target.kind == "connection":
        assert target.driver is not None
        yield target.driver, target.value
    elif target.kind == "pool":
        assert target.driver is not None
        task = asyncio.current_task()
        requested = task.cancelling() if task is not None else 0
        async with first_error_wins(target.driver.acquire(target.value)) as connection:
            if task is not None and task.cancelling() > requested:
                # The pool's wait for a free connection dropped a cancellation: on Python
                # 3.11, asyncio.wait_for does when its wait completes at the same moment
                # (CPython gh-86296), and psycopg_pool waits with it. Honour it here, before
                # a row is read or written.
                raise asyncio.CancelledError
            yield target.driver, connection
    else:
        made = target.value()
        if inspect.isawaitable(made):
            made = await made
        found = driver_for(made)
        if found is None or found[1] != "connection":
            raise TypeError(
                f"the connection factory returned {type(made).__qualname__}, not a "
                f"connection of asyncpg, psycopg, aiosqlite or SQLAlchemy"
            )
        driver = found[0]
        async with first_error_wins(_closing(driver, made)):
            yield driver, made


@asynccontextmanager
async def _closing(driver: Driver, connection: Any) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await driver.close(connection)
