"""Keys a dict treats as equal reduce as one key, on every executor and partition count.

And keys no two processes can agree on (NaN) are refused, and equal keys that a key type's
own hash sends apart are caught before a dict silently keeps one of their values.
"""

from __future__ import annotations

import decimal
import enum
import fractions
import math
import operator
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import aiomr
from aiomr._keyed.hashing import stable_hash
from aiomr.executors import Executor, InlineExecutor, ProcessExecutor, ThreadExecutor

INF = float("inf")
NAN = float("nan")


class Level(enum.IntEnum):
    ONE = 1


class Code:
    """A key type equal to the int it wraps, as a dict sees it, but pickled as itself."""

    def __init__(self, number: int) -> None:
        self.number = number

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Code):
            return self.number == other.number
        return bool(self.number == other)

    def __hash__(self) -> int:
        return hash(self.number)

    def __repr__(self) -> str:
        return f"Code({self.number})"


EQUAL = {
    "one": [1, 1.0, True, 1 + 0j, decimal.Decimal(1), fractions.Fraction(1), Level.ONE],
    "zero": [0, 0.0, -0.0, 0j, False, decimal.Decimal("-0"), fractions.Fraction(0)],
    "half": [0.5, 0.5 + 0j, decimal.Decimal("0.50"), fractions.Fraction(1, 2)],
    "infinity": [INF, complex(INF, 0), decimal.Decimal("Infinity")],
    "huge": [10**5000, 10**5000 + 0, fractions.Fraction(10**5000), decimal.Decimal(10**5000)],
    "tuple": [(1, "a"), (1.0, "a"), (1 + 0j, "a"), (decimal.Decimal(1), "a")],
    "frozenset": [frozenset({1, 2}), frozenset({1.0, 2 + 0j}), frozenset({True, 2.0})],
}
"""Lists of keys that are all equal to each other, of different types."""

NANS = {
    "float": NAN,
    "complex": complex(1, NAN),
    "decimal": decimal.Decimal("NaN"),
    "in-tuple": ("a", (1, NAN)),
    "in-frozenset": frozenset({1, NAN}),
}


def one(key: Any) -> list[tuple[Any, int]]:
    return [(key, 1)]


def from_index(index: int) -> list[tuple[Any, int]]:
    """Build the key in the worker: a NaN read back from a pickle is a new object."""
    return [(float("nan") if index % 2 else 1.5, 1)]


@pytest.fixture(params=["inline", "thread", "process"])
async def executor(
    request: pytest.FixtureRequest, process_executor: ProcessExecutor
) -> AsyncIterator[Executor]:
    if request.param == "process":
        yield process_executor
        return
    made: Executor = InlineExecutor() if request.param == "inline" else ThreadExecutor(2)
    try:
        yield made
    finally:
        await made.aclose()


@pytest.mark.parametrize("partitions", [1, 2, 3, 5])
@pytest.mark.parametrize("kind", EQUAL)
async def test_equal_keys_reduce_as_one(executor: Executor, kind: str, partitions: int) -> None:
    keys = EQUAL[kind] * 3
    assert len({stable_hash(key) for key in keys}) == 1
    stats = aiomr.JobStats()
    result = await aiomr.Engine(executor).run_by_key(
        keys,
        aiomr.ReduceByKey(one, operator.add),
        chunk_size=1,  # every key in a chunk of its own: they meet in the shuffle
        partitions=partitions,
        stats=stats,
    )
    assert len(result) == 1
    assert list(result.values()) == [len(keys)]
    assert next(iter(result)) == keys[0]
    assert stats.records == stats.records_reduced + stats.records_skipped == len(keys)


@pytest.mark.parametrize("partitions", [1, 3])
async def test_equal_keys_meet_across_spilled_runs(
    executor: Executor, partitions: int, tmp_path: Path
) -> None:
    keys = [key for kind in EQUAL.values() for key in kind] * 5
    result = await aiomr.Engine(executor).run_by_key(
        keys,
        aiomr.ReduceByKey(one, operator.add),
        chunk_size=2,
        partitions=partitions,
        memory_budget=1,  # a run per section: keys meet only in the merge
        temp_dir=str(tmp_path),
    )
    assert sorted(result.values()) == sorted(len(kind) * 5 for kind in EQUAL.values())
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("partitions", [1, 3])
@pytest.mark.parametrize("name", NANS)
async def test_nan_keys_are_refused(
    executor: Executor, name: str, partitions: int, tmp_path: Path
) -> None:
    key = NANS[name]
    with pytest.raises(aiomr.MapperOutputError, match="NaN") as caught:
        await aiomr.Engine(executor).run_by_key(
            ["a", key, "b"],
            aiomr.ReduceByKey(one, operator.add),
            partitions=partitions,
            temp_dir=str(tmp_path),
        )
    message = str(caught.value)
    if name in ("float", "complex", "decimal"):
        assert message.startswith(f"the mapper yielded a NaN key: {key!r} ")
    else:
        assert message.startswith("the mapper yielded a key holding the NaN ")
        # A NaN hashes by identity, so a frozenset's order may differ in another process.
        orders = (
            [repr(key)]
            if name != "in-frozenset"
            else ["frozenset({nan, 1})", "frozenset({1, nan})"]
        )
        assert any(order in message for order in orders), message
    assert "map NaN to None or to a string first" in message
    assert os.listdir(tmp_path) == []


