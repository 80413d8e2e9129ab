"""The spilling key store: results equal a plain group-by, whatever the budget, order or hash."""

from __future__ import annotations

import contextlib
import gc
import itertools
import operator
import os
import sys
import tracemalloc
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiomr._keyed.hashing import stable_hash
from aiomr._keyed.sizes import estimate_size
from aiomr._keyed.spill import KeyedStore
from aiomr._keyed.spill_file import MAX_FAN_IN, MIN_BATCH_BYTES

HASHES: dict[str, Callable[[Any], int]] = {
    "stable": stable_hash,
    "three": lambda key: stable_hash(key) % 3,  # collisions everywhere
    "constant": lambda key: 0,  # every key collides with every other
}


def naive(pairs: list[tuple[Any, Any]], grouped: bool) -> dict[Any, Any]:
    """The answer the store must give: a dict fold in add order."""
    result: dict[Any, Any] = {}
    for key, value in pairs:
        if grouped:
            result.setdefault(key, []).append(value)
        else:
            result[key] = result[key] + value if key in result else value
    return result


def fill(store: KeyedStore[Any, Any], pairs: list[tuple[Any, Any]], grouped: bool) -> None:
    for key, value in pairs:
        store.add(key, [value] if grouped else value)


def check_items(
    pairs: list[tuple[Any, Any]],
    *,
    grouped: bool,
    budget: int,
    order: Any,
    hash_name: str = "stable",
    directory: Path,
) -> list[tuple[Any, Any]]:
    store: KeyedStore[Any, Any] = KeyedStore(
        None if grouped else operator.add,
        memory_budget=budget,
        directory=str(directory),
        order=order,
        _hash=HASHES[hash_name],
    )
    fill(store, pairs, grouped)
    items = list(store.items())
    expected = naive(pairs, grouped)
    assert len(items) == len(expected)  # each key exactly once
    assert dict(items) == expected  # values in add order, too
    assert os.listdir(directory) == []
    return items


small_keys = st.one_of(
    st.integers(-3, 3),
    # Equal across types, so one key each: 1, 0, 2 and 0.5.
    st.sampled_from([1, 1.0, True, 1 + 0j, Decimal(1), Fraction(1), 0, 0.0, -0.0, False]),
    st.sampled_from([2.0, 2 + 0j, Decimal("2.00"), 0.5, Fraction(1, 2), Decimal("0.5")]),
    st.text(alphabet="ab", max_size=2),
    st.tuples(st.integers(0, 2), st.text(alphabet="xy", max_size=1)),
)
budgets = st.one_of(st.sampled_from([1, 64, 300]), st.integers(1, 5000), st.just(1 << 30))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pairs=st.lists(st.tuples(small_keys, st.integers(-100, 100)), max_size=150),
    grouped=st.booleans(),
    budget=budgets,
    hash_name=st.sampled_from(sorted(HASHES)),
)
def test_hash_order_equals_a_plain_group_by(
    pairs: list[tuple[Any, int]], grouped: bool, budget: int, hash_name: str, tmp_path_factory: Any
) -> None:
    directory = tmp_path_factory.mktemp("spill")
    check_items(
        pairs,
        grouped=grouped,
        budget=budget,
        order="hash",
        hash_name=hash_name,
        directory=directory,
    )


orderable_keys = st.one_of(
    st.lists(st.tuples(st.integers(-20, 20), st.integers(0, 9)), max_size=150),
    st.lists(st.tuples(st.text(alphabet="abc", max_size=3), st.integers(0, 9)), max_size=150),
    st.lists(
        st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)), st.integers(0, 9)), max_size=150
    ),
    st.lists(  # ints, floats and bools order together; 1, 1.0 and True are one key
        st.tuples(st.sampled_from([0, 1, 1.0, True, False, 2, 2.5, -1.0]), st.integers(0, 9)),
        max_size=150,
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs=orderable_keys, grouped=st.booleans(), budget=budgets)
def test_key_order_equals_a_plain_group_by_in_ascending_order(
    pairs: list[tuple[Any, int]], grouped: bool, budget: int, tmp_path_factory: Any
) -> None:
    directory = tmp_path_factory.mktemp("spill")
    items = check_items(pairs, grouped=grouped, budget=budget, order="key", directory=directory)
    keys = [key for key, _ in items]
    assert all(a < b for a, b in itertools.pairwise(keys))


