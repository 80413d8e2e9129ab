"""Declared aggregations by key (`aiomr.Aggregate`) over batches: the same answer as a plain
Python reading of the same rows, whatever the splits and batches, nulls included."""

from __future__ import annotations

import math
import pathlib
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiomr
from aiomr.sources import files, parquet

pa = pytest.importorskip("pyarrow", reason="the arrow extra is not installed")
pq = pytest.importorskip("pyarrow.parquet")

PER_KEY = aiomr.Aggregate(
    by=["k", "g"],
    total=("v", "sum"),
    count=("v", "count"),
    low=("v", "min"),
    high=("v", "max"),
    mean=("v", "mean"),
    distinct=("v", "count_distinct"),
)


def plain(rows: list[tuple[str | None, int, int | None]]) -> dict[tuple[Any, Any], dict[str, Any]]:
    """The same aggregations, one row at a time, with pyarrow's null rules."""
    values: dict[tuple[Any, Any], list[int | None]] = defaultdict(list)
    for k, g, v in rows:
        values[(k, g)].append(v)
    out = {}
    for key, found in values.items():
        present = [v for v in found if v is not None]
        out[key] = {
            "total": sum(present) if present else None,
            "count": len(present),
            "low": min(present) if present else None,
            "high": max(present) if present else None,
            "mean": sum(present) / len(present) if present else None,
            "distinct": len(set(present)),
        }
    return out


def by_key(table: Any) -> dict[tuple[Any, Any], dict[str, Any]]:
    return {(row.pop("k"), row.pop("g")): row for row in table.to_pylist()}


def same(got: dict[Any, dict[str, Any]], want: dict[Any, dict[str, Any]]) -> None:
    assert got.keys() == want.keys()
    for key, row in want.items():
        for name, value in row.items():
            found = got[key][name]
            if name == "mean" and value is not None:
                assert math.isclose(found, value), (key, name)
            else:
                assert found == value, (key, name)


ROWS = st.lists(
    st.tuples(
        st.one_of(st.none(), st.sampled_from(["a", "b", "c", "NA", ""])),
        st.integers(0, 2),
        st.one_of(st.none(), st.integers(-1_000, 1_000)),
    ),
    min_size=1,
    max_size=300,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=ROWS, row_group_size=st.integers(1, 80), batch_size=st.integers(1, 50))
async def test_any_rows_any_cut_same_answer_as_a_plain_reading(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[str | None, int, int | None]],
    row_group_size: int,
    batch_size: int,
) -> None:
    path = tmp_path_factory.mktemp("agg") / "rows.parquet"
    table = pa.table(
        {
            "k": pa.array([k for k, _, _ in rows], pa.string()),
            "g": pa.array([g for _, g, _ in rows], pa.int64()),
            "v": pa.array([v for _, _, v in rows], pa.int64()),
        }
    )
    pq.write_table(table, path, row_group_size=row_group_size)
    states = await aiomr.map_reduce(
        parquet(path, split_size=1, batch_size=batch_size),
        PER_KEY.map,
        PER_KEY.merge,
        mode="batches",
        executor="thread",
    )
    same(by_key(PER_KEY.finish(states)), plain(rows))


async def test_worker_processes_and_a_tsv_file(tmp_path: pathlib.Path) -> None:
    rows = [(f"w{i % 37}", i % 3, None if i % 11 == 0 else i % 101) for i in range(20_000)]
    path = tmp_path / "rows.tsv"
    path.write_text(
        "".join(f"{k}\t{g}\t{'' if v is None else v}\n" for k, g, v in rows), encoding="utf-8"
    )
    states = await aiomr.map_reduce(
        files(path, format="tsv", names=["k", "g", "v"], split_size=20_000),
        PER_KEY.map,
        PER_KEY.merge,
        mode="batches",
    )
    same(by_key(PER_KEY.finish(states)), plain(rows))


def test_bad_declarations_are_refused() -> None:
    with pytest.raises(ValueError, match="total= must be \\(column, aggregation\\)"):
        aiomr.Aggregate("k", total=("v", "median"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one aggregation"):
        aiomr.Aggregate("k")
    with pytest.raises(TypeError, match="by must name a key column"):
        aiomr.Aggregate([], total=("v", "sum"))
    with pytest.raises(ValueError, match="'k' is a key column and an aggregation's name"):
        aiomr.Aggregate("k", k=("v", "sum"))


def test_a_missing_column_is_named() -> None:
    batch = pa.record_batch({"k": ["a"], "x": [1]})
    with pytest.raises(KeyError, match="no column 'v' in the batch; it has k, x"):
        aiomr.Aggregate("k", total=("v", "sum")).map(batch)
