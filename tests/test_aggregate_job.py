"""`aiomr.aggregate`: an `Aggregate` in memory and beyond it (hash-partitioned runs on disk,
reduced per partition), checked against a plain reading; runs counted once when workers die;
the job's files gone however it ends; results written as Parquet parts."""

from __future__ import annotations

import asyncio
import datetime
import os
import pathlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiomr
from aiomr.sources import files, parquet
from tests.test_aggregate import PER_KEY, ROWS, by_key, plain, same

pa = pytest.importorskip("pyarrow", reason="the arrow extra is not installed")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("numpy", reason="the arrow extra is not installed")

TINY = 2_000
"""A memory budget every partial state outgrows: every merge writes a run."""


def rows_table(rows: list[tuple[str | None, int, int | None]]) -> Any:
    return pa.table(
        {
            "k": pa.array([k for k, _, _ in rows], pa.string()),
            "g": pa.array([g for _, g, _ in rows], pa.int64()),
            "v": pa.array([v for _, _, v in rows], pa.int64()),
        }
    )


def many_rows(count: int) -> list[tuple[str | None, int, int | None]]:
    return [
        (None if i % 97 == 0 else f"key{i * 7919 % 5_003}", i % 3, None if i % 13 == 0 else i % 101)
        for i in range(count)
    ]


ANY_CUT = given(
    rows=ROWS,
    budget=st.sampled_from([1, TINY, 1 << 30]),
    partitions=st.integers(1, 5),
    row_group_size=st.integers(1, 80),
)
"""Rows cut into row groups, batches and partitions of every size, in memory or spilled."""
EXAMPLES = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


async def aggregated(
    factory: pytest.TempPathFactory,
    spec: aiomr.Aggregate,
    rows: list[tuple[str | None, int, int | None]],
    budget: int,
    partitions: int,
    row_group_size: int,
) -> Any:
    """``spec`` over ``rows`` written as Parquet, one row group a split, batches of 7."""
    path = factory.mktemp("agg") / "rows.parquet"
    pq.write_table(rows_table(rows), path, row_group_size=row_group_size)
    return await aiomr.aggregate(
        parquet(path, split_size=1, batch_size=7),
        spec,
        memory_budget=budget,
        partitions=partitions,
        executor="thread",
    )


@EXAMPLES
@ANY_CUT
async def test_any_budget_any_partitions_same_answer_as_a_plain_reading(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[str | None, int, int | None]],
    budget: int,
    partitions: int,
    row_group_size: int,
) -> None:
    table = await aggregated(tmp_path_factory, PER_KEY, rows, budget, partitions, row_group_size)
    same(by_key(table), plain(rows))


async def test_worker_processes_spill_and_reduce_a_tsv_file(tmp_path: pathlib.Path) -> None:
    rows = many_rows(60_000)
    path = tmp_path / "rows.tsv"
    path.write_text(
        "".join(f"{'' if k is None else k}\t{g}\t{'' if v is None else v}\n" for k, g, v in rows),
        encoding="utf-8",
    )
    stats = aiomr.JobStats()
    table = await aiomr.aggregate(
        files(path, format="tsv", names=["k", "g", "v"], types={"k": "string"}, split_size=50_000),
        PER_KEY,
        memory_budget=20_000,
        partitions=8,
        temp_dir=str(tmp_path),
        stats=stats,
    )
    # An empty field of a string column is an empty string, not a null.
    same(by_key(table), plain([("" if k is None else k, g, v) for k, g, v in rows]))
    assert stats.records == len(rows)
    assert sorted(os.listdir(tmp_path)) == ["rows.tsv"]  # the runs went with the job