numbers = st.one_of(
    st.integers(-100, 100),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([0, 0.0, -0.0, 2**70, 0.1, True]),  # a bool is not summed in bulk
    st.just("x"),  # nor a str: the general loop takes over
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pairs=st.lists(st.tuples(small_keys, numbers), max_size=150),
    slices=st.lists(st.integers(1, 60), min_size=1, max_size=8),
    budget=budgets,
    many=st.booleans(),
)
def test_items_added_in_bulk_sum_like_one_by_one(
    pairs: list[tuple[Any, Any]],
    slices: list[int],
    budget: int,
    many: bool,
    tmp_path_factory: Any,
) -> None:
    # add_items sums numbers with its own loop; it must agree with add, value and type alike.
    pairs = [(k, v) for k, v in pairs if not isinstance(v, str)] or pairs
    if many:  # long batches: several looks at the budget within one call
        pairs = pairs * (9000 // max(1, len(pairs)))
    one_by_one = {}
    for key, value in pairs:
        one_by_one[key] = one_by_one[key] + value if key in one_by_one else value
    directory = tmp_path_factory.mktemp("spill")
    store: KeyedStore[Any, Any] = KeyedStore(
        operator.add, memory_budget=budget, directory=str(directory)
    )
    position, cuts = 0, itertools.cycle(slices)
    while position < len(pairs):
        step = next(cuts) * (100 if many else 1)
        store.add_items(pairs[position : position + step])
        position += step
    got = dict(store.items())
    assert got.keys() == one_by_one.keys()
    for key, value in one_by_one.items():
        # Floats summed in another order may differ in the last bits; types never.
        assert type(got[key]) is type(value)
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-6)
        else:
            assert got[key] == value
    assert os.listdir(directory) == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sections=st.lists(st.dictionaries(small_keys, st.integers(-100, 100), max_size=40), max_size=8),
    grouped=st.booleans(),
    budget=budgets,
    order=st.sampled_from(["hash", "key"]),
)
def test_sections_add_like_one_by_one(
    sections: list[dict[Any, int]],
    grouped: bool,
    budget: int,
    order: Any,
    tmp_path_factory: Any,
) -> None:
    # A reduce task adds each map output's section (distinct keys) with add_section; the
    # first one into an empty store goes in whole. Any mix must equal a plain fold.
    if order == "key":
        sections = [{k: v for k, v in s.items() if isinstance(k, int | float)} for s in sections]
    pairs = [pair for section in sections for pair in section.items()]
    directory = tmp_path_factory.mktemp("spill")
    store: KeyedStore[Any, Any] = KeyedStore(
        None if grouped else operator.add,
        memory_budget=budget,
        directory=str(directory),
        order=order,
    )
    for section in sections:
        values = [[v] for v in section.values()] if grouped else list(section.values())
        store.add_section(list(section), values)
    assert dict(store.items()) == naive(pairs, grouped)
    assert os.listdir(directory) == []


@pytest.mark.parametrize("grouped", [False, True])
def test_a_section_into_an_empty_store_spills_when_the_budget_runs_out(
    tmp_path: Path, grouped: bool
) -> None:
    # 200,000 new keys of about 100 bytes each against a 6 MiB budget: the first section's
    # whole-stretch inserts stop while 4 MiB remain and the per-key loop spills the rest.
    keys = [f"k{i:06d}" for i in range(200_000)]
    store: KeyedStore[Any, Any] = KeyedStore(
        None if grouped else operator.add, memory_budget=6 << 20, directory=str(tmp_path)
    )
    for round_ in range(2):
        values: list[Any] = [[i + round_] if grouped else i + round_ for i in range(len(keys))]
        store.add_section(keys, values)
    assert store.spills >= 2
    expected = {key: [i, i + 1] if grouped else 2 * i + 1 for i, key in enumerate(keys)}
    assert dict(store.items()) == expected
    assert os.listdir(tmp_path) == []


