"""Parquet sources read by the workers, and batch mappers: real files written by pyarrow and
Polars, real worker processes, answers checked against pyarrow's own reading."""

from __future__ import annotations

import operator
import pathlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiomr
from aiomr.sources import parquet
from tests.conftest import run_program

pa = pytest.importorskip("pyarrow", reason="the arrow extra is not installed")
pc = pytest.importorskip("pyarrow.compute")
pq = pytest.importorskip("pyarrow.parquet")

WORDS = ["apple", "berry", "cherry", "date", "elder", "fig", None]


def table(rows: int, seed: int = 0) -> Any:
    """Words (some null), counts (some null), a year: deterministic."""
    return pa.table(
        {
            "word": [WORDS[(i * 7 + seed) % len(WORDS)] for i in range(rows)],
            "count": [None if (i + seed) % 11 == 0 else (i * 13 + seed) % 97 for i in range(rows)],
            "year": [2000 + (i + seed) % 4 for i in range(rows)],
            "id": list(range(rows)),
        }
    )


def batch_total(batch: Any) -> int:
    return int(pc.sum(batch["count"]).as_py() or 0)


def polars_total(frame: Any) -> int:
    return int(frame["count"].sum() or 0)


def pandas_total(frame: Any) -> int:
    return int(frame["count"].sum())


def row_count(row: dict[str, Any]) -> int:
    return row["count"] or 0


def chunk_total(rows: list[dict[str, Any]]) -> int:
    return sum(row["count"] or 0 for row in rows)


def column_names(batch: Any) -> frozenset[str]:
    return frozenset(batch.schema.names)


def blocks_total(batches: Any) -> int:
    return sum(batch_total(batch) for batch in batches)


def expected_total(data: Any) -> int:
    return int(pc.sum(data["count"]).as_py() or 0)


@pytest.fixture
def one_file(tmp_path: pathlib.Path) -> tuple[pathlib.Path, Any]:
    data = table(5_000)
    path = tmp_path / "counts.parquet"
    pq.write_table(data, path, row_group_size=700)
    return path, data


async def test_batches_of_every_format_give_pyarrows_answer(
    one_file: tuple[pathlib.Path, Any],
) -> None:
    path, data = one_file
    want = expected_total(data)
    source = parquet(path, split_size=1, batch_size=300)
    assert await aiomr.map_reduce(source, batch_total, operator.add, mode="batches") == want
    got_polars = await aiomr.map_reduce(
        source, polars_total, operator.add, mode="batches", batch_format="polars"
    )
    got_pandas = await aiomr.map_reduce(
        source, pandas_total, operator.add, mode="batches", batch_format="pandas"
    )
    assert got_polars == got_pandas == want


async def test_rows_come_as_dicts_in_record_and_chunk_mode_and_batches_in_blocks_mode(
    one_file: tuple[pathlib.Path, Any],
) -> None:
    path, data = one_file
    want = expected_total(data)
    source = parquet(path)
    assert await aiomr.map_reduce(source, row_count, operator.add) == want
    assert await aiomr.map_reduce(source, chunk_total, operator.add, mode="chunk") == want
    assert await aiomr.map_reduce(source, blocks_total, operator.add, mode="blocks") == want


@pytest.mark.parametrize("executor", ["process", "thread", "inline"])
async def test_stats_count_every_row_and_byte_once(
    one_file: tuple[pathlib.Path, Any], executor: str
) -> None:
    path, data = one_file
    stats = aiomr.JobStats()
    metadata = pq.ParquetFile(path).metadata
    on_disk = sum(
        metadata.row_group(g).column(c).total_compressed_size
        for g in range(metadata.num_row_groups)
        for c in range(metadata.num_columns)
    )
    got = await aiomr.map_reduce(
        parquet(path, split_size=1),
        batch_total,
        operator.add,
        mode="batches",
        executor=executor,
        stats=stats,
    )
    assert got == expected_total(data)
    assert stats.records == stats.records_reduced == data.num_rows
    assert stats.records_skipped == 0
    assert stats.chunks == metadata.num_row_groups  # split_size=1: a row group per task
    assert stats.bytes_done == stats.bytes_total == on_disk