def test_spilling_changes_nothing_for_every_kind_of_key(tmp_path: pathlib.Path) -> None:
    """Numbers, floats (``-0.0``, NaN), booleans, dates, times, binaries, dictionaries and
    several keys at once: the answer spilled (at every merge, in two levels) is the answer
    in memory."""
    count = 4_000
    specials = [0.0, -0.0, float("nan"), None]
    table = pa.table(
        {
            "i": pa.array([i % 499 for i in range(count)], pa.int32()),
            "f": pa.array(
                [specials[i % 8] if i % 8 < 4 else (i % 301) / 7 for i in range(count)],
                pa.float64(),
            ),
            "b": pa.array([[True, False, None][i % 3] for i in range(count)]),
            "d": pa.array(
                [datetime.date(2000, 1, 1) + datetime.timedelta(i % 365) for i in range(count)]
            ),
            "t": pa.array(
                [
                    datetime.datetime(2000, 1, 1) + datetime.timedelta(hours=i % 401)
                    for i in range(count)
                ],
                pa.timestamp("us"),
            ),
            "y": pa.array([str(i % 307).encode() * (i % 4) for i in range(count)], pa.binary()),
            "s": pa.array([f"s{i % 397}" for i in range(count)]).dictionary_encode(),
            "v": pa.array(range(count), pa.int64()),
        }
    )
    path = tmp_path / "kinds.parquet"
    pq.write_table(table, path, row_group_size=300)
    for keys in (["i"], ["f"], ["d"], ["t"], ["y"], ["s"], ["b", "s"]):
        spec = aiomr.Aggregate(by=keys, total=("v", "sum"), n=("v", "count"))

        async def run(budget: int, stats: aiomr.JobStats, spec: aiomr.Aggregate = spec) -> Any:
            return await aiomr.aggregate(
                parquet(path, batch_size=100),
                spec,
                memory_budget=budget,
                partitions=4,
                executor="inline",
                stats=stats,
            )

        memory_stats, spill_stats = aiomr.JobStats(), aiomr.JobStats()
        in_memory = asyncio.run(run(1 << 30, memory_stats))
        spilled = asyncio.run(run(TINY, spill_stats))
        assert memory_stats.spills == 0, keys
        assert spill_stats.spills > 10, keys
        assert spilled.num_rows == in_memory.num_rows, keys
        # repr: NaN keys compare equal, and 0.0 and -0.0 stay apart (pyarrow groups them apart)
        assert sorted(map(repr, spilled.to_pylist())) == sorted(map(repr, in_memory.to_pylist())), (
            keys
        )


