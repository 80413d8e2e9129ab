"""Arrow IPC files (Feather v2) and streams read by the workers (`aiomr.sources.arrow`),
written by pyarrow and by Polars, checked against a plain reading of the same rows."""

from __future__ import annotations

import operator
import os
import pathlib
from typing import Any

import pytest

import aiomr
from aiomr.sources import arrow
from tests.test_aggregate import PER_KEY, by_key, plain

pa = pytest.importorskip("pyarrow", reason="the arrow extra is not installed")
pc = pytest.importorskip("pyarrow.compute")
feather = pytest.importorskip("pyarrow.feather")
ipc = pytest.importorskip("pyarrow.ipc")

ROWS = [(f"k{i % 37}", i % 3, None if i % 11 == 0 else i % 101) for i in range(30_000)]


def rows_table() -> Any:
    return pa.table(
        {
            "k": [k for k, _, _ in ROWS],
            "g": pa.array([g for _, g, _ in ROWS], pa.int64()),
            "v": pa.array([v for _, _, v in ROWS], pa.int64()),
        }
    )


def total_v(batch: Any) -> int:
    return int(pc.sum(batch["v"]).as_py() or 0)


def rows_and_size(batch: Any) -> tuple[int, int]:
    return batch.num_rows, batch.num_rows


def widest(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return a[0] + b[0], max(a[1], b[1])


def same_as_plain(table: Any, rows: list[tuple[str, int, int | None]]) -> None:
    got, want = by_key(table), plain(rows)
    assert got.keys() == want.keys()
    for key, row in want.items():
        assert got[key]["total"] == row["total"], key
        assert got[key]["count"] == row["count"], key


@pytest.mark.parametrize("compression", ["uncompressed", "lz4", "zstd"])
async def test_a_feather_file_cut_into_ranges_of_batches(
    tmp_path: pathlib.Path, compression: str
) -> None:
    path = tmp_path / "rows.feather"
    feather.write_feather(rows_table(), path, compression=compression, chunksize=1_000)
    stats = aiomr.JobStats()
    table = await aiomr.aggregate(arrow(path, split_size=20_000), PER_KEY, stats=stats)
    same_as_plain(table, ROWS)
    assert stats.records == len(ROWS)
    assert stats.chunks > 5  # 30 batches in several ranges


async def test_streams_are_read_whole_and_files_written_by_polars(tmp_path: pathlib.Path) -> None:
    pl = pytest.importorskip("polars")
    table = rows_table()
    with (
        pa.OSFile(str(tmp_path / "a.arrows"), "wb") as sink,
        ipc.new_stream(sink, table.schema) as writer,
    ):
        for batch in table.slice(0, 10_000).to_batches(max_chunksize=3_000):
            writer.write_batch(batch)
    frame = pl.from_arrow(table.slice(10_000))
    assert isinstance(frame, pl.DataFrame)
    frame.slice(0, 10_000).write_ipc(tmp_path / "b.arrow")
    frame.slice(10_000).write_ipc_stream(tmp_path / "c.arrows")
    source = arrow(tmp_path / "*.arrow*", split_size=1)
    got = await aiomr.map_reduce(source, total_v, operator.add, mode="batches")
    assert got == sum(v for _, _, v in ROWS if v is not None)
    frames = await aiomr.map_reduce(
        arrow(tmp_path), len, operator.add, mode="batches", batch_format="polars"
    )
    assert frames == len(ROWS)


async def test_columns_filter_batch_size_and_rows_as_dicts(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "rows.arrow"
    feather.write_feather(rows_table(), path, chunksize=5_000)
    source = arrow(path, columns=["v"], filter=pc.field("g") == 1, batch_size=700)
    rows, largest = await aiomr.map_reduce(source, rows_and_size, widest, mode="batches")
    assert rows == sum(1 for _, g, _ in ROWS if g == 1)
    assert largest == 700
    first = await aiomr.map_reduce(
        arrow(path, columns=["k", "v"], batch_size=10), lambda row: [row], operator.add
    )
    assert sorted(first, key=repr) == sorted(({"k": k, "v": v} for k, _, v in ROWS), key=repr)


async def test_a_file_changed_after_planning_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "rows.arrow"
    feather.write_feather(rows_table(), path, chunksize=5_000)
    source = arrow(path, split_size=1)
    plan, size = source.cutter(2)
    split = plan.cut(size)
    assert split is not None
    feather.write_feather(rows_table().slice(0, 7_000), path, chunksize=1_000)
    with pytest.raises(aiomr.BrokenInputError, match="changed after the job planned"):
        list(source.batch_reader().batches(split))


def test_what_is_not_an_arrow_file_is_named(tmp_path: pathlib.Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(ValueError, match=r"notes\.txt is not an Arrow IPC file or stream"):
        arrow(tmp_path / "notes.txt").cutter(2)
    feather.write_feather(rows_table(), tmp_path / "rows.arrow")
    with pytest.raises(ValueError, match=r"no column 'nope' in .*rows\.arrow; it has k, g, v"):
        arrow(tmp_path / "rows.arrow", columns=["nope"]).cutter(2)
    with pytest.raises(TypeError, match=r"filter must be a pyarrow\.compute\.Expression"):
        arrow(tmp_path / "rows.arrow", filter="g == 1")


async def test_a_file_without_batches_gives_no_rows(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "empty.arrow"
    schema = pa.schema([("v", pa.int64())])
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, schema):
        pass
    assert os.path.getsize(path) > 0
    got = await aiomr.map_reduce(arrow(path), total_v, operator.add, mode="batches", initial=0)
    assert got == 0