async def test_only_the_columns_asked_for_reach_the_mapper(
    one_file: tuple[pathlib.Path, Any],
) -> None:
    path, _ = one_file
    seen = await aiomr.map_reduce(
        parquet(path, columns=["count"]), column_names, operator.or_, mode="batches"
    )
    assert seen == {"count"}


async def test_a_filter_skips_row_groups_and_filters_rows(tmp_path: pathlib.Path) -> None:
    data = table(4_000).sort_by("year")  # sorted: row group statistics can rule groups out
    path = tmp_path / "sorted.parquet"
    pq.write_table(data, path, row_group_size=500)
    keep = pc.field("year") == 2003
    stats = aiomr.JobStats()
    got = await aiomr.map_reduce(
        parquet(path, filter=keep, split_size=1),
        batch_total,
        operator.add,
        mode="batches",
        stats=stats,
    )
    assert got == expected_total(data.filter(keep))
    assert stats.records == data.filter(keep).num_rows
    # Only the row groups holding 2003 were read: 2 of the file's 8, give or take one.
    assert stats.chunks <= 3
    assert stats.bytes_done == stats.bytes_total
    assert stats.bytes_done < path.stat().st_size / 2


async def test_a_hive_dataset_gives_its_partition_columns(tmp_path: pathlib.Path) -> None:
    data = table(3_000)
    pq.write_to_dataset(data, tmp_path / "by_year", partition_cols=["year"])
    source = parquet(tmp_path / "by_year", filter=pc.field("year") >= 2002)

    def per_year(batch: Any) -> dict[int, int]:
        out: dict[int, int] = {}
        for year, count in zip(batch["year"].to_pylist(), batch["count"].to_pylist(), strict=True):
            out[year] = out.get(year, 0) + (count or 0)
        return out

    def merge(a: dict[int, int], b: dict[int, int]) -> dict[int, int]:
        return {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()}

    got = await aiomr.map_reduce(source, per_year, merge, mode="batches")
    want = {year: expected_total(data.filter(pc.field("year") == year)) for year in (2002, 2003)}
    assert got == want


async def test_globs_lists_and_files_written_by_polars(tmp_path: pathlib.Path) -> None:
    polars = pytest.importorskip("polars")
    parts = [table(1_000, seed) for seed in range(3)]
    for number, part in enumerate(parts):
        polars.from_arrow(part).write_parquet(tmp_path / f"part-{number}.parquet")
    want = sum(expected_total(part) for part in parts)
    by_glob = parquet(str(tmp_path / "part-*.parquet"))
    by_list = parquet([tmp_path / "part-0.parquet", str(tmp_path / "part-[12].parquet")])
    for source in (by_glob, by_list):
        assert await aiomr.map_reduce(source, batch_total, operator.add, mode="batches") == want


