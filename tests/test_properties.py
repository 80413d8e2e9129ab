"""Invariant 7: the answer does not depend on chunk size, worker count, executor or order."""

from __future__ import annotations

import asyncio
import collections
import functools
import operator
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from typing import Any

import distributed
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiomr
from aiomr.executors import (
    DaskExecutor,
    Executor,
    InlineExecutor,
    ProcessExecutor,
    ThreadExecutor,
)
from tests import ast_guard

CLUSTER_PRELOAD = [ast_guard.__name__]
"""Imported by the cluster's workers: see `tests.ast_guard`."""


def mapper(x: int) -> int:
    return x * 3 - 1


@pytest.fixture(scope="module")
def executors() -> Iterator[dict[str, Executor]]:
    # A local Dask cluster of 2 worker processes; its scheduler runs on a thread of its own,
    # so each example's event loop connects to it afresh.
    cluster = distributed.LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        dashboard_address=":0",
        preload=CLUSTER_PRELOAD,
    )
    made: dict[str, Executor] = {
        "process-1": ProcessExecutor(1),
        "process-2": ProcessExecutor(2),
        "process-3": ProcessExecutor(3),
        "thread-1": ThreadExecutor(1),
        "thread-4": ThreadExecutor(4),
        "inline": InlineExecutor(),
        "dask": DaskExecutor(cluster.scheduler_address),
    }
    yield made
    for executor in made.values():
        asyncio.run(executor.aclose())
    cluster.close()


EXECUTORS = st.sampled_from(
    ["process-1", "process-2", "process-3", "thread-1", "thread-4", "inline", "dask"]
)
CHUNK_SIZES = st.one_of(st.none(), st.integers(1, 50))
IN_FLIGHT = st.one_of(st.none(), st.integers(1, 8))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.lists(st.integers(-1000, 1000), max_size=300),
    initial=st.one_of(st.none(), st.integers(-50, 50)),
    executor=EXECUTORS,
    chunk_size=CHUNK_SIZES,
    max_in_flight=IN_FLIGHT,
)
def test_commutative_reduction_equals_functools_reduce(
    executors: dict[str, Executor],
    data: list[int],
    initial: int | None,
    executor: str,
    chunk_size: int | None,
    max_in_flight: int | None,
) -> None:
    async def job() -> int:
        if initial is None:
            return await aiomr.map_reduce(
                data,
                mapper,
                operator.add,
                executor=executors[executor],
                chunk_size=chunk_size,
                max_in_flight=max_in_flight,
            )
        return await aiomr.map_reduce(
            data,
            mapper,
            operator.add,
            initial=initial,
            executor=executors[executor],
            chunk_size=chunk_size,
            max_in_flight=max_in_flight,
        )

    if initial is None and not data:
        with pytest.raises(aiomr.EmptySourceError):
            asyncio.run(job())
        return
    expected = (
        functools.reduce(operator.add, map(mapper, data))
        if initial is None
        else functools.reduce(operator.add, map(mapper, data), initial)
    )
    assert asyncio.run(job()) == expected


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.lists(st.text(max_size=3), min_size=1, max_size=200),
    executor=EXECUTORS,
    chunk_size=CHUNK_SIZES,
    max_in_flight=IN_FLIGHT,
)
def test_ordered_associative_reduction_keeps_input_order(
    executors: dict[str, Executor],
    data: list[str],
    executor: str,
    chunk_size: int | None,
    max_in_flight: int | None,
) -> None:
    async def job() -> str:
        return await aiomr.map_reduce(
            data,
            str.upper,
            operator.add,
            initial="<",
            ordered=True,
            executor=executors[executor],
            chunk_size=chunk_size,
            max_in_flight=max_in_flight,
        )

    assert asyncio.run(job()) == functools.reduce(operator.add, map(str.upper, data), "<")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.lists(st.lists(st.integers(0, 9), max_size=5), min_size=1, max_size=100),
    executor=EXECUTORS,
    chunk_size=CHUNK_SIZES,
)
def test_chunk_mode_equals_a_single_chunk(
    executors: dict[str, Executor], data: list[list[int]], executor: str, chunk_size: int | None
) -> None:
    def count(chunk: list[list[int]]) -> dict[int, int]:
        counts: dict[int, int] = {}
        for row in chunk:
            for x in row:
                counts[x] = counts.get(x, 0) + 1
        return counts

    def merge(a: dict[int, int], b: dict[int, int]) -> dict[int, int]:
        return {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()}

    async def job() -> dict[int, int]:
        return await aiomr.map_reduce(
            data, count, merge, mode="chunk", executor=executors[executor], chunk_size=chunk_size
        )

    assert asyncio.run(job()) == count(data)


