"""Any function over whole keys' rows, after a shuffle: `aiomr.PartitionApply`.

For what the declared aggregations cannot say (a median, the top 3 per key, a sessionised
sequence, a model fitted per key), `aiomr.aggregate` can hand the rows themselves to a
function of the caller's: the rows travel as they are (no partial states), hash-partitioned
by the key columns exactly like an `Aggregate`'s states, and the function is called with a
table holding every row of some keys, in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .aggregate import Aggregate, States
from .imports import require

__all__ = ["PartitionApply"]


class PartitionApply(Aggregate):
    """A function over the rows of whole keys, for `aiomr.aggregate`.

    ```python
    import pyarrow as pa
    import pyarrow.parquet as pq

    import aiomr
    from aiomr.sources import parquet


    def medians(rows: pa.Table) -> pa.Table:
        grouped = rows.group_by("shop").aggregate([("amount", "approximate_median")])
        return grouped.rename_columns(["shop", "median"])  # any table, with any columns


    async def main() -> None:
        sales = pa.table({"shop": ["a", "b", "a", "a"], "amount": [5, 7, 1, 2]})
        pq.write_table(sales, "sales.parquet")
        per_shop = aiomr.PartitionApply("shop", medians)
        table = await aiomr.aggregate(parquet("sales.parquet"), per_shop)
        print(table.sort_by("shop").to_pylist())
        # [{'shop': 'a', 'median': 2.0}, {'shop': 'b', 'median': 7.0}]


    if __name__ == "__main__":
        aiomr.run(main())
    ```

    Args:
        by: the key column, or several: every row of a key reaches one call of ``apply``.
        apply: ``pyarrow.Table -> pyarrow.Table`` (a Polars or pandas DataFrame is taken
            too). It gets the rows of some keys, all of each, in input order, and returns
            its answer for them; `aiomr.aggregate` concatenates the answers, so every call
            must return the same columns.

    How many calls there are depends on the data and the memory budget: one over every row
    when they fit the budget, else one per partition of the rows written to disk (or
    several, where a partition outgrows the budget). So ``apply`` must treat its table as
    a set of whole keys (group by them inside), never as all of the input. It runs in the
    workers (or on a helper thread of the caller, over rows that fit the budget).
    """

    def __init__(self, by: str | Sequence[str], apply: Callable[[Any], Any]) -> None:
        keys = [by] if isinstance(by, str) else list(by)
        if not keys or not all(isinstance(key, str) for key in keys):
            raise TypeError(f"by must name a key column, or several, got {by!r}")
        if not callable(apply):
            raise TypeError(f"apply must be a function of a table, got {apply!r}")
        require("pyarrow", "aiomr.PartitionApply")
        self.keys = keys
        self.aggregations = {}
        self.apply = apply
        self.regroup_pays = False  # rows are never regrouped: they are what apply needs

    def __repr__(self) -> str:
        return f"PartitionApply(by={self.keys!r}, apply={self.apply!r})"

    @property
    def ordered(self) -> bool:
        """Rows reach ``apply`` in input order: partials are merged in that order."""
        return True

    def map(self, batch: Any) -> States:
        """The batch's rows as they are (a table), its key columns checked."""
        pa = require("pyarrow", "aiomr.PartitionApply")
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        for key in self.keys:
            if key not in table.column_names:
                raise KeyError(
                    f"aiomr.PartitionApply: no key column {key!r} in the batch; "
                    f"it has {', '.join(table.column_names)}"
                )
        return States(table, 0)

    def merge(self, left: States, right: States) -> States:
        """The rows of both, in order."""
        pa = require("pyarrow", "aiomr.PartitionApply")
        return States(pa.concat_tables([left.table, right.table]), 0)

    def regrouped(self, states: States) -> States:
        """The rows as they are: there is nothing to regroup."""
        return states

    def finish(self, states: States) -> Any:
        """``apply`` over the rows, its answer as a ``pyarrow.Table``."""
        pa = require("pyarrow", "aiomr.PartitionApply")
        answer = self.apply(states.table.combine_chunks())
        if isinstance(answer, pa.Table):
            return answer
        if hasattr(answer, "to_arrow"):  # Polars
            return answer.to_arrow()
        if hasattr(answer, "columns") and hasattr(answer, "to_dict"):  # pandas
            return pa.Table.from_pandas(answer, preserve_index=False)
        raise TypeError(
            f"aiomr.PartitionApply: apply must return a table, got {type(answer).__qualname__}"
        )
