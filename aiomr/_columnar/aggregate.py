"""Declared aggregations by key over record batches, vectorised with pyarrow.

An `Aggregate` gives a batch job its mapper and its reducer: `Aggregate.map` groups one
batch by the key columns into a small table of partial states (one row per key), and
`Aggregate.merge` merges two such `States` into one, so partials are merged in the workers
(a split's batches) and on the caller's fold thread (the splits), never row by row in
Python. `Aggregate.finish` turns the merged states into the answer (a mean is a sum and a
count until then).

Merging regroups lazily: two states are concatenated (no copy), and regrouped by key only
once their rows have doubled since the last regrouping, so a job's merges cost about twice
the final table's rows in all, not the accumulated table's rows at every merge; `finish`
regroups what is left.

Every aggregation here is exact and decomposable: merging partial states gives the same
answer as one pass over all rows, whatever the splits and batches. ``count_distinct`` keeps
the key's distinct values themselves as its state (a list per key), merged as a union: exact,
at the price of holding them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

from .imports import check_installed, require

__all__ = ["AGGREGATIONS", "Aggregate", "Aggregation", "States"]

Aggregation: TypeAlias = Literal[
    "sum", "count", "min", "max", "mean", "first", "last", "count_distinct"
]
AGGREGATIONS: tuple[Aggregation, ...] = (
    "sum",
    "count",
    "min",
    "max",
    "mean",
    "first",
    "last",
    "count_distinct",
)

_MERGE = {
    "sum": "sum",
    "count": "sum",
    "min": "min",
    "max": "max",
    "first": "first",
    "last": "last",
}
"""How the partial state of each simple aggregation merges."""
_IN_ORDER = ("first", "last")
"""Aggregations that depend on the rows' order."""
_DISTINCT = "distinct"
"""The state of ``count_distinct``: the key's distinct values that are not null, a list."""
_ROWS = "aiomr.rows"
"""A column of the rows merged into each key, while distinct values are regrouped."""
_PAYS = 0.9
"""A regrouping pays when it leaves at most this share of the rows: keys that repeat across
batches at all (words: a third to a half go) keep regrouping at every doubling; keys that
are nearly all distinct (ids) do not."""
_PATIENCE = 8
"""While regrouping does not pay, merges append until the rows have grown this many times
since the last regrouping: the answer's rows are regrouped about 1/8 as often."""


class States:
    """Partial states of an `Aggregate`: a table with the key columns and one column per
    state, where a key appears once in its first ``grouped`` rows' worth of regrouping
    (later rows, appended by merges, may repeat keys until the next regrouping)."""

    __slots__ = ("grouped", "table")

    def __init__(self, table: Any, grouped: int) -> None:
        self.table = table
        self.grouped = grouped
        """The rows of the table when it was last grouped by key."""

    def __repr__(self) -> str:
        return f"<aiomr.Aggregate states: {self.table.num_rows} rows>"

    def __getstate__(self) -> tuple[Any, int]:
        return self.table, self.grouped

    def __setstate__(self, state: tuple[Any, int]) -> None:
        self.table, self.grouped = state


