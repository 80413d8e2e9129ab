"""Range splits: one query read as several ranges of a column, each over its own connection.

The plan follows Spark's JDBC source (``partitionColumn``, ``lowerBound``, ``upperBound``,
``numPartitions``). ``[lower, upper)`` is cut into ``partitions`` equal strides; the bounds
only place the cuts, they filter nothing:

    range 0             column <  c1   or column IS NULL
    range i             ci <= column < c(i+1)
    range n-1           column >= c(n-1)

The first range is open below and the last open above, so rows outside the bounds are read
too, and NULLs belong to the first range: every row falls in exactly one range. Cuts that
coincide (more partitions than distinct integers or days between the bounds) are merged, so
no range is empty by construction.
"""

from __future__ import annotations

import datetime
import decimal
from dataclasses import dataclass
from typing import Any, TypeAlias

from ._db_driver import Bounds, check_identifier

__all__ = ["Bound", "RangeSplit"]

Bound: TypeAlias = int | float | decimal.Decimal | datetime.date | datetime.datetime
"""What a range split can cut: numbers, dates and timestamps."""


@dataclass(frozen=True, slots=True)
class RangeSplit:
    """Read a query as ``partitions`` ranges of a column, concurrently.

    ```python
    import aiomr

    split = aiomr.sources.RangeSplit("id", lower=1, upper=1_000_001, partitions=4)
    source = aiomr.sources.query(pool, "SELECT id, store, amount FROM sales", split=split)
    ```

    Every row is read exactly once: the first range also takes the rows below ``lower``
    and the rows where the column is NULL, the last one the rows from ``upper`` on.
    Each range runs in a transaction of its own, so the ranges do not share one snapshot:
    rows written while the query runs may be seen by one range and not by another.

    Args:
        column: a column of the query's result (a plain or double-quoted identifier)
            holding numbers, dates or timestamps.
        lower: where the first cut is measured from.
        upper: where the last cut is measured to; must be greater than ``lower``.
        partitions: how many ranges.
        max_connections: ranges read at the same time, each on its own connection;
            ``None`` reads all of them at once (a pool still lends no more connections
            than its size).
    """

    column: str
    lower: Bound
    upper: Bound
    partitions: int
    max_connections: int | None = None

    def __post_init__(self) -> None:
        check_identifier("column", self.column)
        for name in ("partitions", "max_connections"):
            value = getattr(self, name)
            if value is None and name == "max_connections":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1")
        kinds = {_kind(self.lower, "lower"), _kind(self.upper, "upper")}
        if len(kinds) > 1:
            raise TypeError(
                f"lower and upper must both be numbers, both dates or both datetimes; "
                f"got {type(self.lower).__name__} and {type(self.upper).__name__}"
            )
        if not self.lower < self.upper:  # type: ignore[operator]
            raise ValueError(
                f"lower must be less than upper, got {self.lower!r} and {self.upper!r}"
            )

    @property
    def connections(self) -> int:
        """Ranges read at the same time."""
        return min(self.partitions, self.max_connections or self.partitions)

    def plan(self) -> list[Bounds]:
        """The ranges, in column order; together they cover every value and NULL once."""
        cuts: list[Any] = []
        for i in range(1, self.partitions):
            cut = _cut(self.lower, self.upper, i, self.partitions)
            if not cuts or cut > cuts[-1]:
                cuts.append(cut)
        edges: list[Any] = [None, *cuts, None]
        return [Bounds(i, edges[i], edges[i + 1], nulls=i == 0) for i in range(len(edges) - 1)]


def _kind(value: object, name: str) -> str:
    if isinstance(value, datetime.datetime):
        return "datetime"
    if isinstance(value, datetime.date):
        return "date"
    if isinstance(value, int | float | decimal.Decimal) and not isinstance(value, bool):
        return "number"
    raise TypeError(f"{name} must be a number, a date or a datetime, got {value!r}")


def _cut(lower: Any, upper: Any, i: int, n: int) -> Any:
    """The ``i``-th of ``n - 1`` cuts between ``lower`` and ``upper``, exact where it can be."""
    if isinstance(lower, datetime.datetime):
        return lower + (upper - lower) * i / n
    if isinstance(lower, datetime.date):
        return lower + datetime.timedelta(days=(upper - lower).days * i // n)
    if isinstance(lower, int) and isinstance(upper, int):
        return lower + (upper - lower) * i // n
    if isinstance(lower, decimal.Decimal) or isinstance(upper, decimal.Decimal):
        low, high = decimal.Decimal(lower), decimal.Decimal(upper)
        return low + (high - low) * i / n
    return lower + (upper - lower) * i / n