def test_a_section_of_large_values_spills_within_the_section(tmp_path: Path) -> None:
    # 4,000 keys, each with a list of 1,000 ints (some 36 KB by the estimate): one
    # stretch of the whole-section insert, far over a 16 MiB budget. The store must spill
    # before add_section returns, not leave the excess to whatever is added next.
    keys = [f"k{i:05d}" for i in range(4000)]
    values = [list(range(1000)) for _ in keys]
    store: KeyedStore[Any, Any] = KeyedStore(None, memory_budget=16 << 20, directory=str(tmp_path))
    store.add_section(keys, values)
    assert store.spills == 1
    assert store._size <= 16 << 20
    assert dict(store.items()) == {key: list(range(1000)) for key in keys}
    assert os.listdir(tmp_path) == []


def test_a_section_needs_one_value_per_key() -> None:
    store: KeyedStore[Any, Any] = KeyedStore(operator.add, memory_budget=1 << 20)
    with pytest.raises(ValueError, match="2 keys but 1 accumulators"):
        store.add_section(["a", "b"], [1])


def test_sums_added_in_bulk_spill_when_the_budget_runs_out(tmp_path: Path) -> None:
    # 300,000 keys of about 100 bytes each against a 5 MiB budget: the bulk loop must hand
    # over to spilling several times, and every sum must survive the merge.
    pairs = [(f"k{i % 300_000}", i % 7 + 0.5 * (i % 2)) for i in range(600_000)]
    store: KeyedStore[Any, Any] = KeyedStore(
        operator.add, memory_budget=5 << 20, directory=str(tmp_path)
    )
    for start in range(0, len(pairs), 50_000):
        store.add_items(pairs[start : start + 50_000])
    assert store.spills >= 3
    expected: dict[str, float] = {}
    for key, value in pairs:
        expected[key] = expected.get(key, 0) + value
    assert dict(store.items()) == expected
    assert os.listdir(tmp_path) == []


def test_budget_one_spills_every_add_and_needs_merge_passes(tmp_path: Path) -> None:
    pairs = [(i % 50, i) for i in range(MAX_FAN_IN**2 + 10)]  # enough runs for two passes
    store: KeyedStore[Any, Any] = KeyedStore(None, memory_budget=1, directory=str(tmp_path))
    fill(store, pairs, grouped=True)
    assert store.spills == len(pairs)
    assert store.spilled_bytes > 0
    assert len(os.listdir(tmp_path)) == 1  # one private directory, holding one file of runs
    assert dict(store.items()) == naive(pairs, grouped=True)
    assert os.listdir(tmp_path) == []


class TestIdentity:
    def test_colliding_keys_stay_separate_groups(self, tmp_path: Path) -> None:
        store: KeyedStore[Any, Any] = KeyedStore(
            operator.add, memory_budget=1, directory=str(tmp_path), _hash=HASHES["constant"]
        )
        pairs = [(key, n) for n in range(3) for key in ("a", "b", (1, "x"), 7, None)]
        fill(store, pairs, grouped=False)
        assert store.spills == len(pairs)
        groups = [(key, list(accs)) for key, accs in store.groups()]
        assert sorted(key for key, _ in groups if isinstance(key, str)) == ["a", "b"]
        assert len(groups) == 5
        assert dict(groups) == {key: [0, 1, 2] for key in ("a", "b", (1, "x"), 7, None)}

    @pytest.mark.parametrize("hash_name", sorted(HASHES))
    def test_equal_keys_in_different_runs_are_one_group(
        self, tmp_path: Path, hash_name: str
    ) -> None:
        store: KeyedStore[Any, Any] = KeyedStore(
            None, memory_budget=1, directory=str(tmp_path), _hash=HASHES[hash_name]
        )
        for key in (1, "z", 1.0, True, "y", 1):
            store.add(key, [repr(key)])
        assert store.spills == 6
        result = dict(store.items())
        assert result == {1: ["1", "1.0", "True", "1"], "z": ["'z'"], "y": ["'y'"]}

    def test_collisions_with_accumulators_out_of_line(self, tmp_path: Path) -> None:
        # Lists above the batch cap are pickled apart from their batch and loaded on demand;
        # setting aside a colliding key must load them, skipping a group must not need to.
        budget = 200_000
        assert budget // 7 > max(MIN_BATCH_BYTES, budget // MAX_FAN_IN)  # a key's share of a run
        pairs = [(i % 7, i) for i in range(30_000)]
        store: KeyedStore[Any, Any] = KeyedStore(
            None, memory_budget=budget, directory=str(tmp_path), _hash=HASHES["three"]
        )
        fill(store, pairs, grouped=True)
        assert store.spills >= 3
        expected = naive(pairs, grouped=True)
        seen = {}
        for n, (key, accs) in enumerate(store.groups()):
            if n % 2 == 0:  # read every other group, skip the rest unread
                seen[key] = list(itertools.chain.from_iterable(accs))
        assert len(seen) == 4
        assert all(expected[key] == values for key, values in seen.items())
        assert os.listdir(tmp_path) == []


