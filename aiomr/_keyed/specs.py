"""What a key-based job computes: reduce by key, group by key, or fold by key.

Each spec names the user's functions and how the framework may apply them:

* `ReduceByKey` -- ``reducer(v1, v2) -> v``, associative and commutative (Spark's
  ``reduceByKey``). Applied map-side as the combiner, so a chunk ships one value per distinct
  key.
* `GroupByKey` -- ``reducer(key, values) -> result`` sees every value of a key (Hadoop's
  reduce), for medians, distinct sets, sorted lists. An optional ``combiner(key, values) ->
  value`` shrinks the values map-side.
* `FoldByKey` -- ``binop(acc, value) -> acc`` from an ``initial`` accumulator, and
  ``combine(acc1, acc2) -> acc`` to merge accumulators (Dask's ``foldby``), for accumulators
  of another type than the values, e.g. a mean as ``(sum, count)``.

In all three the mapper turns one record into an iterable of ``(key, value)`` pairs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .._callables import check_function
from .._sentinels import MISSING
from .._types import PairsMapper

__all__ = ["FoldByKey", "GroupByKey", "KeyedSpec", "ReduceByKey"]

R = TypeVar("R")
K = TypeVar("K")
V = TypeVar("V")
A = TypeVar("A")
T = TypeVar("T")


def _check(name: str, fn: object, *, yields: bool = False, coroutines: bool = False) -> None:
    check_function(name, fn, yields=yields, coroutines=coroutines)  # see aiomr._callables


@dataclass(frozen=True)
class ReduceByKey(Generic[R, K, V]):
    """Combine all values of a key with ``reducer(v1, v2)``, map-side first.

    Example -- a word count:

        spec = aiomr.ReduceByKey(lambda line: ((w, 1) for w in line.split()), operator.add)

    ``reducer`` must be associative and commutative: aiomr applies it inside every chunk (as
    the combiner), in every partition, and across spilled runs, in no fixed order.
    """

    mapper: PairsMapper[R, K, V]
    reducer: Callable[[V, V], V]

    def __post_init__(self) -> None:
        _check("mapper", self.mapper, yields=True, coroutines=True)
        _check("reducer", self.reducer)


@dataclass(frozen=True)
class GroupByKey(Generic[R, K, V, T]):
    """Hand every value of a key to ``reducer(key, values)`` and keep what it returns.

    ``values`` is an iterator: values may come from spilled runs on disk and are read lazily,
    so even a key holding a third of all records does not need to fit in memory at once.

    The combiner contract: ``combiner(key, values) -> value`` must return a value that the
    reducer treats exactly like the values it replaces. aiomr may run it zero times, once,
    or many times, on any subset of a key's values (it runs it once per chunk today); the
    result must not depend on that. A sum or a min qualifies; a mean or a count of values
    does not (use `FoldByKey` for those).
    """

    mapper: PairsMapper[R, K, V]
    reducer: Callable[[K, Iterator[V]], T]
    combiner: Callable[[K, list[V]], V] | None = None

    def __post_init__(self) -> None:
        _check("mapper", self.mapper, yields=True, coroutines=True)
        _check("reducer", self.reducer)
        if self.combiner is not None:
            _check("combiner", self.combiner)


@dataclass(frozen=True)
class FoldByKey(Generic[R, K, V, A]):
    """Fold each key's values into an accumulator, then merge accumulators across chunks.

    Example -- the mean value per key, as ``(sum, count)``:

        spec = aiomr.FoldByKey(
            mapper,
            binop=lambda acc, v: (acc[0] + v, acc[1] + 1),
            combine=lambda a, b: (a[0] + b[0], a[1] + b[1]),
            initial=(0, 0),
        )

    Each chunk starts every key from ``initial`` (copied, so a mutable initial such as a list
    is never shared) or from ``initial_factory()``. ``initial`` must therefore be an identity
    of ``combine``, as in Dask's ``foldby``; ``combine`` must be associative and commutative.
    """

    mapper: PairsMapper[R, K, V]
    binop: Callable[[A, V], A]
    combine: Callable[[A, A], A]
    initial: Any = MISSING
    initial_factory: Callable[[], A] | None = field(default=None)

    def __post_init__(self) -> None:
        _check("mapper", self.mapper, yields=True, coroutines=True)
        _check("binop", self.binop)
        _check("combine", self.combine)
        if (self.initial is MISSING) == (self.initial_factory is None):
            raise TypeError("FoldByKey needs exactly one of initial= and initial_factory=")
        if self.initial_factory is not None:
            _check("initial_factory", self.initial_factory)

    def new_accumulator(self) -> A:
        """Return a fresh initial accumulator."""
        if self.initial_factory is not None:
            return self.initial_factory()
        initial: A = self.initial
        return copy.copy(initial)


KeyedSpec = (
    ReduceByKey[Any, Any, Any] | GroupByKey[Any, Any, Any, Any] | FoldByKey[Any, Any, Any, Any]
)
"""Any of the three key-based job descriptions."""