async def test_a_nan_made_in_the_worker_is_refused_too(executor: Executor) -> None:
    # A dict in one process would keep every one of these NaN objects apart; a job could
    # never tell which of them were one object before they were pickled.
    with pytest.raises(aiomr.MapperOutputError, match=r"^the mapper yielded a NaN key: nan "):
        await aiomr.Engine(executor).run_by_key(
            range(6), aiomr.ReduceByKey(from_index, operator.add), chunk_size=2
        )


@pytest.mark.parametrize("budget", [1, 1 << 28], ids=["spilled", "in-memory"])
async def test_equal_keys_hashed_apart_are_caught(
    executor: Executor, budget: int, tmp_path: Path
) -> None:
    # Code(3) == 3 and their Python hashes agree, but a Code is partitioned by its pickle:
    # each partition (or each spilled run) would hold a count of its own.
    partitions = next(p for p in range(2, 50) if stable_hash(Code(3)) % p != stable_hash(3) % p)
    for count in (1, partitions) if budget == 1 else (partitions,):
        with pytest.raises(aiomr.MapperOutputError) as caught:
            await aiomr.Engine(executor).run_by_key(
                [3, Code(3), 3, 4],
                aiomr.ReduceByKey(one, operator.add),
                chunk_size=1,
                partitions=count,
                memory_budget=budget,
                temp_dir=str(tmp_path),
            )
        message = str(caught.value)
        assert message.startswith("the keys ")
        assert "(int)" in message
        assert "Code(3) (Code)" in message
        assert "are equal, but were reduced apart" in message
        assert os.listdir(tmp_path) == []


def test_numbers_hash_by_value_in_one_pass() -> None:
    # An int past the decimal-string limit hashes like any other (no str() of it).
    assert stable_hash(10**5000) == stable_hash(fractions.Fraction(10**5000, 1))
    assert stable_hash(-1) != stable_hash(1)
    assert stable_hash(2**61 - 1) == stable_hash(0)  # equal Python hashes: equality decides
    assert stable_hash(decimal.Decimal("0.1")) == stable_hash(fractions.Fraction(1, 10))
    assert stable_hash(decimal.Decimal("0.1")) != stable_hash(0.1)  # not equal numbers
    assert stable_hash(math.pi) == stable_hash(complex(math.pi, 0))


def test_the_bulk_int_hashes_are_the_single_ones() -> None:
    from aiomr._keyed.hashing import stable_hashes

    keys = [0, -1, -2, 1, 2**63, -(2**100), 10**5000, 7]
    assert list(stable_hashes(keys)) == [stable_hash(key) for key in keys]
    words = ["a", "ç", ""]
    assert list(stable_hashes(words)) == [stable_hash(word) for word in words]


@pytest.mark.usefixtures("nothing_left_running")
@pytest.mark.parametrize("on_error", ["raise", "skip"])
async def test_a_refused_key_leaves_no_worker_and_no_file(on_error: Any, tmp_path: Path) -> None:
    # A NaN key is the job's code at fault, not one record's: it raises under "skip" too.
    # The call owns its pool here, and every file of the job (map outputs, spilled runs)
    # lives in its directory under temp_dir.
    for keys, message in (
        (["a", NAN] * 50, "NaN key"),
        ([3, Code(3), 4] * 50, "are equal, but were reduced apart"),
    ):
        with pytest.raises(aiomr.MapperOutputError, match=message):
            await aiomr.map_reduce_by_key(
                keys,
                one,
                operator.add,
                chunk_size=7,
                partitions=1,
                memory_budget=1,
                on_error=on_error,
                temp_dir=str(tmp_path),
                executor="process",
                max_workers=2,
            )
        assert os.listdir(tmp_path) == []
