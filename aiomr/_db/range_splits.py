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

Bounds left out are read from the data: the reader first runs ``SELECT MIN(column),
MAX(column)`` over the query (`aiomr._db.driver.bounds_query`) and plans with
`RangeSplit.plan_from`. Whatever those values are, the ranges still cover every row once.
"""

from __future__ import annotations

import datetime
import decimal
import math
from dataclasses import dataclass
from typing import Any, TypeAlias, overload

from .driver import Bounds, check_identifier

__all__ = ["Bound", "RangeSplit"]

Bound: TypeAlias = int | float | decimal.Decimal | datetime.date | datetime.datetime
"""What a range split can cut: numbers, dates and timestamps."""


@dataclass(frozen=True, slots=True, init=False)
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

    Without ``lower`` or ``upper`` (``RangeSplit("id", partitions=4)``), each read first
    runs one more query, ``SELECT MIN(column), MAX(column)`` over the query, and cuts
    between those: ``[MIN, MAX]`` for an integer or a date column, whose every value then
    falls in a range of equal width. The column must hold numbers, dates or timestamps (in
    SQLite, also ISO 8601 text such as ``2024-05-01``); with no value at all (an empty
    table, or a column of NULLs) the query is read as one range.

    Args:
        column: a column of the query's result (a plain or double-quoted identifier)
            holding numbers, dates or timestamps.
        lower: where the first cut is measured from; ``None`` (the default): the column's
            smallest value.
        upper: where the last cut is measured to; must be greater than ``lower``; ``None``
            (the default): just past the column's largest value.
        partitions: how many ranges.
        max_connections: ranges read at the same time, each on its own connection;
            ``None`` reads all of them at once (a pool still lends no more connections
            than its size).
    """

    column: str
    lower: Bound | None
    upper: Bound | None
    partitions: int
    max_connections: int | None

    @overload
    def __init__(
        self,
        column: str,
        lower: Bound,
        upper: Bound,
        partitions: int,
        max_connections: int | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        column: str,
        *,
        lower: Bound | None = None,
        upper: Bound | None = None,
        partitions: int,
        max_connections: int | None = None,
    ) -> None: ...

    def __init__(
        self,
        column: str,
        lower: Bound | None = None,
        upper: Bound | None = None,
        partitions: int | None = None,
        max_connections: int | None = None,
    ) -> None:
        if partitions is None:
            raise TypeError("RangeSplit() needs partitions=")
        for name, value in (
            ("column", column),
            ("lower", lower),
            ("upper", upper),
            ("partitions", partitions),
            ("max_connections", max_connections),
        ):
            object.__setattr__(self, name, value)
        self._check()

    def _check(self) -> None:
        check_identifier("column", self.column)
        for name in ("partitions", "max_connections"):
            value = getattr(self, name)
            if value is None and name == "max_connections":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1")
        given = [(name, getattr(self, name)) for name in ("lower", "upper")]
        kinds = {_kind(value, name) for name, value in given if value is not None}
        if len(kinds) > 1:
            raise TypeError(
                f"lower and upper must both be numbers, both dates or both datetimes; "
                f"got {type(self.lower).__name__} and {type(self.upper).__name__}"
            )
        lower, upper = self.lower, self.upper
        if lower is not None and upper is not None and not lower < upper:  # type: ignore[operator]
            raise ValueError(f"lower must be less than upper, got {lower!r} and {upper!r}")

    @property
    def connections(self) -> int:
        """Ranges read at the same time."""
        return min(self.partitions, self.max_connections or self.partitions)

    @property
    def reads_bounds(self) -> bool:
        """Whether a read first queries the column's MIN and MAX (a bound was left out)."""
        return self.lower is None or self.upper is None

    def plan(self) -> list[Bounds]:
        """The ranges, in column order; together they cover every value and NULL once.

        Needs both bounds; without them the plan depends on the data (`plan_from`).
        """
        if self.lower is None or self.upper is None:
            raise ValueError(
                "this RangeSplit takes its bounds from the column's MIN and MAX, so its plan "
                "comes from them: plan_from(minimum, maximum)"
            )
        return _plan(self.lower, self.upper, self.partitions)

    def plan_from(self, minimum: Any, maximum: Any) -> list[Bounds]:
        """The ranges, with a missing bound taken from the column's ``MIN`` or ``MAX``.

        ``None`` for both (no value in the column) gives one range of every row, as do
        bounds that leave no room between them (a column of one value).
        """
        if minimum is None and maximum is None:
            return [_EVERY_ROW]
        column = self.column
        lower: Any = self.lower if self.lower is not None else _bound(column, "MIN", minimum)
        upper: Any = self.upper
        if upper is None:
            upper = _past(_bound(column, "MAX", maximum))
        lower_kind, upper_kind = _kind(lower, "lower"), _kind(upper, "upper")
        if lower_kind != upper_kind:
            given = "lower" if self.lower is not None else "upper"
            raise TypeError(
                f"RangeSplit: {given} is a {lower_kind if given == 'lower' else upper_kind}, "
                f"but the MIN and MAX of the column {column} are {minimum!r} and {maximum!r}"
            )
        if not lower < upper:
            return [_EVERY_ROW]
        return _plan(lower, upper, self.partitions)


_EVERY_ROW = Bounds(0, None, None, nulls=True)


def _plan(lower: Any, upper: Any, partitions: int) -> list[Bounds]:
    cuts: list[Any] = []
    for i in range(1, partitions):
        cut = _cut(lower, upper, i, partitions)
        if not cuts or cut > cuts[-1]:
            cuts.append(cut)
    edges: list[Any] = [None, *cuts, None]
    return [Bounds(i, edges[i], edges[i + 1], nulls=i == 0) for i in range(len(edges) - 1)]


def _bound(column: str, which: str, value: Any) -> Any:
    """A bound read from the data: a number, a date or a datetime, finite."""
    if isinstance(value, str):
        # SQLite keeps dates as ISO 8601 text; its range queries compare them as text.
        try:
            if len(value) == 10:
                return datetime.date.fromisoformat(value)
            return datetime.datetime.fromisoformat(value)
        except ValueError:
            pass
    elif isinstance(value, int | float | decimal.Decimal) and not isinstance(value, bool):
        finite = value.is_finite() if isinstance(value, decimal.Decimal) else math.isfinite(value)
        if finite:
            return value
        raise ValueError(
            f"RangeSplit: the {which} of the column {column} is {value!r}, between which and "
            "the other bound no cut can be placed; give lower= and upper="
        )
    elif isinstance(value, datetime.date):
        return value
    raise TypeError(
        f"RangeSplit: the {which} of the column {column} is {value!r} "
        f"({type(value).__qualname__}); a range split without lower= and upper= needs a "
        "column of numbers, dates or timestamps (in SQLite, also ISO 8601 text)"
    )


def _past(maximum: Any) -> Any:
    """An upper bound just past ``maximum``, where strides of whole units stay whole."""
    if isinstance(maximum, int):
        return maximum + 1
    if isinstance(maximum, datetime.date) and not isinstance(maximum, datetime.datetime):
        return maximum + datetime.timedelta(days=1)
    return maximum


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
