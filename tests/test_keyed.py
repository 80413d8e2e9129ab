"""Key-based MapReduce: reduce, group and fold by key, the shuffle, spills and bad output."""

from __future__ import annotations

import asyncio
import collections
import decimal
import enum
import fractions
import operator
import os
import pathlib
import statistics
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiomr
from aiomr._keyed.hashing import stable_hash
from aiomr._keyed.phases import make_directory, remove_directory
from aiomr.executors import InlineExecutor, ProcessExecutor

LINES = ["the cat sat", "the hat", "a cat"] * 50


def words(line: str) -> Iterator[tuple[str, int]]:
    for word in line.split():
        yield word, 1


def as_pair(row: tuple[int, int]) -> list[tuple[int, int]]:
    return [row]


def naive_groups(rows: list[tuple[int, int]]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = collections.defaultdict(list)
    for key, value in rows:
        groups[key].append(value)
    return dict(groups)


async def test_word_count_reduce_by_key(engine: aiomr.Engine) -> None:
    stats = aiomr.JobStats()
    counts = await engine.run_by_key(
        LINES, aiomr.ReduceByKey(words, operator.add), chunk_size=30, stats=stats
    )
    assert counts == {"the": 100, "cat": 100, "sat": 50, "hat": 50, "a": 50}
    # The combiner ran map-side: one entry per distinct word per chunk, not one per word.
    assert stats.chunks == 5
    assert stats.map_output_keys == 5 * 5
    assert stats.partitions_done == 4  # twice the two workers


async def test_module_level_functions_and_sorting() -> None:
    counts = await aiomr.map_reduce_by_key(LINES, words, operator.add, sort=True, max_workers=2)
    assert list(counts) == sorted(counts)
    medians = await aiomr.group_by_key(
        [(1, 3), (2, 1), (1, 5), (1, 4)], as_pair, lambda k, v: statistics.median(v)
    )
    assert medians == {1: 4, 2: 1}
    means = await aiomr.fold_by_key(
        [(1, 3), (2, 1), (1, 5)],
        as_pair,
        lambda acc, v: (acc[0] + v, acc[1] + 1),
        lambda a, b: (a[0] + b[0], a[1] + b[1]),
        initial=(0, 0),
        executor="thread",
    )
    assert means == {1: (8, 2), 2: (1, 1)}


async def test_fold_by_key_copies_a_mutable_initial(engine: aiomr.Engine) -> None:
    def add(acc: list[int], value: int) -> list[int]:
        acc.append(value)
        return acc

    spec = aiomr.FoldByKey(as_pair, add, operator.add, initial=[])
    result = await engine.run_by_key([(1, 1), (2, 2), (1, 3)], spec, chunk_size=3)
    assert {k: sorted(v) for k, v in result.items()} == {1: [1, 3], 2: [2]}
    with pytest.raises(TypeError, match="exactly one of initial= and initial_factory="):
        aiomr.FoldByKey(as_pair, add, operator.add)


KEYS = st.one_of(st.integers(-20, 20), st.sampled_from(["a", "b", "ç", "", "long key"]))
ROWS = st.lists(st.tuples(KEYS, st.integers(-100, 100)), max_size=300)


@pytest.fixture(scope="module")
def shared_pool() -> Iterator[ProcessExecutor]:
    executor = ProcessExecutor(2)
    yield executor
    asyncio.run(executor.aclose())


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=ROWS,
    partitions=st.integers(1, 7),
    chunk_size=st.one_of(st.none(), st.integers(1, 40)),
    memory_budget=st.sampled_from([1, 200, 5_000, 10**9]),
    in_process=st.booleans(),
)
def test_every_form_equals_a_naive_group_by(
    shared_pool: ProcessExecutor,
    rows: list[tuple[object, int]],
    partitions: int,
    chunk_size: int | None,
    memory_budget: int,
    in_process: bool,
) -> None:
    expected = naive_groups(rows)  # type: ignore[arg-type]

    async def job() -> tuple[
        dict[object, int], dict[object, list[int]], dict[object, tuple[int, int]]
    ]:
        engine = aiomr.Engine(InlineExecutor() if in_process else shared_pool)
        knobs = {"partitions": partitions, "chunk_size": chunk_size, "memory_budget": memory_budget}
        sums = await engine.run_by_key(rows, aiomr.ReduceByKey(as_pair, operator.add), **knobs)  # type: ignore[arg-type]
        groups = await engine.run_by_key(
            rows,
            aiomr.GroupByKey(as_pair, lambda k, values: sorted(values)),  # type: ignore[arg-type]
            **knobs,  # type: ignore[arg-type]
        )
        folds = await engine.run_by_key(
            rows,
            aiomr.FoldByKey(  # type: ignore[arg-type]
                as_pair,
                lambda acc, v: (acc[0] + v, acc[1] + 1),
                lambda a, b: (a[0] + b[0], a[1] + b[1]),
                initial=(0, 0),
            ),
            **knobs,  # type: ignore[arg-type]
        )
        return sums, groups, folds

    sums, groups, folds = asyncio.run(job())
    assert sums == {k: sum(v) for k, v in expected.items()}
    assert groups == {k: sorted(v) for k, v in expected.items()}
    assert folds == {k: (sum(v), len(v)) for k, v in expected.items()}


