"""Live partial results: snapshots while the job runs, the result last."""

from __future__ import annotations

import asyncio
import collections
import itertools
import operator
import pathlib
import threading
import time
from collections.abc import AsyncIterator

import pytest

import aiomr


def square(x: int) -> int:
    return x * x


def slow_square(x: int) -> int:
    time.sleep(0.001)
    return x * x


def count_words(line: str) -> collections.Counter[str]:
    return collections.Counter(line.split())


def merge(a: collections.Counter[str], b: collections.Counter[str]) -> collections.Counter[str]:
    a.update(b)  # in place: snapshots must be copies
    return a


async def test_snapshots_grow_and_the_last_is_the_result(engine: aiomr.Engine) -> None:
    stats = aiomr.JobStats()
    seen: list[aiomr.Snapshot[int]] = []
    async with engine.open_stream(
        range(2000), slow_square, operator.add, every_partials=5, chunk_size=20, stats=stats
    ) as snapshots:
        async for snapshot in snapshots:
            seen.append(snapshot)
    expected = await engine.map_reduce(range(2000), square, operator.add)
    assert seen[-1].final
    assert seen[-1].value == expected
    assert [s.final for s in seen].count(True) == 1
    running = [s for s in seen if not s.final]
    assert len(running) >= 2  # 100 partials, a snapshot every 5 at most
    values = [s.value for s in running]
    assert values == sorted(values)  # a sum of squares only grows
    assert all(v <= expected for v in values)
    assert all(a.partials <= b.partials for a, b in itertools.pairwise(seen))
    assert seen[-1].partials == stats.chunks == 100


async def test_a_view_runs_on_the_fold_thread_and_sees_a_consistent_value(
    engine: aiomr.Engine,
) -> None:
    lines = [f"w{n % 13} w{n % 7}" for n in range(3000)]
    threads: set[int] = set()

    def top3(counts: collections.Counter[str]) -> list[tuple[str, int]]:
        threads.add(threading.get_ident())
        return counts.most_common(3)

    async with engine.open_stream(
        lines, count_words, merge, every_partials=3, view=top3, chunk_size=50
    ) as snapshots:
        views = [snapshot async for snapshot in snapshots]
    final = views[-1]
    assert final.final
    expected = collections.Counter(word for line in lines for word in line.split())
    # Ties may come in either order: the counts, and each word's count, must be right.
    assert [count for _, count in final.value] == [c for _, c in expected.most_common(3)]
    assert all(expected[word] == count for word, count in final.value)
    assert threads
    assert threading.get_ident() not in threads  # user code stays off the event loop
    for snapshot in views[:-1]:
        total = sum(count for _, count in snapshot.value)
        assert 0 < total <= sum(count for _, count in expected.most_common(3))


async def test_without_a_view_snapshots_are_copies(engine: aiomr.Engine) -> None:
    lines = ["a b", "a"] * 500
    async with engine.open_stream(
        lines, count_words, merge, every_partials=1, chunk_size=100
    ) as snapshots:
        collected = [snapshot.value async for snapshot in snapshots]
    assert collected[-1] == {"a": 1000, "b": 500}
    # Earlier snapshots kept the counts of their moment: the reducer's in-place updates
    # did not reach them.
    totals = [sum(counts.values()) for counts in collected]
    assert totals == sorted(totals)
    assert totals[0] < totals[-1]


async def test_pacing_by_time_with_a_slow_watcher(engine: aiomr.Engine) -> None:
    async with engine.open_stream(
        range(3000), slow_square, operator.add, every_seconds=0.05, chunk_size=30
    ) as snapshots:
        count = 0
        async for snapshot in snapshots:
            count += 1
            if not snapshot.final:
                await asyncio.sleep(0.2)  # the job goes on meanwhile
    assert snapshot.final
    assert snapshot.value == sum(x * x for x in range(3000))
    assert count >= 1


async def test_an_error_reaches_the_watcher_as_itself(engine: aiomr.Engine) -> None:
    def picky(x: int) -> int:
        if x == 777:
            raise LookupError("no 777")
        return x

    async def watch_to_the_end() -> None:
        async with engine.open_stream(
            range(1000), picky, operator.add, every_partials=1, chunk_size=10
        ) as snapshots:
            async for _ in snapshots:
                pass

    async def leave_without_looking() -> None:
        stats = aiomr.JobStats()
        async with engine.open_stream(range(1000), picky, operator.add, chunk_size=10, stats=stats):
            while stats.finished_at is None:  # the job fails meanwhile; nobody looks
                await asyncio.sleep(0.01)

    with pytest.raises(LookupError, match="no 777"):
        await watch_to_the_end()
    with pytest.raises(LookupError, match="no 777"):
        await leave_without_looking()


async def test_leaving_early_cancels_the_job(engine: aiomr.Engine) -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[int]:
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    stats = aiomr.JobStats()
    async with engine.open_stream(
        endless(), square, operator.add, every_partials=2, stats=stats
    ) as snapshots:
        async for snapshot in snapshots:
            if snapshot.partials >= 4:
                break
    assert closed.is_set()
    assert not snapshot.final
    # The engine serves the next job.
    assert await engine.map_reduce(range(1, 11), square, operator.add) == 385


async def test_open_stream_with_its_own_workers_and_bad_arguments() -> None:
    async with aiomr.open_stream(
        range(1, 11), square, operator.add, every_seconds=None, every_partials=1, max_workers=2
    ) as snapshots:
        final = [s async for s in snapshots][-1]
    assert final.final
    assert final.value == 385
    with pytest.raises(ValueError, match="give every_seconds, every_partials or both"):
        async with aiomr.open_stream(range(3), abs, operator.add, every_seconds=None):
            pass
    with pytest.raises(ValueError, match="every_partials must be an int >= 1"):
        async with aiomr.open_stream(range(3), abs, operator.add, every_partials=0):
            pass


async def test_a_batch_job_is_watched_with_its_tables_so_far(tmp_path: pathlib.Path) -> None:
    pa = pytest.importorskip("pyarrow", reason="the arrow extra is not installed")
    pq = pytest.importorskip("pyarrow.parquet")
    from aiomr.sources import parquet

    rows = 20_000
    table = pa.table({"k": [f"k{i % 500}" for i in range(rows)], "v": list(range(rows))})
    path = tmp_path / "rows.parquet"
    pq.write_table(table, path, row_group_size=1_000)
    per_key = aiomr.Aggregate(by="k", total=("v", "sum"))
    seen = []
    async with aiomr.open_stream(
        parquet(path, split_size=1),
        per_key.map,
        per_key.merge,
        mode="batches",
        every_seconds=None,
        every_partials=1,
        view=per_key.finish,
        max_workers=2,
    ) as snapshots:
        async for snapshot in snapshots:
            seen.append(snapshot)
    final = seen[-1]
    assert final.final
    assert len(seen) > 2  # tables along the way, not only the answer
    assert all(not s.final for s in seen[:-1])
    totals = dict(zip(final.value["k"].to_pylist(), final.value["total"].to_pylist(), strict=True))
    assert totals == {f"k{j}": sum(range(j, rows, 500)) for j in range(500)}
    for snapshot in seen[:-1]:
        so_far = snapshot.value.to_pydict()
        assert all(
            total <= totals[k] for k, total in zip(so_far["k"], so_far["total"], strict=True)
        )
