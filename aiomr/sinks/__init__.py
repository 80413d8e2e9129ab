"""Sinks: write a job's results back to a database, all or nothing.

* `write_rows`: rows, ``{key: value}`` results or the pairs of `aiomr.open_by_key`, written
  in one transaction through asyncpg's binary ``COPY``, psycopg's ``COPY`` or ``executemany``
  (aiosqlite, SQLAlchemy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from ._rows import write_rows as write_rows

__all__ = ["write_rows"]

_WHERE: dict[str, str] = {
    "write_rows": "._rows",
}

if not TYPE_CHECKING:  # imported on first use: see aiomr._lazy
    __getattr__, __dir__ = _lazy_exports(__name__, _WHERE)