def keep_sum(key: object, values: list[int]) -> int:
    return sum(values)


@settings(max_examples=20, deadline=None)
@given(rows=ROWS, chunk_size=st.integers(1, 50))
def test_combiner_contract_zero_one_or_many_runs(
    rows: list[tuple[object, int]], chunk_size: int
) -> None:
    """A combiner that keeps the contract gives the answer of a job without it."""

    async def job(combiner: object) -> dict[object, int]:
        engine = aiomr.Engine(InlineExecutor())
        spec = aiomr.GroupByKey(as_pair, lambda k, values: sum(values), combiner)  # type: ignore[arg-type]
        return await engine.run_by_key(rows, spec, chunk_size=chunk_size, memory_budget=100)

    without = asyncio.run(job(None))
    once = asyncio.run(job(keep_sum))
    assert once == without == {k: sum(v) for k, v in naive_groups(rows).items()}  # type: ignore[arg-type]


async def test_sorted_stream_from_disk(engine: aiomr.Engine, tmp_path: pathlib.Path) -> None:
    spec = aiomr.ReduceByKey(lambda n: [(n % 1000, 1)], operator.add)
    seen = []
    async with engine.open_by_key(
        range(20_000), spec, sort=True, memory_budget=2_000, temp_dir=str(tmp_path)
    ) as pairs:
        async for key, count in pairs:
            seen.append(key)
            assert count == 20
    assert seen == list(range(1000))
    assert list(tmp_path.iterdir()) == []


async def test_group_values_arrive_lazily_for_a_hot_key(engine: aiomr.Engine) -> None:
    """A third of all records on one key, a budget far below them: it completes exactly."""

    def hot(n: int) -> list[tuple[int, int]]:
        return [(0 if n % 3 == 0 else n, 1)]

    stats = aiomr.JobStats()
    result = await engine.run_by_key(
        range(90_000),
        aiomr.GroupByKey(hot, lambda k, values: sum(1 for _ in values)),
        memory_budget=64 * 1024,
        stats=stats,
    )
    assert result[0] == 30_000
    assert len(result) == 60_001
    assert stats.spills > 0


WRITE_FOREVER = """
import itertools, os, sys
directory = sys.argv[1]
for n in itertools.count():
    try:
        with open(os.path.join(directory, f"part-{n}"), "wb") as f:
            f.write(b"x" * 4096)
    except OSError:
        pass
    if n == 100:
        print("writing", flush=True)
"""


