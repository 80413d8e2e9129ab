"""Chunk sizing and pulling records from every kind of source."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from aiomr._chunker import (
    FIRST_CHUNK_SIZE,
    FIRST_TIMED_SPLIT,
    MAX_CHUNK_SIZE,
    MAX_GROWTH,
    MIN_TIMED_SPLIT,
    TARGET_TASK_SECONDS,
    Chunk,
    ChunkReader,
    ChunkSizer,
)


class TestChunkSizer:
    def test_fixed_size_never_changes(self) -> None:
        sizer = ChunkSizer(10)
        sizer.observe(10, 5.0)
        sizer.observe(10, 1e-6)
        assert sizer.size == 10
        assert not sizer.adaptive

    def test_fast_records_grow_by_at_most_max_growth_per_task(self) -> None:
        sizer = ChunkSizer()
        assert sizer.size == FIRST_CHUNK_SIZE
        sizer.observe(FIRST_CHUNK_SIZE, FIRST_CHUNK_SIZE * 1e-7)  # 100 ns per record
        assert sizer.size == FIRST_CHUNK_SIZE * MAX_GROWTH
        for _ in range(20):
            sizer.observe(sizer.size, sizer.size * 1e-7)
        assert sizer.size == MAX_CHUNK_SIZE

    def test_slow_records_shrink_at_once(self) -> None:
        sizer = ChunkSizer()
        sizer.observe(FIRST_CHUNK_SIZE, FIRST_CHUNK_SIZE * 0.5)  # half a second per record
        assert sizer.size == 1

    def test_settles_in_the_target_band(self) -> None:
        sizer = ChunkSizer()
        per_record = 20e-6
        for _ in range(30):
            sizer.observe(sizer.size, sizer.size * per_record)
        assert sizer.size == int(TARGET_TASK_SECONDS / per_record)

    @pytest.mark.parametrize(
        ("size", "error"), [(0, ValueError), (-3, ValueError), (2.0, TypeError)]
    )
    def test_rejects_bad_sizes(self, size: object, error: type) -> None:
        with pytest.raises(error):
            ChunkSizer(size)  # type: ignore[arg-type]


class TestSplitSizing:
    MIB = 1 << 20

    def test_without_a_time_target_splits_keep_their_size(self) -> None:
        sizer = ChunkSizer()
        sizer.observe(1000, 10.0, nbytes=self.MIB)
        assert sizer.split_bytes(64 * self.MIB) == 64 * self.MIB

    def test_timed_splits_start_small_then_follow_the_measured_speed(self) -> None:
        sizer = ChunkSizer(split_seconds=0.5)
        assert sizer.split_bytes(64 * self.MIB) == FIRST_TIMED_SPLIT
        assert sizer.split_bytes(self.MIB // 2) == self.MIB // 2  # never above the largest
        sizer.observe(1000, 0.1, nbytes=FIRST_TIMED_SPLIT)  # 10 MiB/s: 5 MiB in 0.5 s
        assert sizer.split_bytes(64 * self.MIB) == MAX_GROWTH * FIRST_TIMED_SPLIT
        for _ in range(30):
            size = sizer.split_bytes(64 * self.MIB)
            sizer.observe(1000, size / (10 * self.MIB), nbytes=size)
        assert sizer.split_bytes(64 * self.MIB) == 5 * self.MIB
        assert sizer.split_bytes(2 * self.MIB) == 2 * self.MIB

    def test_slow_splits_shrink_at_once_down_to_the_minimum(self) -> None:
        sizer = ChunkSizer(split_seconds=0.5)
        sizer.observe(10, 4.0, nbytes=FIRST_TIMED_SPLIT)  # 256 KiB/s: 128 KiB in 0.5 s
        assert sizer.split_bytes(64 * self.MIB) == 128 << 10
        sizer.observe(10, 1000.0, nbytes=128 << 10)
        assert sizer.split_bytes(64 * self.MIB) == MIN_TIMED_SPLIT


async def read_all(reader: ChunkReader[int]) -> list[Chunk[int]]:
    chunks = []
    while (chunk := await reader.next_chunk()) is not None:
        chunks.append(chunk)
    await reader.aclose()
    return chunks


def source_kinds(n: int) -> list[object]:
    async def agen() -> AsyncIterator[int]:
        for i in range(n):
            yield i

    def gen() -> Iterator[int]:
        yield from range(n)

    return [list(range(n)), tuple(range(n)), range(n), gen(), iter(list(range(n))), agen()]


@pytest.mark.parametrize("kind", range(6), ids=["list", "tuple", "range", "gen", "iter", "agen"])
async def test_every_source_kind_yields_every_record_once_in_order(kind: int) -> None:
    source = source_kinds(103)[kind]
    chunks = await read_all(ChunkReader(source, ChunkSizer(10)))  # type: ignore[arg-type]
    assert [c.index for c in chunks] == list(range(11))
    assert [c.start for c in chunks] == list(range(0, 103, 10))
    assert [r for c in chunks for r in c.records] == list(range(103))
    assert chunks[-1].location == "chunk 10 (records [100, 103) of the source)"


async def test_generators_are_closed() -> None:
    finished = []

    def gen() -> Iterator[int]:
        try:
            yield from range(100)
        finally:
            finished.append(True)

    reader = ChunkReader(gen(), ChunkSizer(10))
    assert (await reader.next_chunk()) is not None
    await reader.aclose()
    await reader.aclose()  # idempotent
    assert finished == [True]
    assert await reader.next_chunk() is None


async def test_a_fast_async_source_yields_to_the_loop_while_a_big_chunk_fills() -> None:
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    async def fast() -> AsyncIterator[int]:
        for i in range(2_000_000):
            yield i

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    reader = ChunkReader(fast(), ChunkSizer(2_000_000))
    chunk = await reader.next_chunk()
    stop.set()
    await task
    await reader.aclose()
    assert chunk is not None
    assert len(chunk.records) == 2_000_000
    # Filling 2 M records takes ~0.3 s; the reader hands the loop back every ~2 ms.
    assert ticks > 20


def test_rejects_sources_that_are_not_iterable() -> None:
    with pytest.raises(
        TypeError, match=r"^source must be an Iterable or an AsyncIterable, got int$"
    ):
        ChunkReader(5, ChunkSizer())  # type: ignore[arg-type]
