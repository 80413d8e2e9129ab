"""Keys in ascending order, checked: what ``sort=True`` relies on.

Sorting and merging by key are correct only if ``<`` is a total order on the keys. Python
sorts whatever it is given without complaint when it is not: frozensets (ordered by
inclusion), floats with a NaN, tuples holding either compare ``False`` both ways, so a sort
leaves equal keys apart and a merge of sorted runs hands the same key out twice, each time
with part of its values. Mixed types (``1`` and ``"a"``) at least raise, but Python's
message names neither key.

So every sequence of keys that comes out of a sort or a merge is checked as it goes: each key
must be less than the next (``<``), or, where a key may come more than once (a merge of runs,
a class-based job's output), less than or equal to it (``==``). A sequence that passes is a
chain, so all of its keys are pairwise ordered (``<`` is transitive for every type worth
sorting), and the sort or merge that produced it was right. One that fails raises a
`TypeError` naming two keys, before any pair built on the wrong order leaves the worker. The
check costs one comparison per key, in C where the whole sequence is at hand.
"""

from __future__ import annotations

import heapq
import itertools
import operator
from collections.abc import Iterable, Iterator
from operator import itemgetter
from typing import Any

__all__ = [
    "ascending_pairs",
    "check_ascending",
    "merge_ascending",
    "disorder",
    "follows",
    "short_repr",
    "sort_records",
    "unorderable",
]

_REPR_LIMIT = 80
_START: Any = object()
_NEEDS = "sorting by key (sort=True) needs keys in a total order"


def short_repr(value: Any) -> str:
    """Return ``repr(value)``, cut to `_REPR_LIMIT` characters, for messages.

    A repr that fails (an int too long for `sys.set_int_max_str_digits`, a broken
    ``__repr__``) names the type instead: a message must never fail to be written.
    """
    try:
        text = repr(value)
    except Exception:
        if isinstance(value, int):
            return f"<int of {value.bit_length()} bits>"
        return f"<{type(value).__qualname__} object>"
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."


def unorderable(keys: list[Any]) -> TypeError:
    """Build the error for keys that cannot be compared at all, naming two culprits.

    Tries every pair, so callers pass few keys: the heads of a merge, or one failed comparison.
    """
    for i, left in enumerate(keys):
        for right in keys[i + 1 :]:
            try:
                left < right  # noqa: B015 - only whether the comparison raises matters
                right < left  # noqa: B015
            except TypeError:
                return TypeError(
                    f"{_NEEDS}, but {short_repr(left)} and {short_repr(right)} cannot be compared"
                )
    return TypeError(f"{_NEEDS}, and some cannot be compared")


def disorder(left: Any, right: Any) -> TypeError:
    """Build the error for two keys that compare but are not ordered."""
    try:
        equal = bool(left == right)
    except Exception:
        equal = False
    why = (
        "they are equal, yet were held apart (their hashes differ)"
        if equal
        else "neither is less than the other, and they are not equal"
    )
    return TypeError(f"{_NEEDS}, but {short_repr(left)} and {short_repr(right)} are not: {why}")


def follows(last: Any, key: Any) -> None:
    """Raise unless ``key`` may come right after ``last`` in a merge: ``last <= key``."""
    if key is last:
        return
    try:
        if last < key or last == key:
            return
    except TypeError:
        raise unorderable([last, key]) from None
    raise disorder(last, key)


def check_ascending(keys: list[Any]) -> None:
    """Raise unless each of ``keys`` is less than the next: distinct keys, totally ordered."""
    try:
        if all(map(operator.lt, keys, itertools.islice(keys, 1, None))):
            return
    except TypeError:
        pass
    for left, right in itertools.pairwise(keys):
        try:
            if left < right:
                continue
        except TypeError:
            raise unorderable([left, right]) from None
        raise disorder(left, right)
    raise unorderable([])  # a comparison that failed once and then passed


def ascending_pairs(pairs: Iterable[tuple[Any, Any]]) -> Iterator[tuple[Any, Any]]:
    """Yield ``pairs``, raising before the first whose key is less than its predecessor's."""
    iterator = iter(pairs)
    for first in iterator:
        yield first
        last = first[0]
        for pair in iterator:
            key = pair[0]
            follows(last, key)
            yield pair
            last = key


def merge_ascending(streams: list[Iterator[tuple[Any, Any]]]) -> Iterator[tuple[Any, Any]]:
    """Merge streams of pairs that are each ascending by key into one ascending stream.

    `heapq.merge`, but keys that cannot be compared are named, and each pair is checked to
    follow the one before (`follows`) before it is yielded; ties keep stream order.
    """
    heap: list[tuple[Any, int, tuple[Any, Any], Iterator[tuple[Any, Any]]]] = []
    for index, stream in enumerate(streams):
        for pair in stream:
            heap.append((pair[0], index, pair, stream))
            break
    try:
        heapq.heapify(heap)
    except TypeError as exc:
        raise unorderable([entry[0] for entry in heap]) from exc
    last: Any = _START
    while heap:
        key, index, pair, stream = heap[0]
        if last is not _START:
            follows(last, key)
        yield pair
        last = key
        following = next(stream, None)
        if following is None:
            heapq.heappop(heap)
            continue
        try:
            heapq.heapreplace(heap, (following[0], index, following, stream))
        except TypeError as exc:
            raise unorderable([following[0], *(entry[0] for entry in heap)]) from exc


class _Probe:
    """Sort wrapper that reports which two keys failed to compare."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __lt__(self, other: _Probe) -> bool:
        try:
            return bool(self.key < other.key)
        except TypeError:
            raise unorderable([self.key, other.key]) from None


def sort_records(records: list[tuple[Any, ...]]) -> None:
    """Sort records by their sort key (item 0), never comparing keys or accumulators."""
    try:
        records.sort(key=itemgetter(0))
    except TypeError as exc:
        # Sorting is deterministic, so sorting probes repeats the comparisons up to the one that
        # failed and names its keys; the fast path above pays nothing for this.
        try:
            sorted(_Probe(record[0]) for record in records)
        except TypeError as named:
            raise named from exc
        raise unorderable([]) from exc  # a comparison that failed once and then passed