class TestTemporaryFiles:
    async def test_removed_after_success_error_and_cancellation(
        self, engine: aiomr.Engine, tmp_path: pathlib.Path
    ) -> None:
        spec = aiomr.ReduceByKey(words, operator.add)
        await engine.run_by_key(LINES, spec, temp_dir=str(tmp_path), memory_budget=10)
        assert list(tmp_path.iterdir()) == []

        def failing(line: str) -> Iterator[tuple[str, int]]:
            if line == "a cat":
                raise LookupError("bad line")
            yield from words(line)

        with pytest.raises(LookupError, match="bad line"):
            await engine.run_by_key(
                LINES, aiomr.ReduceByKey(failing, operator.add), temp_dir=str(tmp_path)
            )
        assert list(tmp_path.iterdir()) == []

        started = asyncio.Event()

        async def endless() -> AsyncIterator[str]:
            while True:
                yield "tick tock"
                started.set()

        job = asyncio.create_task(engine.run_by_key(endless(), spec, temp_dir=str(tmp_path)))
        await started.wait()
        while not any(tmp_path.iterdir()):  # the job directory exists
            await asyncio.sleep(0.01)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        assert list(tmp_path.iterdir()) == []

    async def test_removal_outlasts_a_task_still_writing(self, tmp_path: pathlib.Path) -> None:
        # A task of a cancelled job may still be writing into the job directory while it
        # is removed; another process keeps creating files there the whole time.
        directory = make_directory(str(tmp_path))
        writer = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITE_FOREVER, directory, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert writer.stdout is not None
            assert await writer.stdout.readline() == b"writing\n"
            await remove_directory(directory)
            assert list(tmp_path.iterdir()) == []
            await asyncio.sleep(0.1)  # its later writes find no directory to write to
            assert list(tmp_path.iterdir()) == []
        finally:
            writer.kill()
            await writer.wait()


