"""Sources describe themselves: what each kind tells a job, and a source a user wrote."""

from __future__ import annotations

import operator
import pathlib
import re
import sqlite3
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import aiomr
from aiomr._chunker import DEFAULT_NOUN, ChunkReader, ChunkSizer, check_source
from aiomr.sources import Batch, Source
from aiomr.sources._describe import describe

BAD = 637


class Bad(Exception):
    pass


def fail_at_bad(x: int) -> int:
    if x == BAD:
        raise Bad(x)
    return x


def pairs_failing_at_bad(x: int) -> Iterator[tuple[int, int]]:
    if x == BAD:
        raise Bad(x)
    yield x % 10, x


def pairs_by_last_digit(x: int) -> Iterator[tuple[int, int]]:
    yield x % 10, x


def aiomr_note(exc: BaseException) -> str:
    """The note aiomr added to a task's error, without the process id."""
    notes = [note for note in getattr(exc, "__notes__", []) if note.startswith("aiomr: ")]
    assert len(notes) == 1, notes
    return re.sub(r" \(pid \d+\)$", "", notes[0])


async def take_all(source: Source, limit: int) -> list[Batch]:
    reader = source.open_batches()
    batches = []
    try:
        while True:
            batch = await reader.take(limit)
            batches.append(batch)
            if batch.last or not batch.records:
                return batches
    finally:
        await reader.aclose()


# -- A source a user wrote ------------------------------------------------------------------


class Feed(Source):
    """Events ``0 .. n-1`` from a generator of batches the source owns; read once.

    A take hands over at most one of the generator's batches, so chunks are shorter than
    asked: the job still numbers every event by its place in the feed.
    """

    record_noun = ("event", "the feed")

    def __init__(self, n: int, batch: int = 100) -> None:
        self._batches = self._generate(n, batch)
        self._held: list[Any] = []
        self._opened = False
        self.closed = False

    def _generate(self, n: int, batch: int) -> Iterator[list[Any]]:
        for start in range(0, n, batch):
            yield [self.record(x) for x in range(start, min(start + batch, n))]

    def record(self, x: int) -> Any:
        return x

    def open_batches(self) -> Feed:
        if self._opened:
            raise ValueError("this Feed was already read")
        self._opened = True
        return self

    async def take(self, limit: int) -> Batch:
        if not self._held:
            self._held = next(self._batches, [])
        records, self._held = self._held[:limit], self._held[limit:]
        return Batch(records)

    async def aclose(self) -> None:
        self._batches.close()  # type: ignore[attr-defined]
        self.closed = True


class Digits:
    """Parse an event sent as text, in the workers (what a source's ``parser`` is)."""

    def __call__(self, raw: str) -> int:
        return int(raw)

    def parse_many(self, raws: list[str]) -> list[int]:
        return [int(raw) for raw in raws]


class TextFeed(Feed):
    """A feed whose events travel as text and are parsed by the workers."""

    parser = Digits()

    def record(self, x: int) -> Any:
        return "not a number" if x == BAD else str(x)


async def test_a_user_source_runs_through_map_reduce() -> None:
    feed = Feed(2000)
    total = await aiomr.map_reduce(feed, abs, operator.add, max_workers=2)  # type: ignore[arg-type]
    assert total == sum(range(2000))
    assert feed.closed
    with pytest.raises(ValueError, match=r"^this Feed was already read$"):
        await aiomr.map_reduce(feed, abs, operator.add, executor="inline")  # type: ignore[arg-type]


async def test_a_user_source_runs_through_map_reduce_by_key() -> None:
    feed = Feed(2000, batch=64)
    sums = await aiomr.map_reduce_by_key(feed, pairs_by_last_digit, operator.add, max_workers=2)  # type: ignore[arg-type]
    assert sums == {d: sum(x for x in range(2000) if x % 10 == d) for d in range(10)}
    assert feed.closed


@pytest.mark.parametrize("keyed", [False, True], ids=["map_reduce", "map_reduce_by_key"])
async def test_errors_name_the_record_with_the_sources_own_noun(keyed: bool) -> None:
    feed = Feed(2000)
    job = (
        aiomr.map_reduce_by_key(
            feed,  # type: ignore[arg-type]
            pairs_failing_at_bad,
            operator.add,
            chunk_size=256,
            max_workers=2,
        )
        if keyed
        else aiomr.map_reduce(feed, fail_at_bad, operator.add, chunk_size=256, max_workers=2)  # type: ignore[arg-type]
    )
    with pytest.raises(Bad) as caught:
        await job
    assert aiomr_note(caught.value) == (
        f"aiomr: raised by user code at event {BAD} of the feed, "
        "in chunk 6 (events [600, 700) of the feed)"
    )
    assert feed.closed


async def test_a_user_sources_parser_runs_in_the_workers() -> None:
    digits = [x for x in range(1000) if x != BAD]
    total = await aiomr.map_reduce(
        TextFeed(1000),  # type: ignore[arg-type]
        abs,
        operator.add,
        on_error="skip",
        max_workers=2,
    )
    assert total == sum(digits)
    sums = await aiomr.map_reduce_by_key(
        TextFeed(1000),  # type: ignore[arg-type]
        pairs_by_last_digit,
        operator.add,
        on_error="skip",
        max_workers=2,
    )
    assert sums == {d: sum(x for x in digits if x % 10 == d) for d in range(10)}
    with pytest.raises(ValueError, match="not a number") as caught:
        await aiomr.map_reduce(TextFeed(1000), abs, operator.add, chunk_size=256, max_workers=2)  # type: ignore[arg-type]
    assert "chunk 6 (events [600, 700) of the feed)" in aiomr_note(caught.value)


