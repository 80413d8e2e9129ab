"""Windows over endless sources: tumbling and sliding, by count and by time."""

from __future__ import annotations

import asyncio
import collections
import operator
from collections.abc import AsyncIterator

import pytest

import aiomr


def identity(x: int) -> int:
    return x


def letters(word: str) -> collections.Counter[str]:
    return collections.Counter(word)


def merge(a: collections.Counter[str], b: collections.Counter[str]) -> collections.Counter[str]:
    a.update(b)  # in place: a pane folded into several windows must not be changed
    return a


async def collect(
    engine: aiomr.Engine, source: object, mapper: object, reducer: object, **options: object
) -> list[aiomr.Window[object]]:
    async with engine.open_windows(source, mapper, reducer, **options) as windows:  # type: ignore[arg-type]
        return [window async for window in windows]


async def test_tumbling_windows_by_count(engine: aiomr.Engine) -> None:
    windows = await collect(engine, range(1050), identity, operator.add, size=100)
    assert [(w.start, w.end, w.records) for w in windows] == [
        *((n, n + 100, 100) for n in range(0, 1000, 100)),
        (1000, 1050, 50),  # the last, partial window when the source ends
    ]
    assert [w.value for w in windows] == [sum(range(int(w.start), int(w.end))) for w in windows]


async def test_sliding_windows_by_count_fold_each_record_once_per_window(
    engine: aiomr.Engine,
) -> None:
    async def words() -> AsyncIterator[str]:
        for n in range(600):
            yield "ab"[n % 2] * (1 + n % 3)

    all_words = [w async for w in words()]
    windows = await collect(engine, words(), letters, merge, size=300, slide=100, chunk_size=25)
    assert [(w.start, w.end) for w in windows] == [(0, 300), (100, 400), (200, 500), (300, 600)]
    for window in windows:
        expected = collections.Counter("".join(all_words[int(window.start) : int(window.end)]))
        assert window.value == expected
        assert window.records == 300


async def test_time_windows_close_on_time_even_without_records(engine: aiomr.Engine) -> None:
    async def bursts() -> AsyncIterator[int]:
        for n in range(60):
            yield n
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.5)  # a gap: windows close with nothing in them
        for n in range(60, 80):
            yield n

    windows = await collect(
        engine, bursts(), identity, operator.add, by="time", size=0.1, initial=0
    )
    assert sum(w.records for w in windows) == 80
    assert sum(w.value for w in windows) == sum(range(80))  # type: ignore[misc]
    assert any(w.records == 0 and w.value == 0 for w in windows)
    assert all(w.end > w.start for w in windows)
    assert [w.start for w in windows] == sorted(w.start for w in windows)
    # Without initial, windows without records are left out.
    without = await collect(engine, bursts(), identity, operator.add, by="time", size=0.1)
    assert all(w.records > 0 for w in without)
    assert sum(w.records for w in without) == 80


async def test_an_error_of_the_source_or_the_mapper_ends_the_windows(
    engine: aiomr.Engine,
) -> None:
    async def broken() -> AsyncIterator[int]:
        yield 1
        raise ConnectionResetError("the stream went away")

    with pytest.raises(ConnectionResetError, match="went away"):
        await collect(engine, broken(), identity, operator.add, size=10)

    def picky(x: int) -> int:
        if x == 42:
            raise LookupError("42")
        return x

    with pytest.raises(LookupError, match="42"):
        await collect(engine, range(100), picky, operator.add, size=10)


async def test_leaving_early_stops_reading(engine: aiomr.Engine) -> None:
    read = 0

    async def endless() -> AsyncIterator[int]:
        nonlocal read
        while True:
            read += 1
            yield 1

    async with engine.open_windows(endless(), identity, operator.add, size=50) as windows:
        async for window in windows:
            assert window.value == 50
            if window.end >= 500:
                break
    stopped_at = read
    await asyncio.sleep(0.05)
    assert read == stopped_at  # nobody reads on
    assert read <= 500 + 10_000 + 1  # at most the queue ahead of the last window


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"size": 0}, "size must be a number > 0"),
        ({"size": 10, "slide": 3}, "whole multiple of slide"),
        ({"size": 10, "slide": 20}, "whole multiple of slide"),
        ({"size": 1.5}, "whole number of records"),
        ({"size": 1, "by": "space"}, "by must be 'count' or 'time'"),
    ],
)
async def test_window_arguments(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        async with aiomr.open_windows(range(3), identity, operator.add, **options):  # type: ignore[arg-type]
            pass