class DiesOnce(aiomr.Aggregate):
    """An `Aggregate` whose worker dies the first time it maps the ``fatal``-th batch it
    sees, or finishes a partition (a marker file makes it once per job)."""

    def __init__(self, marker: str, phase: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.marker = marker
        self.phase = phase
        self.seen = 0

    def _die_once(self) -> None:
        if not os.path.exists(self.marker):
            pathlib.Path(self.marker).touch()
            os._exit(17)

    def map(self, batch: Any) -> Any:
        self.seen += 1
        if self.phase == "map" and self.seen == 3:  # after this split's merges spilled
            self._die_once()
        return super().map(batch)

    def finish(self, states: Any) -> Any:
        if self.phase == "reduce":
            self._die_once()
        return super().finish(states)


@pytest.mark.parametrize("phase", ["map", "reduce"])
async def test_a_worker_lost_in_either_phase_counts_its_rows_once(
    tmp_path: pathlib.Path, phase: str
) -> None:
    rows = many_rows(30_000)
    path = tmp_path / "rows.parquet"
    pq.write_table(rows_table(rows), path, row_group_size=5_000)
    marker = tmp_path / "died"
    spec = DiesOnce(
        str(marker),
        phase,
        by=["k", "g"],
        total=("v", "sum"),
        count=("v", "count"),
        low=("v", "min"),
        high=("v", "max"),
        mean=("v", "mean"),
        distinct=("v", "count_distinct"),
    )
    table = await aiomr.aggregate(
        parquet(path, batch_size=1_000), spec, memory_budget=TINY, partitions=4, max_workers=2
    )
    assert marker.exists()  # a worker did die
    same(by_key(table), plain(rows))


async def test_the_result_written_as_parquet_parts(tmp_path: pathlib.Path) -> None:
    rows = many_rows(20_000)
    path = tmp_path / "rows.parquet"
    pq.write_table(rows_table(rows), path, row_group_size=4_000)
    output = tmp_path / "out"
    written = await aiomr.aggregate(
        parquet(path), PER_KEY, memory_budget=TINY, partitions=5, output=output, max_workers=2
    )
    assert isinstance(written, aiomr.ParquetParts)
    assert written.directory == str(output)
    assert [pathlib.Path(f).name for f in written.files] == [
        f"part-{p:05d}.parquet" for p in range(5)
    ]
    table = pq.read_table(output)
    assert written.rows == table.num_rows
    same(by_key(table), plain(rows))
    with pytest.raises(FileExistsError, match=r"already holds part-\*.parquet files"):
        await aiomr.aggregate(parquet(path), PER_KEY, output=output, executor="inline")
    # In memory (no spill): one part, the same rows.
    small = await aiomr.aggregate(
        parquet(path), PER_KEY, output=tmp_path / "small", executor="inline"
    )
    assert [pathlib.Path(f).name for f in small.files] == ["part-00000.parquet"]
    same(by_key(pq.read_table(small.files[0])), plain(rows))


async def test_the_jobs_files_go_when_it_fails_or_is_cancelled(tmp_path: pathlib.Path) -> None:
    rows = many_rows(20_000)
    path = tmp_path / "rows.parquet"
    pq.write_table(rows_table(rows), path, row_group_size=2_000)
    spill = tmp_path / "spill"
    spill.mkdir()
    bad = aiomr.Aggregate(by="k", total=("missing", "sum"))
    with pytest.raises(KeyError, match="no column 'missing'"):
        await aiomr.aggregate(parquet(path), bad, memory_budget=TINY, temp_dir=str(spill))
    assert os.listdir(spill) == []

    started = asyncio.Event()

    class Slow(aiomr.Aggregate):
        def map(self, batch: Any) -> Any:
            import time

            time.sleep(0.05)
            return super().map(batch)

    stats = aiomr.JobStats()

    async def watch() -> None:
        while stats.records == 0:
            await asyncio.sleep(0.01)
        started.set()

    job = asyncio.create_task(
        aiomr.aggregate(
            parquet(path, batch_size=200),
            Slow(by="k", total=("v", "sum")),
            memory_budget=TINY,
            temp_dir=str(spill),
            stats=stats,
            executor="thread",
        )
    )
    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(started.wait(), 30)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    await watcher
    assert os.listdir(spill) == []


def test_bad_arguments_are_refused_before_any_work(tmp_path: pathlib.Path) -> None:
    source = parquet(tmp_path / "none.parquet")
    with pytest.raises(TypeError, match=r"aggregate must be an aiomr\.Aggregate"):
        asyncio.run(aiomr.aggregate(source, "k", executor="inline"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="memory_budget must be >= 1"):
        asyncio.run(aiomr.aggregate(source, PER_KEY, memory_budget=0))
    with pytest.raises(TypeError, match="unexpected keyword argument 'mode'"):
        asyncio.run(aiomr.aggregate(source, PER_KEY, mode="batches"))  # type: ignore[call-arg]
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="is a file, not a directory"):
        asyncio.run(aiomr.aggregate(source, PER_KEY, output=tmp_path / "file", executor="inline"))


async def test_a_key_column_that_cannot_be_grouped_is_named(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "lists.parquet"
    pq.write_table(pa.table({"k": [[1], [2], [1]], "v": [1, 2, 3]}), path)
    spec = aiomr.Aggregate(by="k", total=("v", "sum"))
    with pytest.raises(Exception, match="Keys of type list") as caught:
        await aiomr.aggregate(parquet(path), spec, memory_budget=1, executor="inline")
    assert "aiomr.Aggregate: grouping by 'k' (list<element: int64>)" in caught.value.__notes__


def test_every_key_type_pyarrow_groups_by_can_be_partitioned() -> None:
    from aiomr._columnar.hashing import hash_keys

    columns = {
        "fixed": pa.array([b"ab", b"cd", b"ab"], pa.binary(2)),
        "interval": pa.array(
            [pa.MonthDayNano([1, 2, 3]), pa.MonthDayNano([1, 2, 4]), pa.MonthDayNano([1, 2, 3])],
            pa.month_day_nano_interval(),
        ),
        "decimal": pa.array([1, 2, 1], pa.decimal128(10, 2)),
        "duration": pa.array([datetime.timedelta(days) for days in (1, 2, 1)]),
        "time": pa.array([datetime.time(1), datetime.time(2), datetime.time(1)], pa.time32("s")),
        "half": pa.array([1.0, 2.0, 1.0], pa.float32()),
        "nulls": pa.array([None, None, None]),
        "view": pa.array(["a", "b", "a"], pa.string_view()),
        "large": pa.array(["a", "b", "a"], pa.large_string()),
    }
    table = pa.table(columns)
    for name in columns:
        table.group_by(name).aggregate([])  # pyarrow groups by it
        hashed = hash_keys(table, [name]).tolist()
        if name != "nulls":
            assert hashed[0] == hashed[2] != hashed[1], name
    assert hash_keys(table, ["view"]).tolist() == hash_keys(table, ["large"]).tolist()


def test_a_split_that_spilled_leaves_the_worker_as_paths_only(tmp_path: pathlib.Path) -> None:
    from aiomr._columnar.spill import Spilled, SpillingMerge

    spec = aiomr.Aggregate(by="k", total=("v", "sum"))
    merge = SpillingMerge(spec, budget=3_000, directory=str(tmp_path), partitions=4)
    batches = [
        pa.record_batch({"k": [f"k{i}" for i in range(j, j + 100)], "v": [1] * 100})
        for j in range(0, 1_000, 100)
    ]
    value: Any = spec.map(batches[0])
    for batch in batches[1:]:
        value = merge(value, spec.map(batch))
    assert isinstance(value, Spilled)
    value = Spilled(spec.map(batches[0]), value.runs)  # states held after the last run
    finished = merge.finish_split(value)
    assert isinstance(finished, Spilled)
    assert finished.states is None
    assert len(finished.runs) == len(value.runs) + 1
    small = spec.map(batches[0].slice(0, 5))
    assert merge.finish_split(small) is small  # a small split that never spilled: its states
    large = spec.map(batches[0])  # over a quarter of the budget: to disk
    assert large.table.nbytes > 3_000 // 4
    assert merge.finish_split(large).states is None


@pytest.mark.parametrize("result_format", ["polars", "pandas"])
async def test_the_result_as_a_polars_or_pandas_frame(
    tmp_path: pathlib.Path, result_format: str
) -> None:
    pytest.importorskip(result_format)
    rows = many_rows(5_000)
    path = tmp_path / "rows.parquet"
    pq.write_table(rows_table(rows), path, row_group_size=1_000)
    for budget in (1 << 30, TINY):  # finished in memory, and reduced by partitions
        frame = await aiomr.aggregate(
            parquet(path),
            PER_KEY,
            memory_budget=budget,
            result_format=result_format,  # type: ignore[typeddict-item]
            executor="thread",
        )
        assert type(frame).__module__.split(".")[0] == result_format
        if result_format == "pandas":  # pandas holds a null total as NaN: back to None
            table = pa.Table.from_pandas(frame.astype(object).where(frame.notna(), None))
        else:
            table = frame.to_arrow()
        same(by_key(table), plain(rows))
    with pytest.raises(ValueError, match="is for a result returned, not one written"):
        await aiomr.aggregate(
            parquet(path),
            PER_KEY,
            output=tmp_path / "out",
            result_format=result_format,  # type: ignore[typeddict-item]
        )


ORDERED = aiomr.Aggregate(
    by="k", early=("v", "first"), late=("v", "last"), total=("v", "sum"), tag=("g", "first")
)


def first_and_last(rows: list[tuple[str | None, int, int | None]]) -> dict[Any, dict[str, Any]]:
    """The first and last value of each key in input order, nulls included."""
    out: dict[Any, dict[str, Any]] = {}
    for k, g, v in rows:
        if k not in out:
            out[k] = {"early": v, "late": v, "total": None, "tag": g}
        out[k]["late"] = v
        if v is not None:
            out[k]["total"] = (out[k]["total"] or 0) + v
    return out


@EXAMPLES
@ANY_CUT
async def test_first_and_last_follow_the_input_order_in_memory_and_spilled(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[str | None, int, int | None]],
    budget: int,
    partitions: int,
    row_group_size: int,
) -> None:
    table = await aggregated(tmp_path_factory, ORDERED, rows, budget, partitions, row_group_size)
    got = {row.pop("k"): row for row in table.to_pylist()}
    assert got == first_and_last(rows)


async def test_first_and_last_on_worker_processes(tmp_path: pathlib.Path) -> None:
    rows = many_rows(40_000)
    path = tmp_path / "rows.parquet"
    pq.write_table(rows_table(rows), path, row_group_size=2_000)
    for budget in (1 << 30, 20_000):
        table = await aiomr.aggregate(
            parquet(path, batch_size=700), ORDERED, memory_budget=budget, max_workers=2
        )
        assert {row.pop("k"): row for row in table.to_pylist()} == first_and_last(rows)


def test_states_held_before_a_spilled_split_go_to_disk_before_its_runs(
    tmp_path: pathlib.Path,
) -> None:
    """The caller holds an early split's states in memory when a later split arrives as
    runs: with first/last, the states must reach the disk before those runs."""
    from aiomr._columnar.spill import PartitionReducer, Spilled, SpillingMerge

    merge = SpillingMerge(ORDERED, budget=1 << 30, directory=str(tmp_path), partitions=2)
    early = ORDERED.map(pa.record_batch({"k": ["a"], "g": [1], "v": [1]}))
    later = ORDERED.map(pa.record_batch({"k": ["a"], "g": [2], "v": [2]}))
    value = merge(early, Spilled(None, (merge.spill(later),)))
    assert isinstance(value, Spilled)
    assert value.states is None
    assert len(value.runs) == 2
    reduce = PartitionReducer(ORDERED, value.runs, 1 << 30, str(tmp_path), 2, None)
    tables = [table for partition in range(2) for table in reduce(partition)]
    (row,) = pa.concat_tables(tables).to_pylist()
    assert row == {"k": "a", "early": 1, "late": 2, "total": 3, "tag": 1}


def sequences(rows: Any) -> Any:
    """Each key's values in the order they came, as text: wrong if a key's rows were split
    between calls or reordered."""
    out: dict[tuple[Any, Any], list[str]] = {}
    for k, g, v in zip(
        rows["k"].to_pylist(), rows["g"].to_pylist(), rows["v"].to_pylist(), strict=True
    ):
        out.setdefault((k, g), []).append(str(v))
    return pa.table(
        {
            "k": [k for k, _ in out],
            "g": pa.array([g for _, g in out], pa.int64()),
            "seq": [",".join(values) for values in out.values()],
        }
    )


def plain_sequences(rows: list[tuple[str | None, int, int | None]]) -> dict[Any, str]:
    out: dict[tuple[Any, Any], list[str]] = {}
    for k, g, v in rows:
        out.setdefault((k, g), []).append(str(v))
    return {key: ",".join(values) for key, values in out.items()}


@EXAMPLES
@ANY_CUT
async def test_a_function_over_whole_keys_sees_every_row_of_each_in_order(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[str | None, int, int | None]],
    budget: int,
    partitions: int,
    row_group_size: int,
) -> None:
    spec = aiomr.PartitionApply(["k", "g"], sequences)
    table = await aggregated(tmp_path_factory, spec, rows, budget, partitions, row_group_size)
    got = {(r["k"], r["g"]): r["seq"] for r in table.to_pylist()}
    assert got == plain_sequences(rows)