async def test_empty_files_give_initial_or_refuse(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "empty.parquet"
    pq.write_table(table(0), path)
    source = parquet(path)
    assert await aiomr.map_reduce(source, batch_total, operator.add, mode="batches", initial=0) == 0
    with pytest.raises(aiomr.EmptySourceError):
        await aiomr.map_reduce(source, batch_total, operator.add, mode="batches")


def word_and_count(row: dict[str, Any]) -> list[tuple[str | None, int]]:
    return [(row["word"], row["count"] or 0)]


async def test_key_based_jobs_read_rows_as_dicts(one_file: tuple[pathlib.Path, Any]) -> None:
    path, data = one_file
    got = await aiomr.map_reduce_by_key(parquet(path, split_size=1), word_and_count, operator.add)
    grouped = data.group_by("word").aggregate([("count", "sum")]).to_pylist()
    assert got == {row["word"]: row["count_sum"] or 0 for row in grouped}


def word_type(batch: Any) -> str:
    return str(batch.schema.field("word").type)


async def test_dictionary_columns_come_encoded_and_aggregate_the_same(
    one_file: tuple[pathlib.Path, Any],
) -> None:
    path, data = one_file
    source = parquet(path, dictionary_columns=["word"], split_size=1, batch_size=500)
    kinds = await aiomr.map_reduce(source, word_type, lambda a, b: a, mode="batches")
    assert kinds == "dictionary<values=string, indices=int32, ordered=0>"
    per_word = aiomr.Aggregate(by="word", total=("count", "sum"), n=("count", "count"))
    states = await aiomr.map_reduce(source, per_word.map, per_word.merge, mode="batches")
    got = per_word.finish(states).sort_by("word").to_pylist()
    grouped = data.group_by("word").aggregate([("count", "sum"), ("count", "count")])
    want = [
        {"word": row["word"], "total": row["count_sum"], "n": row["count_count"]}
        for row in grouped.sort_by("word").to_pylist()
    ]
    assert got == want
    with pytest.raises(TypeError, match="dictionary_columns must be a sequence of column names"):
        parquet(path, dictionary_columns="word")


async def test_a_shared_engine_runs_the_same_call(one_file: tuple[pathlib.Path, Any]) -> None:
    path, data = one_file
    async with aiomr.Engine(max_workers=2) as engine:
        got = await engine.map_reduce(parquet(path), batch_total, operator.add, mode="batches")
    assert got == expected_total(data)


def fail_at_row_600(batch: Any) -> int:
    if batch["id"][0].as_py() == 600:
        raise LookupError("no such word")
    return 0


async def test_a_failing_batch_mapper_is_named_with_its_rows_and_split(
    one_file: tuple[pathlib.Path, Any],
) -> None:
    path, _ = one_file
    with pytest.raises(LookupError) as caught:
        await aiomr.map_reduce(
            parquet(path, split_size=1, batch_size=300),
            fail_at_row_600,
            operator.add,
            mode="batches",
        )
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    # Row 600 is the first of the third batch of 300 in the first row group (700 rows).
    assert "rows [600, 700) of split 0 (" in notes
    assert "counts.parquet row group 0)" in notes


async def test_a_damaged_file_is_named_and_not_blamed_on_the_mapper(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "damaged.parquet"
    pq.write_table(table(2_000), path, row_group_size=1_000)
    raw = bytearray(path.read_bytes())
    raw[100:1_100] = bytes(1_000)  # zero the first row group's pages; footer intact
    path.write_bytes(bytes(raw))
    broken = r"damaged\.parquet row group 0\) cannot be read"
    with pytest.raises(aiomr.BrokenInputError, match=broken) as caught:
        await aiomr.map_reduce(
            parquet(path, split_size=1), batch_total, operator.add, mode="batches"
        )
    assert "user code" not in "\n".join(getattr(caught.value, "__notes__", []))


async def test_a_file_rewritten_after_planning_is_refused_not_misread(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "moving.parquet"
    pq.write_table(table(3_000), path, row_group_size=500)

    def rewrite_then_total(batch: Any) -> int:
        # The first task rewrites the file: same name, other row groups.
        pq.write_table(table(3_000, seed=5), path, row_group_size=700)
        return batch_total(batch)

    with pytest.raises(aiomr.BrokenInputError, match="changed after the job planned its row"):
        await aiomr.map_reduce(
            parquet(path, split_size=1),
            rewrite_then_total,
            operator.add,
            mode="batches",
            executor="inline",
        )


async def test_bad_arguments_are_refused_before_any_work(
    one_file: tuple[pathlib.Path, Any], tmp_path: pathlib.Path
) -> None:
    path, _ = one_file
    with pytest.raises(ValueError, match="no column 'nope' in the files; they have word, count"):
        await aiomr.map_reduce(parquet(path, columns=["nope"]), batch_total, operator.add)
    with pytest.raises(TypeError, match=r"filter must be a pyarrow\.compute\.Expression"):
        parquet(path, filter="year > 2000")
    with pytest.raises(TypeError, match="columns must be a sequence of column names"):
        parquet(path, columns="count")
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        parquet(path, batch_size=0)
    with pytest.raises(FileNotFoundError):
        await aiomr.map_reduce(parquet(tmp_path / "missing.parquet"), batch_total, operator.add)
    with pytest.raises(ValueError, match="mode='batches' needs a columnar source"):
        await aiomr.map_reduce(range(10), batch_total, operator.add, mode="batches")
    with pytest.raises(ValueError, match="mode='batches' needs a columnar source"):
        await aiomr.map_reduce(
            aiomr.sources.files(path, encoding=None), batch_total, operator.add, mode="batches"
        )
    with pytest.raises(ValueError, match="batch_format='polars' is for mode='batches'"):
        await aiomr.map_reduce(parquet(path), row_count, operator.add, batch_format="polars")
    with pytest.raises(ValueError, match="batch_format must be 'arrow', 'polars' or 'pandas'"):
        await aiomr.map_reduce(
            parquet(path),
            batch_total,
            operator.add,
            mode="batches",
            batch_format="numpy",  # type: ignore[typeddict-item]
        )
    # Typed rows always parse: on_error has nothing to leave out.
    skipping = aiomr.JobStats()
    assert await aiomr.map_reduce(
        parquet(path), batch_total, operator.add, mode="batches", on_error="skip", stats=skipping
    ) == await aiomr.map_reduce(parquet(path), batch_total, operator.add, mode="batches")
    assert skipping.records_skipped == 0


def test_without_pyarrow_the_source_says_what_to_install(tmp_path: pathlib.Path) -> None:
    done = run_program(
        """
        import sys
        sys.modules["pyarrow"] = None  # as if it were not installed
        import aiomr.sources
        try:
            aiomr.sources.parquet("data.parquet")
        except ImportError as exc:
            print(exc)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "aiomr.sources.parquet needs pyarrow, which is not installed: pip install 'aiomr[arrow]'"
    )


def test_no_columnar_library_is_imported_unless_used(tmp_path: pathlib.Path) -> None:
    done = run_program(
        """
        import operator, sys
        import aiomr
        from aiomr.sources import files, parquet  # the names only

        async def main():
            with open("words.txt", "w") as f:
                f.write("a\\nb\\n")
            await aiomr.map_reduce(files("words.txt"), len, operator.add)
            await aiomr.map_reduce(range(10), abs, operator.add)
            print(sorted(m for m in ("pyarrow", "polars", "pandas") if m in sys.modules))

        if __name__ == "__main__":
            aiomr.run(main())
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    counts=st.lists(st.one_of(st.none(), st.integers(-1_000, 1_000)), max_size=300),
    row_group_size=st.integers(1, 120),
    split_size=st.sampled_from([1, 200, 1 << 20]),
    batch_size=st.integers(1, 90),
)
async def test_any_table_any_cut_same_sum_and_rows_as_pyarrow(
    tmp_path_factory: pytest.TempPathFactory,
    counts: list[int | None],
    row_group_size: int,
    split_size: int,
    batch_size: int,
) -> None:
    path = tmp_path_factory.mktemp("random") / "random.parquet"
    data = pa.table({"count": pa.array(counts, type=pa.int64())})
    pq.write_table(data, path, row_group_size=row_group_size)
    stats = aiomr.JobStats()
    got = await aiomr.map_reduce(
        parquet(path, split_size=split_size, batch_size=batch_size),
        batch_total,
        operator.add,
        mode="batches",
        initial=0,
        executor="thread",
        stats=stats,
    )
    assert got == expected_total(data)
    assert stats.records == len(counts)