class Aggregate:
    """Aggregations of columns by key, for ``mode="batches"`` jobs.

    ```python
    import asyncio

    import pyarrow as pa
    import pyarrow.parquet as pq

    import aiomr
    from aiomr.sources import parquet


    async def main() -> None:
        data = pa.table({"word": ["a", "b", "a"], "n": [1, 2, 3], "year": [2000, 2000, 2001]})
        pq.write_table(data, "words.parquet")
        per_word = aiomr.Aggregate(
            by="word", total=("n", "sum"), last_year=("year", "max"), mean=("n", "mean")
        )
        states = await aiomr.map_reduce(
            parquet("words.parquet"), per_word.map, per_word.merge, mode="batches"
        )
        table = await asyncio.to_thread(per_word.finish, states)  # off the loop
        print(table.sort_by("word").to_pylist())
        # [{'word': 'a', 'total': 4, 'last_year': 2001, 'mean': 2.0},
        #  {'word': 'b', 'total': 2, 'last_year': 2000, 'mean': 2.0}]


    if __name__ == "__main__":
        aiomr.run(main())
    ```

    Args:
        by: the key column, or several.
        **aggregations: each output column, as ``(input column, aggregation)``; the
            aggregation is ``"sum"``, ``"count"`` (values that are not null), ``"min"``,
            ``"max"``, ``"mean"``, ``"first"`` or ``"last"`` (the key's first or last value
            in input order, null or not), or ``"count_distinct"`` (distinct values that are
            not null, exact: the state holds each key's distinct values). With ``first``
            or ``last`` the states must be merged in input order: pass ``ordered=True`` to
            `aiomr.map_reduce` (`aiomr.aggregate` does it itself; see `ordered`).

    `map` and `merge` run in the workers and on the job's fold thread. `finish` regroups
    what the last merges appended, which takes milliseconds per 100,000 keys: in a program
    whose event loop must stay free, run it on a thread (``asyncio.to_thread``). Null keys
    form a group of their own, as in pyarrow's and Polars' group-by. The keys' states must
    fit in memory: about one row per distinct key.
    """

    def __init__(self, by: str | Sequence[str], **aggregations: tuple[str, Aggregation]) -> None:
        keys = [by] if isinstance(by, str) else list(by)
        if not keys or not all(isinstance(key, str) for key in keys):
            raise TypeError(f"by must name a key column, or several, got {by!r}")
        if not aggregations:
            raise ValueError("Aggregate needs at least one aggregation, e.g. total=('n', 'sum')")
        for name, spec in aggregations.items():
            if (
                not isinstance(spec, tuple)
                or len(spec) != 2
                or not isinstance(spec[0], str)
                or spec[1] not in AGGREGATIONS
            ):
                raise ValueError(
                    f"{name}= must be (column, aggregation) with an aggregation among "
                    f"{', '.join(AGGREGATIONS)}; got {spec!r}"
                )
            if name in keys:
                raise ValueError(f"{name!r} is a key column and an aggregation's name")
        # pyarrow's group-by (Acero) loads much on first use (pandas too, where installed):
        # here, where an Aggregate is declared, rather than on a job's fold thread, where
        # the imports would hold the GIL and the event loop with it.
        require("pyarrow.acero", "aiomr.Aggregate")
        if any(how == "count_distinct" for _, how in aggregations.values()):
            check_installed("numpy", "aiomr.Aggregate")  # its states are merged with it
        self.keys = keys
        self.aggregations = dict(aggregations)
        self.regroup_pays = True
        """Whether the last regrouping in this process shrank the rows by a tenth or more:
        with keys nearly all distinct, regrouping costs memory and time for nothing, so
        merges then append longer before trying again."""

    def __repr__(self) -> str:
        parts = ", ".join(f"{name}={spec!r}" for name, spec in self.aggregations.items())
        return f"Aggregate(by={self.keys!r}, {parts})"

    # -- partial states ------------------------------------------------------------------------

    def _states(self) -> list[tuple[str, str, str]]:
        """``(state column, input column, pyarrow aggregation)`` of every partial state."""
        states = []
        for name, (column, how) in self.aggregations.items():
            if how == "mean":
                states.append((f"{name}.sum", column, "sum"))
                states.append((f"{name}.count", column, "count"))
            elif how == "count_distinct":
                states.append((name, column, _DISTINCT))
            else:
                states.append((name, column, how))
        return states

    def map(self, batch: Any) -> States:
        """One batch (a ``pyarrow.RecordBatch`` or ``Table``) grouped by key: its partial
        states, one row per key."""
        pa = require("pyarrow", "aiomr.Aggregate")
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        needed = [*self.keys, *(column for column, _ in self.aggregations.values())]
        for column in needed:
            if column not in table.column_names:
                raise KeyError(
                    f"aiomr.Aggregate: no column {column!r} in the batch; "
                    f"it has {', '.join(table.column_names)}"
                )
        states = self._states()
        columns = {key: table[key] for key in self.keys}
        for state, column, how in states:  # each state on a column of its own name
            values = table[column]
            if how == _DISTINCT and pa.types.is_dictionary(values.type):
                values = values.cast(values.type.value_type)  # one list type for every batch
            columns[state] = values
        table = self._grouped(pa.table(columns), [(state, how) for state, _, how in states])
        for index, key in enumerate(self.keys):  # dictionary keys: grouped fast, then decoded
            if pa.types.is_dictionary(table.schema.field(key).type):
                decoded = table[key].cast(table.schema.field(key).type.value_type)
                table = table.set_column(index, key, decoded)
        return States(table, table.num_rows)

    def merge(self, left: States, right: States) -> States:
        """Two partial states merged into one: concatenated, and regrouped by key once the
        rows have doubled since the larger one was last grouped (grown eightfold, while
        regrouping does not pay: see `regroup_pays`)."""
        pa = require("pyarrow", "aiomr.Aggregate")
        both = pa.concat_tables([left.table, right.table])
        grouped = max(left.grouped, right.grouped)
        if both.num_rows < (2 if self.regroup_pays else _PATIENCE) * grouped:
            return States(both, grouped)
        return self._regrouped(both)

    def regrouped(self, states: States) -> States:
        """``states`` with every key once: regrouped if merges appended rows since."""
        if states.table.num_rows <= states.grouped:
            return states
        return self._regrouped(states.table)

    def _regrouped(self, table: Any) -> States:
        states = self._states()
        distinct = [state for state, _, how in states if how == _DISTINCT]
        if not distinct:
            merged = self._grouped(table, [(state, _MERGE[how]) for state, _, how in states])
        else:
            merged = self._with_distinct_merged(table, distinct)
        self.regroup_pays = merged.num_rows <= _PAYS * table.num_rows
        return States(merged, merged.num_rows)

    def _with_distinct_merged(self, table: Any, distinct: list[str]) -> Any:
        """``table`` regrouped by key where some states are lists of distinct values: the
        other states merge as usual, and each list becomes the union of the key's lists
        (found through the rows each key merged: pyarrow groups no list column)."""
        pa = require("pyarrow", "aiomr.Aggregate")
        np = require("numpy", "aiomr.Aggregate")
        rows = pa.array(np.arange(table.num_rows, dtype=np.int64))
        aggregations = [
            (state, _MERGE[how]) for state, _, how in self._states() if how != _DISTINCT
        ]
        merged = self._grouped(table.append_column(_ROWS, rows), [*aggregations, (_ROWS, "list")])
        merged_rows = merged[_ROWS].combine_chunks()
        merged = merged.drop_columns([_ROWS])
        columns = {name: merged[name] for name in merged.column_names}
        for state in distinct:
            columns[state] = _union(table[state], merged_rows)
        order = [*self.keys, *(state for state, _, _ in self._states())]
        return pa.table({name: columns[name] for name in order})

    @staticmethod
    def _with_nulls() -> Any:
        """Options of "first" and "last": a null is a value (as in Polars and DuckDB)."""
        pc = require("pyarrow.compute", "aiomr.Aggregate")
        return pc.ScalarAggregateOptions(skip_nulls=False)

    @property
    def ordered(self) -> bool:
        """Whether an aggregation depends on the rows' order (``first``, ``last``): then
        partial states must be merged in input order (``ordered=True``)."""
        return any(how in _IN_ORDER for _, how in self.aggregations.values())

    def _grouped(self, table: Any, aggregations: list[tuple[str, str]]) -> Any:
        """``table`` grouped by the keys, each state column aggregated as asked and named
        as before; keys first."""
        steps: list[tuple[Any, ...]] = [
            (state, how, self._with_nulls()) if how in _IN_ORDER else (state, how)
            for state, how in aggregations
        ]
        if any(how == _DISTINCT for _, how in aggregations):
            pc = require("pyarrow.compute", "aiomr.Aggregate")
            only_valid = pc.CountOptions(mode="only_valid")
            steps = [(s[0], s[1], only_valid) if s[1] == _DISTINCT else s for s in steps]
        try:
            # One thread: pyarrow's "first" and "last" follow the rows' order only so.
            grouped = table.group_by(self.keys, use_threads=False).aggregate(steps)
        except Exception as exc:
            kinds = ", ".join(f"{key!r} ({table.schema.field(key).type})" for key in self.keys)
            exc.add_note(f"aiomr.Aggregate: grouping by {kinds}")
            raise
        names = {f"{state}_{how}": state for state, how in aggregations}
        grouped = grouped.rename_columns([names.get(c, c) for c in grouped.column_names])
        return grouped.select([*self.keys, *(state for state, _ in aggregations)])

    def finish(self, states: States) -> Any:
        """The answer from merged partial states: a ``pyarrow.Table`` with the key columns
        and one column per aggregation, in the order given, one row per key."""
        pa = require("pyarrow", "aiomr.Aggregate")
        pc = require("pyarrow.compute", "aiomr.Aggregate")
        if not isinstance(states, States):
            raise TypeError(
                f"finish takes what map and merge give (aiomr.Aggregate states), got {states!r}"
            )
        table = self.regrouped(states).table
        columns = {key: table[key] for key in self.keys}
        for name, (_, how) in self.aggregations.items():
            if how == "mean":
                total = pc.cast(table[f"{name}.sum"], "float64")
                columns[name] = pc.divide(total, pc.cast(table[f"{name}.count"], "float64"))
            elif how == "count_distinct":
                counts = pc.list_value_length(table[name]).fill_null(0)
                columns[name] = pc.cast(counts, "int64")
            else:
                columns[name] = table[name]
        return pa.table(columns)


