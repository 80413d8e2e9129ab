"""Sources of records: files read by the workers, lines streamed through the caller, queries.

Any iterable or async iterable is a source as it is. These add what files and databases need:

* `files`: local files cut into line-aligned byte ranges that the workers read themselves
  (the caller sends only coordinates) -- the fast path;
* `lines`: the lines of files streamed through the caller with aiofiles, in large blocks;
* both: globs and directories, gzip/bzip2/xz, text or bytes, and TSV, CSV or JSON Lines
  parsed in the workers;
* `parquet`: Parquet files and hive-partitioned datasets read by the workers, row groups per
  task, only the columns asked for, with a filter pushed into the reader; its rows come as
  dicts, or as record batches to ``mode="batches"`` mappers (pyarrow, extra ``arrow``);
* `arrow`: Arrow IPC files (Feather v2) and streams, memory-mapped by the workers, record
  batches per task;
* `sqlite_ranges`, `postgres_ranges`: a query read by the workers themselves, one range of
  a column per task, with the standard library's sqlite3 or psycopg (no row passes through
  the caller);
* `query`: the rows of a database query, fetched in batches through asyncpg, psycopg,
  aiosqlite or SQLAlchemy, optionally read as ranges of a column over several connections
  at once (`RangeSplit`), or with asyncpg as ``COPY`` text decoded by the workers.

Every one of them is a `Source`: what a job asks of a source (records taken in batches by the
caller, or splits the workers read themselves). Subclass it to write a source of your own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from .._db.page_splits import PageSplit as PageSplit
    from .._db.range_splits import RangeSplit as RangeSplit
    from ._arrow import ArrowSource as ArrowSource
    from ._arrow import arrow as arrow
    from ._file_splits import FileSource as FileSource
    from ._file_splits import Split as Split
    from ._file_splits import files as files
    from ._lines import LineSource as LineSource
    from ._lines import lines as lines
    from ._parquet import ParquetSource as ParquetSource
    from ._parquet import parquet as parquet
    from ._parse import Parser as Parser
    from ._query import QuerySource as QuerySource
    from ._query import query as query
    from ._query_ranges import QueryRangesSource as QueryRangesSource
    from ._query_ranges import postgres_ranges as postgres_ranges
    from ._query_ranges import sqlite_ranges as sqlite_ranges
    from ._source import Batch as Batch
    from ._source import BatchReader as BatchReader
    from ._source import Source as Source
    from ._split_source import SplitSource as SplitSource

__all__ = [
    "ArrowSource",
    "Batch",
    "BatchReader",
    "FileSource",
    "LineSource",
    "PageSplit",
    "ParquetSource",
    "Parser",
    "QueryRangesSource",
    "QuerySource",
    "RangeSplit",
    "Source",
    "Split",
    "SplitSource",
    "arrow",
    "files",
    "lines",
    "parquet",
    "postgres_ranges",
    "query",
    "sqlite_ranges",
]

_WHERE: dict[str, str] = {
    "ArrowSource": "._arrow",
    "arrow": "._arrow",
    "Batch": "._source",
    "BatchReader": "._source",
    "FileSource": "._file_splits",
    "LineSource": "._lines",
    "PageSplit": ".._db.page_splits",
    "ParquetSource": "._parquet",
    "Parser": "._parse",
    "QueryRangesSource": "._query_ranges",
    "QuerySource": "._query",
    "RangeSplit": ".._db.range_splits",
    "Source": "._source",
    "Split": "._file_splits",
    "SplitSource": "._split_source",
    "files": "._file_splits",
    "lines": "._lines",
    "parquet": "._parquet",
    "postgres_ranges": "._query_ranges",
    "query": "._query",
    "sqlite_ranges": "._query_ranges",
}

if not TYPE_CHECKING:  # imported on first use: see aiomr._lazy
    __getattr__, __dir__ = _lazy_exports(__name__, _WHERE)