def _equal_numbers(value: Fraction) -> list[Any]:
    """``value`` as every number type that holds it exactly: keys a dict takes as one."""
    forms: list[Any] = [value, Decimal(value.numerator) / Decimal(value.denominator)]
    as_float = float(value)
    if as_float == value:
        forms += [as_float, complex(as_float, 0)]
    if value.denominator == 1:
        forms.append(int(value))
        if value in (0, 1):
            forms.append(bool(value))
    return forms


def _special_int(index: int) -> int:
    """Ints past the decimal-string limit, equal Python hashes (-1, -2; 2**61 - 1 and 0)."""
    return [10**5000, -(10**5000), 2**61 - 1, 2**64, -1, -2][index]


NUMBER_KEYS = st.one_of(
    # Small values in every type at once, so equal keys of different types are common.
    st.builds(Fraction, st.integers(-4, 4), st.sampled_from([1, 2, 4])).flatmap(
        lambda value: st.sampled_from(_equal_numbers(value))
    ),
    st.integers(),
    st.integers(0, 5).map(_special_int),
    st.floats(allow_nan=False),
    st.complex_numbers(allow_nan=False, max_magnitude=1e6),
    st.decimals(allow_nan=False),
    st.fractions(max_denominator=10),
)
PLAIN_KEYS = st.one_of(NUMBER_KEYS, st.text(max_size=2), st.binary(max_size=2), st.none())
MIXED_KEYS = st.recursive(
    PLAIN_KEYS,
    lambda inner: st.tuples(inner) | st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=4,
)


@pytest.fixture(scope="module")
def key_executors() -> Iterator[dict[str, Executor]]:
    made: dict[str, Executor] = {
        "inline": InlineExecutor(),
        "thread": ThreadExecutor(2),
        "process": ProcessExecutor(2),
    }
    yield made
    for executor in made.values():
        asyncio.run(executor.aclose())


def _count(key: Any) -> list[tuple[Any, int]]:
    return [(key, 1)]


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    keys=st.lists(MIXED_KEYS, max_size=60),
    executor=st.sampled_from(["inline", "thread", "process"]),
    partitions=st.sampled_from([1, 2, 3, 5]),
    chunk_size=st.integers(1, 8),
    memory_budget=st.sampled_from([1, 1 << 28]),
)
def test_counts_by_key_equal_a_counter(
    key_executors: dict[str, Executor],
    keys: list[Any],
    executor: str,
    partitions: int,
    chunk_size: int,
    memory_budget: int,
) -> None:
    # Invariant 8: keys a dict treats as equal (1, 1.0, True, 1+0j, Decimal(1),
    # Fraction(1); tuples and frozensets of them) reduce as one key, on every executor and
    # whatever the partitions, chunks and spills.
    stats = aiomr.JobStats()

    async def job() -> dict[Any, int]:
        return await aiomr.map_reduce_by_key(
            keys,
            _count,
            operator.add,
            executor=key_executors[executor],
            partitions=partitions,
            chunk_size=chunk_size,
            memory_budget=memory_budget,
            stats=stats,
        )

    counts = asyncio.run(job())
    expected = collections.Counter(keys)
    assert len(counts) == len(expected)
    assert counts == expected
    assert stats.records == stats.records_reduced + stats.records_skipped == len(keys)