class TestLaziness:
    def test_hot_key_streams_one_run_at_a_time(self, tmp_path: Path) -> None:
        records = 300_000

        def value(i: int) -> str:
            return f"{i:>50}"

        store: KeyedStore[Any, Any] = KeyedStore(
            None, memory_budget=2 << 20, directory=str(tmp_path)
        )
        for i in range(records):
            store.add("hot" if i % 3 == 0 else f"k{i % 5000}", [value(i)])
        hot_values = [value(i) for i in range(0, records, 3)]
        hot_bytes = sys.getsizeof(hot_values) + sum(sys.getsizeof(v) for v in hot_values)
        del hot_values
        gc.collect()
        counts = dict.fromkeys(("hot", "other"), 0)
        tracemalloc.start()
        try:
            for key, accs in store.groups():
                for acc in accs:
                    counts["hot" if key == "hot" else "other"] += len(acc)
                    del acc
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert counts == {"hot": records // 3, "other": records - records // 3}
        assert store.spills > 10
        assert peak < hot_bytes / 4

    def test_skipped_and_stale_group_iterators(self, tmp_path: Path) -> None:
        pairs = [(i % 10, i) for i in range(2000)]
        store: KeyedStore[Any, Any] = KeyedStore(
            None, memory_budget=500, directory=str(tmp_path), order="key"
        )
        fill(store, pairs, grouped=True)
        groups = store.groups()
        key0, accs0 = next(groups)
        assert next(accs0) == [0]  # partially consumed, then abandoned
        key1, accs1 = next(groups)
        assert list(accs0) == []  # stale once the next group is requested
        assert (key0, key1) == (0, 1)
        assert list(itertools.chain.from_iterable(accs1)) == list(range(1, 2000, 10))
        rest = [key for key, _ in groups]  # never read at all
        assert rest == list(range(2, 10))
        assert os.listdir(tmp_path) == []

    def test_without_spill_hash_order_is_add_order(self, tmp_path: Path) -> None:
        store: KeyedStore[Any, Any] = KeyedStore(
            operator.add, memory_budget=1 << 30, directory=str(tmp_path)
        )
        store.add_items([("b", 1), ("a", 2), ("b", 3)])
        assert store.spills == 0
        assert [(key, list(accs)) for key, accs in store.groups()] == [("b", [4]), ("a", [2])]
        assert os.listdir(tmp_path) == []  # never created a directory


class TestCleanup:
    @staticmethod
    def spilled(tmp_path: Path, combine: Any = operator.add) -> KeyedStore[int, int]:
        store: KeyedStore[int, int] = KeyedStore(
            combine, memory_budget=200, directory=str(tmp_path)
        )
        store.add_items((i % 100, i) for i in range(1000))
        assert store.spills > 2
        assert os.listdir(tmp_path) != []
        return store

    def test_after_exhaustion(self, tmp_path: Path) -> None:
        store = self.spilled(tmp_path)
        for _ in store.groups():
            pass
        assert os.listdir(tmp_path) == []
        store.close()
        store.close()

    def test_after_close_mid_iteration(self, tmp_path: Path) -> None:
        store = self.spilled(tmp_path)
        items = store.items()
        next(items)
        store.close()
        assert os.listdir(tmp_path) == []
        assert list(items) == []

    def test_after_an_exception_in_combine(self, tmp_path: Path) -> None:
        merging = False
        calls = itertools.count()

        def combine(left: int, right: int) -> int:
            if merging and next(calls) == 300:  # a third of the way through the merge
                raise ZeroDivisionError("boom")
            return left + right

        store = self.spilled(tmp_path, combine)
        merging = True
        items = store.items()
        assert next(items) is not None
        with pytest.raises(ZeroDivisionError, match="boom"):
            list(items)
        assert os.listdir(tmp_path) == []

    @pytest.mark.parametrize("managed", [True, False], ids=["with", "bare"])
    def test_after_an_exception_in_the_consumer(self, tmp_path: Path, managed: bool) -> None:
        def consume(store: KeyedStore[int, int]) -> None:
            with store if managed else contextlib.nullcontext():
                for _key, accs in store.groups():
                    next(accs)
                    raise KeyError("consumer")

        with pytest.raises(KeyError, match="consumer"):
            consume(self.spilled(tmp_path))
        assert os.listdir(tmp_path) == []

    def test_a_dropped_reader_cleans_up(self, tmp_path: Path) -> None:
        store = self.spilled(tmp_path)
        groups = store.groups()
        next(groups)
        del groups
        gc.collect()
        assert os.listdir(tmp_path) == []

    def test_a_dropped_store_cleans_up(self, tmp_path: Path) -> None:
        store = self.spilled(tmp_path)
        del store
        gc.collect()
        assert os.listdir(tmp_path) == []

    def test_read_once(self, tmp_path: Path) -> None:
        store = self.spilled(tmp_path)
        store.items()
        with pytest.raises(ValueError, match="read once"):
            store.groups()
        with pytest.raises(ValueError, match="closed or being read"):
            store.add(1, 1)
        store.close()
        assert os.listdir(tmp_path) == []


MIXED = r"needs keys in a total order, but (1 and 'a'|'a' and 1) cannot be compared"


class TestUnorderableKeys:
    def test_within_one_run(self, tmp_path: Path) -> None:
        store: KeyedStore[Any, Any] = KeyedStore(
            operator.add, memory_budget=200, directory=str(tmp_path), order="key"
        )
        store.add(1, 1)
        with pytest.raises(TypeError, match=MIXED):
            store.add("a", 1)  # goes over the budget: the spill sorts
        assert store.spills == 0
        store.close()
        assert os.listdir(tmp_path) == []

    def test_across_runs(self, tmp_path: Path) -> None:
        store: KeyedStore[Any, Any] = KeyedStore(
            operator.add, memory_budget=1, directory=str(tmp_path), order="key"
        )
        store.add_items([(1, 1), ("a", 1)])  # one key per run: each run sorts
        assert store.spills == 2
        with pytest.raises(TypeError, match=MIXED):
            list(store.items())
        assert os.listdir(tmp_path) == []

    def test_without_spill(self) -> None:
        store: KeyedStore[Any, Any] = KeyedStore(operator.add, memory_budget=1 << 30, order="key")
        store.add_items([((1, "x"), 1), ((1, 2), 1)])
        with pytest.raises(TypeError, match=r"\(1, 'x'\) and \(1, 2\)|\(1, 2\) and \(1, 'x'\)"):
            list(store.items())


NOT_ORDERED = r"needs keys in a total order, but .+ and .+ are not: neither is less than the other"
PARTIAL = {
    "frozensets": [frozenset({1}), frozenset({2}), frozenset({1, 2}), frozenset()],
    "nan": [1.0, float("nan"), 0.5, 2.0],
    "tuples-of-frozensets": [(1, frozenset({1})), (1, frozenset({2})), (0, frozenset())],
}
"""Keys that ``<`` orders only partly: sorting them raises nothing and gets some order."""


class TestPartlyOrderedKeys:
    """A sort or merge by key of keys that are not totally ordered raises, naming two."""

    @pytest.mark.parametrize("keys", PARTIAL.values(), ids=PARTIAL.keys())
    @pytest.mark.parametrize(
        "budget", [1 << 30, 1, 1 << 12], ids=["one-run", "run-per-key", "few-runs"]
    )
    def test_raise_instead_of_repeating_keys(
        self, tmp_path: Path, keys: list[Any], budget: int
    ) -> None:
        pairs = [(key, 1) for key in keys] * 40
        store: KeyedStore[Any, Any] = KeyedStore(
            operator.add, memory_budget=budget, directory=str(tmp_path), order="key"
        )

        def add_and_read() -> list[tuple[Any, Any]]:
            store.add_items(pairs)  # a spill sorts by key
            return list(store.items())  # a merge, or a sort of what no spill took

        with store, pytest.raises(TypeError, match=NOT_ORDERED):
            add_and_read()
        assert os.listdir(tmp_path) == []

    def test_keys_that_meet_only_in_the_merge(self, tmp_path: Path) -> None:
        # Each run alone is in order ({1} < {1, 2}, and {2} < {1, 2}); only the merge of the
        # runs compares {1} with {2}.
        store: KeyedStore[Any, Any] = KeyedStore(
            None, memory_budget=1, directory=str(tmp_path), order="key"
        )
        store.add_items([(frozenset({1}), [1]), (frozenset({1, 2}), [1])])
        store.add_items([(frozenset({2}), [1])])
        assert store.spills >= 2
        with pytest.raises(TypeError, match=NOT_ORDERED) as caught:
            list(store.items())
        assert "frozenset({1})" in str(caught.value) or "frozenset({2})" in str(caught.value)
        assert os.listdir(tmp_path) == []

    def test_in_a_merge_pass(self, tmp_path: Path) -> None:
        keys = [frozenset({i % 7}) for i in range(MAX_FAN_IN * 3)]
        store: KeyedStore[Any, Any] = KeyedStore(
            operator.add, memory_budget=1, directory=str(tmp_path), order="key"
        )
        store.add_items([(key, 1) for key in keys])
        assert store.spills > MAX_FAN_IN  # a merge pass runs before the final merge
        with pytest.raises(TypeError, match=NOT_ORDERED):
            list(store.items())
        assert os.listdir(tmp_path) == []

    @pytest.mark.parametrize("kind", ["frozensets", "tuples-of-frozensets"])
    def test_in_hash_order_they_merge_by_equality(self, tmp_path: Path, kind: str) -> None:
        # Without a key order, runs are merged by hash and grouped by equality: keys need
        # no order at all.
        pairs = [(key, 1) for key in PARTIAL[kind]] * 40
        check_items(pairs, grouped=False, budget=1, order="hash", directory=tmp_path)


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="memory_budget must be >= 1"):
        KeyedStore(None, memory_budget=0)
    with pytest.raises(TypeError, match="memory_budget must be an int"):
        KeyedStore(None, memory_budget=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="order must be 'hash' or 'key'"):
        KeyedStore(None, memory_budget=1, order="value")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="combine must be callable"):
        KeyedStore(3, memory_budget=1)  # type: ignore[arg-type]


class TestEstimateSize:
    def test_flat_objects_are_their_getsizeof(self) -> None:
        for obj in ("word", b"bytes", 10**30, 1.5, None):
            assert estimate_size(obj) == sys.getsizeof(obj)

    @pytest.mark.parametrize(
        "container",
        [
            list(range(10**6, 10**6 + 100_000)),
            tuple(f"value {i}" for i in range(50_000)),
            {i: str(i) for i in range(20_000)},
            frozenset(range(10**6, 10**6 + 30_000)),
            [(i, float(i)) for i in range(40_000)],
        ],
        ids=["list", "tuple", "dict", "frozenset", "nested"],
    )
    def test_large_containers_are_extrapolated_within_a_quarter(self, container: Any) -> None:
        exact = deep_size(container)
        assert 0.75 * exact < estimate_size(container) < 1.25 * exact

    def test_small_containers_are_exact(self) -> None:
        obj = [1000, "abc", (2000, 3000)]
        assert estimate_size(obj) == deep_size(obj)


def deep_size(obj: Any) -> int:
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        return size + sum(deep_size(k) + deep_size(v) for k, v in obj.items())
    if isinstance(obj, list | tuple | frozenset | set):
        return size + sum(deep_size(item) for item in obj)
    return size