# -- What each built-in kind says -----------------------------------------------------------


def plain_kinds() -> dict[str, Any]:
    async def agen() -> AsyncIterator[int]:
        for i in range(25):
            yield i

    return {
        "list": list(range(25)),
        "tuple": tuple(range(25)),
        "range": range(25),
        "generator": (i for i in range(25)),
        "iterator": iter(list(range(25))),
        "async generator": agen(),
    }


@pytest.mark.parametrize("kind", list(plain_kinds()))
async def test_plain_iterables_are_taken_in_the_caller(kind: str) -> None:
    described = describe(plain_kinds()[kind])
    assert described.worker_side() is None
    assert described.parser is None
    assert described.record_noun == DEFAULT_NOUN
    batches = await take_all(described, 10)
    assert [list(b.records) for b in batches] == [
        list(range(10)),
        list(range(10, 20)),
        list(range(20, 25)),
    ]
    assert [b.last for b in batches] == [False, False, True]
    assert all(b.origins == () for b in batches)


async def test_a_plain_iterable_may_name_its_records() -> None:
    class Pairs:
        record_noun = ("pair", "the pairs")

        def __iter__(self) -> Iterator[int]:
            return iter(range(3))

    described = describe(Pairs())
    assert described.record_noun == ("pair", "the pairs")
    reader = ChunkReader(Pairs(), ChunkSizer(2))  # type: ignore[arg-type]
    chunk = await reader.next_chunk()
    await reader.aclose()
    assert chunk is not None
    assert chunk.location == "chunk 0 (pairs [0, 2) of the pairs)"


def test_files_are_read_by_the_workers(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("a\nb\n")
    source = aiomr.sources.files(path)
    assert describe(source) is source
    assert source.worker_side() is source
    assert source.parser is None
    assert source.record_noun == DEFAULT_NOUN
    with pytest.raises(TypeError, match="gives a job no records"):
        source.open_batches()


def test_query_ranges_are_read_by_the_workers(tmp_path: pathlib.Path) -> None:
    with sqlite3.connect(tmp_path / "t.db") as db:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    split = aiomr.sources.RangeSplit("id", 0, 10, 2)
    source = aiomr.sources.sqlite_ranges(tmp_path / "t.db", "SELECT id FROM t", split=split)
    assert describe(source) is source
    assert source.worker_side() is source
    assert source.record_noun == ("row", "the query")


async def test_a_query_is_taken_in_batches_and_read_anew_by_each_job() -> None:
    async def connect() -> None:
        raise AssertionError("nothing is read here")

    source = aiomr.sources.query(connect, "SELECT 1")
    assert describe(source) is source
    assert source.worker_side() is None
    assert source.record_noun == ("row", "the query")
    for _ in range(2):  # each job opens its own reading; none is refused
        reader = source.open_batches()
        await reader.aclose()


async def test_lines_are_taken_raw_with_their_origins_and_read_once(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "a.txt"
    path.write_text("".join(f"line {i}\n" for i in range(5)))
    source = aiomr.sources.lines(path)
    assert describe(source) is source
    assert source.worker_side() is None
    assert source.parser is not None
    assert source.parser.parse_many([b"x"]) == ["x"]
    batches = await take_all(source, 3)
    assert [list(b.records) for b in batches] == [
        [b"line 0", b"line 1", b"line 2"],
        [b"line 3", b"line 4"],
    ]
    assert [b.origins for b in batches] == [((0, str(path), 1),), ((0, str(path), 4),)]
    assert [b.last for b in batches] == [False, True]
    with pytest.raises(ValueError, match="already read by an earlier job"):
        source.open_batches()
    with pytest.raises(ValueError, match="already read by an earlier job"):
        await aiomr.map_reduce(source, len, operator.add, executor="inline")


class Nothing(Source):
    """A source that neither the caller nor the workers can read."""


class Misnamed(Feed):
    record_noun = "event"  # type: ignore[assignment]


# -- What is not a source -------------------------------------------------------------------

NOT_ITERABLE = r"^source must be an Iterable or an AsyncIterable, got int$"


async def test_a_non_iterable_is_the_same_type_error_everywhere() -> None:
    with pytest.raises(TypeError, match=NOT_ITERABLE):
        describe(5)
    with pytest.raises(TypeError, match=NOT_ITERABLE):
        check_source(5)
    with pytest.raises(TypeError, match=NOT_ITERABLE):
        await aiomr.map_reduce(5, abs, operator.add, executor="inline")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=NOT_ITERABLE):
        await aiomr.map_reduce_by_key(5, pairs_by_last_digit, operator.add, executor="inline")  # type: ignore[arg-type]


async def test_a_source_that_offers_no_reading_says_so() -> None:
    with pytest.raises(TypeError, match=r"^Nothing gives a job no records: a Source must"):
        await aiomr.map_reduce(Nothing(), abs, operator.add, executor="inline")  # type: ignore[call-overload]


def test_a_record_noun_must_be_two_strings() -> None:
    with pytest.raises(TypeError, match=r"^Misnamed.record_noun must be two strings"):
        check_source(Misnamed(1))
