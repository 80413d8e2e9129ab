"""Sinks: write a job's results back to a database, all or nothing.

* `write_rows`: rows, ``{key: value}`` results or the pairs of `aiomr.open_by_key`, written
  in one transaction through asyncpg's binary ``COPY``, psycopg's ``COPY`` or ``executemany``
  (aiosqlite, SQLAlchemy).
"""

from ._rows import write_rows as write_rows

__all__ = ["write_rows"]