def polars_counts(rows: Any) -> Any:
    import polars as pl

    frame = pl.from_arrow(rows)
    assert isinstance(frame, pl.DataFrame)
    return frame.group_by("k").agg(pl.len().alias("n"))


async def test_a_function_returning_polars_on_worker_processes(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("polars")
    rows = many_rows(30_000)
    path = tmp_path / "rows.parquet"
    pq.write_table(rows_table(rows), path, row_group_size=2_000)
    stats = aiomr.JobStats()
    table = await aiomr.aggregate(
        parquet(path),
        aiomr.PartitionApply("k", polars_counts),
        memory_budget=20_000,
        stats=stats,
        max_workers=2,
    )
    assert stats.spills > 0
    want: dict[Any, int] = {}
    for k, _, _ in rows:
        want[k] = want.get(k, 0) + 1
    assert dict(zip(table["k"].to_pylist(), table["n"].to_pylist(), strict=True)) == want


async def test_what_a_function_over_keys_gets_wrong_is_named(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "rows.parquet"
    pq.write_table(rows_table(many_rows(100)), path)
    with pytest.raises(TypeError, match="apply must return a table, got int"):
        await aiomr.aggregate(
            parquet(path), aiomr.PartitionApply("k", lambda rows: 3), executor="inline"
        )
    with pytest.raises(KeyError, match="no key column 'nope' in the batch; it has k, g, v"):
        await aiomr.aggregate(
            parquet(path), aiomr.PartitionApply("nope", sequences), executor="inline"
        )
    with pytest.raises(TypeError, match="apply must be a function of a table"):
        aiomr.PartitionApply("k", "sequences")  # type: ignore[arg-type]


@pytest.mark.parametrize("budget", [TINY, 1 << 30])
async def test_count_distinct_of_strings_and_dictionaries_as_polars_counts_them(
    tmp_path: pathlib.Path, budget: int
) -> None:
    pl = pytest.importorskip("polars", reason="the polars extra is not installed")
    count = 20_000
    words = [None if i % 11 == 0 else f"w{i * 31 % 977}" for i in range(count)]
    table = pa.table(
        {
            "k": pa.array([i % 503 for i in range(count)], pa.int32()),
            "word": pa.array(words, pa.string()),
            "tag": pa.array([f"t{i % 7}" for i in range(count)]).dictionary_encode(),
            "x": pa.array([None if i % 5 == 0 else (i % 13) / 2 for i in range(count)]),
        }
    )
    path = tmp_path / "rows.parquet"
    pq.write_table(table, path, row_group_size=3_000)
    spec = aiomr.Aggregate(
        by="k",
        words=("word", "count_distinct"),
        tags=("tag", "count_distinct"),
        xs=("x", "count_distinct"),
        rows=("word", "count"),
    )
    got = await aiomr.aggregate(
        parquet(path, batch_size=700), spec, memory_budget=budget, partitions=3, max_workers=2
    )
    want = (
        pl.from_arrow(table)
        .group_by("k")
        .agg(
            words=pl.col("word").drop_nulls().n_unique(),
            tags=pl.col("tag").drop_nulls().n_unique(),
            xs=pl.col("x").drop_nulls().n_unique(),
            rows=pl.col("word").count(),
        )
    )
    assert got.schema.field("words").type == pa.int64()
    assert sorted(got.to_pylist(), key=lambda row: row["k"]) == sorted(
        want.to_dicts(), key=lambda row: row["k"]
    )


@pytest.mark.parametrize("budget", [TINY, 1 << 30])
async def test_the_result_streamed_as_batches_in_memory_or_from_disk(
    tmp_path: pathlib.Path, budget: int
) -> None:
    rows = many_rows(30_000)
    path = tmp_path / "rows.parquet"
    pq.write_table(rows_table(rows), path, row_group_size=5_000)
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    stats = aiomr.JobStats()
    batches = []
    async with aiomr.open_aggregate(
        parquet(path, batch_size=2_000),
        PER_KEY,
        memory_budget=budget,
        partitions=4,
        temp_dir=str(jobs),
        stats=stats,
        max_workers=2,
    ) as stream:
        async for batch in stream:
            assert isinstance(batch, pa.RecordBatch)
            assert 0 < batch.num_rows <= 65_536
            batches.append(batch)
            if budget == TINY:  # the partitions' parts are on disk while they stream
                (job,) = os.listdir(jobs)
                assert any(name.endswith(".arrow") for name in os.listdir(jobs / job))
    assert (stats.spills > 0) == (budget == TINY)
    same(by_key(pa.Table.from_batches(batches)), plain(rows))
    assert os.listdir(jobs) == []  # gone with the job


async def test_a_streamed_result_left_early_or_as_polars_on_an_engine(
    tmp_path: pathlib.Path,
) -> None:
    pl = pytest.importorskip("polars", reason="the polars extra is not installed")
    rows = many_rows(20_000)
    path = tmp_path / "rows.parquet"
    pq.write_table(rows_table(rows), path, row_group_size=4_000)
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    async with aiomr.Engine(max_workers=2) as engine:
        async with engine.open_aggregate(
            parquet(path), PER_KEY, memory_budget=TINY, temp_dir=str(jobs)
        ) as stream:
            first = await anext(aiter(stream))  # then left early: safe
        assert os.listdir(jobs) == []
        frames = []
        async with engine.open_aggregate(
            parquet(path), PER_KEY, memory_budget=TINY, result_format="polars"
        ) as stream:
            frames = [frame async for frame in stream]
        assert all(isinstance(frame, pl.DataFrame) for frame in frames)
        same(by_key(pl.concat(frames).to_arrow()), plain(rows))
        assert first.num_rows > 0
        with pytest.raises(ValueError, match=r"open_aggregate streams the result back"):
            async with engine.open_aggregate(parquet(path), PER_KEY, output=str(tmp_path / "o")):
                pass