class TestBadMapperOutput:
    @pytest.mark.parametrize(
        ("mapper", "message"),
        [
            (
                lambda line: [line],
                r"must yield \(key, value\) pairs, but for record 3 \('x'\) it yielded 'x'",
            ),
            (lambda line: [(line, 1, 2)], r"for record 0 \('a'\) it yielded \('a', 1, 2\)"),
            (lambda line: [([line], 1)], r"unhashable key \['a'\] \(list\) for record 0"),
        ],
    )
    async def test_named_record_and_chunk(
        self, engine: aiomr.Engine, mapper: object, message: str
    ) -> None:
        source = ["a", "b", "c", "x"] if "record 3" in message else ["a", "b"]
        if "record 3" in message:

            def mapper(line: str) -> list[object]:
                return [(line, 1)] if line != "x" else ["x"]

        with pytest.raises(aiomr.MapperOutputError, match=message) as info:
            await engine.run_by_key(source, aiomr.ReduceByKey(mapper, operator.add), chunk_size=2)  # type: ignore[arg-type]
        assert any("chunk" in note for note in info.value.__notes__)

    async def test_a_bad_pair_deep_in_a_split_is_located_by_its_line(
        self, engine: aiomr.Engine, tmp_path: pathlib.Path
    ) -> None:
        # 30,000 equal lines span several blocks of the split; line 25,000 is the bad one.
        path = tmp_path / "lines.txt"
        path.write_text("".join("bad\n" if i == 25_000 else "same\n" for i in range(30_000)))

        def mapper(line: str) -> list[object]:
            return [line] if line == "bad" else [(line, 1)]

        with pytest.raises(aiomr.MapperOutputError, match=r"for record 25000 \('bad'\)"):
            await engine.run_by_key(
                aiomr.sources.files([path], split_size=1 << 30),
                aiomr.ReduceByKey(mapper, operator.add),  # type: ignore[arg-type]
            )

    async def test_unpicklable_key(self, engine: aiomr.Engine) -> None:
        import threading

        class Locked:
            def __init__(self) -> None:
                self.lock = threading.Lock()

        with pytest.raises(aiomr.MapperOutputError, match="key that cannot be pickled"):
            await engine.run_by_key(
                ["a"], aiomr.ReduceByKey(lambda line: [(Locked(), 1)], operator.add)
            )

    async def test_user_type_errors_pass_through(self, engine: aiomr.Engine) -> None:
        with pytest.raises(TypeError, match="unsupported operand") as info:
            await engine.run_by_key(
                ["a", "a"], aiomr.ReduceByKey(lambda s: [(s, None)], operator.add), chunk_size=2
            )
        assert not isinstance(info.value, aiomr.MapperOutputError)

    async def test_bad_arguments(self) -> None:
        with pytest.raises(ValueError, match=r"^partitions must be >= 1$"):
            await aiomr.map_reduce_by_key(LINES, words, operator.add, partitions=0)
        with pytest.raises(TypeError, match=r"^sort must be a bool"):
            await aiomr.map_reduce_by_key(LINES, words, operator.add, sort=1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^reducer must be callable, got int$"):
            await aiomr.map_reduce_by_key(LINES, words, 3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^spec must be a ReduceByKey"):
            await aiomr.Engine("inline").run_by_key(LINES, operator.add)  # type: ignore[call-overload]


def test_partitioning_is_stable_across_processes_and_hash_seeds() -> None:
    keys = [
        "word",
        "ç",
        "",
        "the",
        17,
        -3,
        2.5,
        1.0,
        True,
        None,
        ("a", 1),
        b"raw",
        frozenset({1, 2}),
    ]
    here = [stable_hash(k) for k in keys]
    assert stable_hash(1) == stable_hash(1.0) == stable_hash(True)
    program = (
        f"from aiomr._keyed.hashing import stable_hash\nprint([stable_hash(k) for k in {keys!r}])\n"
    )
    root = str(pathlib.Path(aiomr.__file__).resolve().parent.parent)
    for seed in ("0", "1", "12345"):
        done = subprocess.run(
            [sys.executable, "-c", program],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": root},
        )
        assert done.stdout.strip() == repr(here)


async def test_workers_agree_on_partitions(process_executor: ProcessExecutor) -> None:
    keys = [f"key{i}" for i in range(200)]
    remote = await asyncio.gather(*(process_executor.submit(stable_hash, key) for key in keys))
    assert remote == [stable_hash(key) for key in keys]


class Level(enum.IntEnum):
    ONE = 1


class Colour(enum.StrEnum):
    RED = "red"


class Shouting(str):
    def __str__(self) -> str:
        return self.upper()


class Blob(bytes):
    pass


Point = collections.namedtuple("Point", "x y")


class TestPairsAndEquality:
    async def test_two_character_strings_are_not_pairs(self) -> None:
        with pytest.raises(aiomr.MapperOutputError, match=r"it yielded 'ab'"):
            await aiomr.map_reduce_by_key(["x"], lambda r: ["ab"], operator.add, executor="inline")

    async def test_lists_of_two_are_pairs(self) -> None:
        result = await aiomr.map_reduce_by_key(
            ["x", "x"], lambda r: [[r, 1]], operator.add, executor="inline"
        )
        assert result == {"x": 2}

    async def test_user_type_error_before_the_first_pair_keeps_its_type(self) -> None:
        def broken(record: int) -> Iterator[tuple[int, int]]:
            yield record, 1 + "a"  # type: ignore[operator]

        with pytest.raises(TypeError, match="unsupported operand") as info:
            await aiomr.map_reduce_by_key([1, 2], broken, operator.add, executor="inline")
        assert not isinstance(info.value, aiomr.MapperOutputError)

    @pytest.mark.parametrize(
        "keys",
        [
            [1, 1.0, decimal.Decimal(1), fractions.Fraction(2, 2), Level.ONE, True],
            ["red", Colour.RED, Shouting("red")],
            [b"red", Blob(b"red")],
            [("red", 1), Point("red", 1), (Colour.RED, Level.ONE)],
        ],
        ids=["numbers", "str", "bytes", "tuple"],
    )
    @pytest.mark.parametrize("partitions", [1, 2, 3, 5])
    async def test_equal_keys_of_other_types_meet(
        self, keys: list[object], partitions: int
    ) -> None:
        # Equal keys must land in one partition, or each partition would hold its own
        # count and the result dict would keep only one of them.
        assert len({stable_hash(key) for key in keys}) == 1
        result = await aiomr.map_reduce_by_key(
            keys,
            lambda k: [(k, 1)],
            operator.add,
            executor="inline",
            chunk_size=1,
            partitions=partitions,
        )
        assert list(result.values()) == [len(keys)]