def _union(lists: Any, rows_per_key: Any) -> Any:
    """Per key, the union of the lists ``lists[i]`` of the rows ``i`` in
    ``rows_per_key[key]``: a list array with one list of distinct values per key."""
    pa = require("pyarrow", "aiomr.Aggregate")
    pc = require("pyarrow.compute", "aiomr.Aggregate")
    np = require("numpy", "aiomr.Aggregate")
    keys = len(rows_per_key)
    key_of_row = pc.list_parent_indices(rows_per_key)
    taken = pc.take(lists, pc.list_flatten(rows_per_key))  # the rows' lists, key by key
    if isinstance(taken, pa.ChunkedArray):
        taken = taken.combine_chunks()
    values = pc.list_flatten(taken)
    key_of_value = pc.take(key_of_row, pc.list_parent_indices(taken))
    # Distinct (key, value) pairs (a grouping of two columns is 3x faster than pyarrow's
    # "distinct" per key), then put in key order (any order within a key) as lists.
    pairs = (
        pa.table({"key": key_of_value, "value": values})
        .group_by(["key", "value"], use_threads=False)
        .aggregate([])
    )
    if pairs.num_rows >= 2**31:
        raise OverflowError(
            f"aiomr.Aggregate: count_distinct holds {pairs.num_rows:,} distinct values in one "
            "state table, more than a list column can; use more partitions or a smaller "
            "memory budget with aiomr.aggregate"
        )
    key = pairs["key"].to_numpy()
    in_key_order = pairs["value"].take(pa.array(np.argsort(key))).combine_chunks()
    offsets = np.zeros(keys + 1, dtype=np.int32)
    np.cumsum(np.bincount(key, minlength=keys), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), in_key_order)
