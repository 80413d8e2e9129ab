"""Key-based jobs in ``mode="batches"``: the mapper yields pairs for each record batch of a
columnar source, and the pairs are combined, shuffled and reduced as for records."""

from __future__ import annotations

import operator
import pathlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import aiomr
from aiomr.sources import files, parquet

pa = pytest.importorskip("pyarrow", reason="the arrow extra is not installed")
pq = pytest.importorskip("pyarrow.parquet")

ROWS = [(f"w{i % 97}", i % 13) for i in range(50_000)]


def totals_of(batch: Any) -> Iterator[tuple[str, int]]:
    grouped = pa.Table.from_batches([batch]).group_by("w").aggregate([("n", "sum")])
    yield from zip(grouped["w"].to_pylist(), grouped["n_sum"].to_pylist(), strict=True)


def rows_of_polars(frame: Any) -> Iterator[tuple[str, int]]:
    yield from zip(frame["w"].to_list(), frame["n"].to_list(), strict=True)


def plain() -> Counter[str]:
    out: Counter[str] = Counter()
    for word, n in ROWS:
        out[word] += n
    return out


@pytest.fixture
def rows_parquet(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "rows.parquet"
    table = pa.table({"w": [w for w, _ in ROWS], "n": pa.array([n for _, n in ROWS], pa.int64())})
    pq.write_table(table, path, row_group_size=3_000)
    return path


async def test_pairs_from_each_batch_reduce_by_key(rows_parquet: pathlib.Path) -> None:
    stats = aiomr.JobStats()
    got = await aiomr.map_reduce_by_key(
        parquet(rows_parquet, batch_size=1_000, split_size=1),
        totals_of,
        operator.add,
        mode="batches",
        partitions=3,
        stats=stats,
    )
    assert got == plain()
    assert stats.records == len(ROWS)  # rows, not batches


async def test_polars_frames_grouped_by_key(rows_parquet: pathlib.Path) -> None:
    pytest.importorskip("polars")
    got = await aiomr.group_by_key(
        parquet(rows_parquet),
        rows_of_polars,
        lambda key, values: sum(values),
        mode="batches",
        batch_format="polars",
    )
    assert got == plain()


async def test_rows_that_do_not_parse_are_skipped(tmp_path: pathlib.Path) -> None:
    lines = [f"{w}\t{n}" for w, n in ROWS]
    lines[123] = "w5\tmany"
    lines[40_000] = "only-one-field"
    path = tmp_path / "rows.tsv"
    path.write_text("\n".join(lines) + "\n")
    stats = aiomr.JobStats()
    got = await aiomr.map_reduce_by_key(
        files(
            path,
            format="tsv",
            names=["w", "n"],
            types={"w": "string", "n": "int64"},  # the bad value is in the sample
            split_size=100_000,
        ),
        totals_of,
        operator.add,
        mode="batches",
        on_error="skip",
        stats=stats,
    )
    want = plain()
    want[ROWS[123][0]] -= ROWS[123][1]
    want[ROWS[40_000][0]] -= ROWS[40_000][1]
    assert got == want
    assert stats.records_skipped == 2
    assert stats.records == stats.records_reduced + stats.records_skipped == len(ROWS)
    assert sorted(bad.location for bad in stats.bad_sample) == sorted(
        [
            f"{path}:124 (byte {sum(len(x) + 1 for x in lines[:123])})",
            f"{path}:40001 (byte {sum(len(x) + 1 for x in lines[:40_000])})",
        ]
    )


async def test_batches_need_a_columnar_source() -> None:
    with pytest.raises(ValueError, match="mode='batches' needs a columnar source"):
        await aiomr.map_reduce_by_key(range(10), totals_of, operator.add, mode="batches")
    with pytest.raises(ValueError, match="a key-based job's mode must be 'record' or 'batches'"):
        await aiomr.map_reduce_by_key(range(10), totals_of, operator.add, mode="chunk")  # type: ignore[typeddict-item]
