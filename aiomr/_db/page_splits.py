"""Page splits: a PostgreSQL table read as ranges of its pages, one range per task.

Every row of a table lives on one page, named by its ``ctid`` (page, item). A condition
``ctid >= '(a,0)' AND ctid < '(b,0)'`` selects the rows on pages ``a`` to ``b - 1``, and
PostgreSQL (14 and later) reads exactly those pages (a TID range scan): no index is needed,
and the server does no more work for eight ranges than for one scan. The last range is open
above, so rows on pages added while the job runs are read too; every row is read once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["PAGES", "PageSplit"]

PAGES = "{pages}"
"""Where a query split by pages takes each range's condition."""

_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


@dataclass(frozen=True, slots=True)
class PageSplit:
    """Read a PostgreSQL query as ``partitions`` ranges of one table's pages.

    ```python
    import aiomr

    split = aiomr.sources.PageSplit("sales", partitions=8)
    sql = "SELECT id, store, amount FROM sales WHERE {pages}"
    source = aiomr.sources.postgres_ranges("postgresql://localhost/shop", sql, split=split)
    ```

    The query says where the range's condition goes with ``{pages}`` (in the ``WHERE``
    clause of the table's scan); it becomes ``(sales.ctid >= '(a,0)'::tid AND ...)``. Unlike
    a `RangeSplit`, no column and no index are needed: each range reads only its pages.

    Args:
        table: the table whose pages are split, optionally schema-qualified
            (``shop.sales``); its size is read when the job starts.
        partitions: how many ranges.
        alias: how the query names the table, if not by ``table`` (``FROM sales AS s``).
    """

    table: str
    partitions: int
    alias: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.table, str) or not _TABLE.fullmatch(self.table):
            raise ValueError(
                f"table must be a table name, optionally schema-qualified, got {self.table!r}"
            )
        if isinstance(self.partitions, bool) or not isinstance(self.partitions, int):
            raise TypeError(f"partitions must be an int, got {self.partitions!r}")
        if self.partitions < 1:
            raise ValueError("partitions must be >= 1")
        if self.alias is not None and (
            not isinstance(self.alias, str) or not _NAME.fullmatch(self.alias)
        ):
            raise ValueError(f"alias must be a plain name, got {self.alias!r}")

    def ranges(self, pages: int) -> list[tuple[str, str]]:
        """``(condition, label)`` of each range of a table of ``pages`` pages, in order."""
        name = self.alias or self.table
        cuts = sorted({pages * i // self.partitions for i in range(1, self.partitions)} - {0})
        edges: list[int | None] = [0, *cuts, None]
        out = []
        for i in range(len(edges) - 1):
            lower, upper = edges[i], edges[i + 1]
            parts = []
            if lower:
                parts.append(f"{name}.ctid >= '({lower},0)'::tid")
            if upper is not None:
                parts.append(f"{name}.ctid < '({upper},0)'::tid")
            condition = f"({' AND '.join(parts)})" if parts else "TRUE"
            end = "the end" if upper is None else f"{upper - 1}"
            out.append((condition, f"range {i} (pages {lower} to {end} of {self.table})"))
        return out
