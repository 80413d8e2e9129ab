"""``sort=True`` refuses keys that are not totally ordered; without it, any keys work.

A sort of frozensets, of floats with a NaN among them or of tuples holding either raises
nothing in Python and returns some order; merging runs or partitions in that order would
hand a key out twice, each time with part of its values. Every such job must raise a
`TypeError` naming two keys instead, wherever the keys meet: in one reduce task, across
spilled runs, or only when the partitions are merged in the caller.
"""

from __future__ import annotations

import collections
import operator
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import aiomr
from aiomr._keyed.hashing import stable_hash
from aiomr.executors import ProcessExecutor

NOT_ORDERED = (
    r"(?m)\Asorting by key \(sort=True\) needs keys in a total order, but (.+) and (.+) are not: "
    r"neither is less than the other, and they are not equal$"
)
CANNOT_COMPARE = (
    r"(?m)\Asorting by key \(sort=True\) needs keys in a total order, but (1 and 'a'|'a' and 1) "
    r"cannot be compared$"
)
SETS = [frozenset({1}), frozenset({2}), frozenset({1, 2}), frozenset(), frozenset({3})]


def one(key: Any) -> list[tuple[Any, int]]:
    return [(key, 1)]


def apart(first: Any, second: Any) -> int:
    """A partition count that puts ``first`` and ``second`` in different partitions."""
    return next(p for p in range(2, 50) if stable_hash(first) % p != stable_hash(second) % p)


class Tally(aiomr.Job):
    """Count keys, mrjob style: its reducer yields the pairs, sorted by the job."""

    def mapper(self, _: None, key: Any) -> Iterator[tuple[Any, int]]:
        yield key, 1

    def reducer(self, key: Any, counts: Iterator[int]) -> Iterator[tuple[Any, int]]:
        yield key, sum(counts)


async def collect(keys: list[Any], how: str, **options: Any) -> Any:
    if how == "dict":
        return await aiomr.map_reduce_by_key(keys, one, operator.add, sort=True, **options)
    if how == "stream":
        spec = aiomr.ReduceByKey(one, operator.add)
        async with aiomr.open_by_key(keys, spec, sort=True, **options) as pairs:
            return [pair async for pair in pairs]
    return await Tally().run(keys, sort=True, **options)


HOW = ["dict", "stream", "job"]


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("budget", [1 << 28, 1], ids=["in-memory", "spilled"])
async def test_partly_ordered_keys_meeting_in_one_task(
    how: str, budget: int, tmp_path: Path, process_executor: ProcessExecutor
) -> None:
    with pytest.raises(TypeError, match=NOT_ORDERED):
        await collect(
            SETS * 20,
            how,
            partitions=1,
            chunk_size=7,
            memory_budget=budget,
            temp_dir=str(tmp_path),
            executor=process_executor,
        )
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("how", HOW)
async def test_partly_ordered_keys_meeting_only_across_partitions(
    how: str, tmp_path: Path, process_executor: ProcessExecutor
) -> None:
    # One key per partition: each partition is in order by itself.
    left, right = frozenset({1}), frozenset({2})
    with pytest.raises(TypeError, match=NOT_ORDERED) as caught:
        await collect(
            [left, right] * 10,
            how,
            partitions=apart(left, right),
            temp_dir=str(tmp_path),
            executor=process_executor,
        )
    named = re.match(NOT_ORDERED, str(caught.value))
    assert named is not None
    assert {named[1], named[2]} == {"frozenset({1})", "frozenset({2})"}
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("how", HOW)
async def test_keys_of_types_that_do_not_compare_across_partitions(
    how: str, tmp_path: Path, process_executor: ProcessExecutor
) -> None:
    with pytest.raises(TypeError, match=CANNOT_COMPARE):
        await collect(
            [1, "a"] * 5,
            how,
            partitions=apart(1, "a"),
            temp_dir=str(tmp_path),
            executor=process_executor,
        )
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "keys",
    [
        [1.0, float("inf"), -2.5, 0.5],
        [(1, frozenset({1})), (1, frozenset({1, 2})), (2, frozenset({2}))],  # a chain
        ["b", "a", "c", "ab"],
    ],
    ids=["floats", "chain-of-sets", "str"],
)
@pytest.mark.parametrize("how", HOW)
async def test_totally_ordered_keys_still_sort(
    keys: list[Any], how: str, process_executor: ProcessExecutor
) -> None:
    got = await collect(keys * 30, how, partitions=3, memory_budget=1, executor=process_executor)
    pairs = list(got.items()) if isinstance(got, dict) else got
    assert pairs == sorted(collections.Counter(keys * 30).items())


@pytest.mark.parametrize(
    "keys",
    [SETS, [1, "a", None, b"x", (1, "a")], [(frozenset({1}), 2), (frozenset({2}), 2)]],
    ids=["frozensets", "mixed-types", "tuples-of-sets"],
)
@pytest.mark.parametrize("partitions", [1, 3])
async def test_without_sort_any_keys_merge_by_hash_and_equality(
    keys: list[Any], partitions: int, tmp_path: Path, process_executor: ProcessExecutor
) -> None:
    stats = aiomr.JobStats()
    got = await aiomr.map_reduce_by_key(
        keys * 40,
        one,
        operator.add,
        partitions=partitions,
        chunk_size=9,
        memory_budget=1,  # every section spills: keys meet only in merges of runs
        temp_dir=str(tmp_path),
        executor=process_executor,
        stats=stats,
    )
    assert got == collections.Counter(keys * 40)
    assert stats.spills > 0
    assert stats.records == stats.records_reduced + stats.records_skipped == len(keys) * 40
    assert os.listdir(tmp_path) == []


@pytest.mark.usefixtures("nothing_left_running")
async def test_a_refused_job_leaves_no_worker_and_no_file(tmp_path: Path) -> None:
    # The call owns its pool here: the pool's workers must be gone when it raises.
    with pytest.raises(TypeError, match=NOT_ORDERED):
        await aiomr.map_reduce_by_key(
            SETS * 50,
            one,
            operator.add,
            sort=True,
            partitions=2,
            memory_budget=1,
            temp_dir=str(tmp_path),
            executor="process",
            max_workers=2,
        )
    assert os.listdir(tmp_path) == []
