"""The partitions' result files, read back in the caller: as stored, merged in key order,
or into one dict that notices equal keys.

Each reduce task writes its partition's ``(key, result)`` pairs as pickled lists
(`aiomr._keyed.shuffle.reduce_partition`); these run on a helper thread, off the event loop.
"""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Iterable, Iterator
from typing import Any

from .._exceptions import MapperOutputError
from .order import merge_ascending, short_repr

__all__ = ["as_mapping", "iter_result_file", "iter_sorted"]


def iter_result_file(path: str) -> Iterator[list[tuple[Any, Any]]]:
    """Yield the pickled batches of a result file (runs in a helper thread)."""
    with open(path, "rb") as f:
        while True:
            try:
                yield pickle.load(f)
            except EOFError:
                return


def as_mapping(batches: Iterable[list[tuple[Any, Any]]]) -> dict[Any, Any]:
    """Collect result batches into one dict; raise if two of their keys are equal.

    Equal keys hash alike and meet in one partition, where they reduce as one; two pairs
    with equal keys mean two keys that are equal but hashed apart, each reduced with part of
    the values. ``dict.update`` would silently keep one of them: the count of keys tells.
    """
    mapping: dict[Any, Any] = {}
    for batch in batches:
        before = len(mapping)
        mapping.update(batch)
        if len(mapping) - before != len(batch):
            raise _reduced_apart(mapping, before, batch)
    return mapping


def _reduced_apart(
    mapping: dict[Any, Any], before: int, batch: list[tuple[Any, Any]]
) -> MapperOutputError:
    """Name two equal keys among the first ``before`` keys of ``mapping`` and ``batch``."""
    # A dict keeps its keys in insertion order and updating a key leaves it in place, so
    # the first ``before`` keys are the ones the earlier batches put there.
    seen = {key: key for key in itertools.islice(mapping, before)}
    first, second = None, None
    for key, _ in batch:
        if key in seen:
            first, second = seen[key], key
            break
        seen[key] = key
    return MapperOutputError(
        f"the keys {short_repr(first)} ({type(first).__qualname__}) and {short_repr(second)} "
        f"({type(second).__qualname__}) are equal, but were reduced apart, each with part "
        "of the values: keys go to their partition by a hash of their value (numbers by "
        "value, str and bytes by content, tuples and frozensets by their items, other types "
        "by their pickle), and these two hash differently; make equal keys one type, or "
        "give their type a pickle that equal values share"
    )


def iter_sorted(paths: list[str]) -> Iterator[tuple[Any, Any]]:
    """Merge result files that are each sorted by key into one ascending stream.

    Keys of different partitions meet here for the first time: the stream raises before a
    pair that does not follow its predecessor (`aiomr._keyed.order.merge_ascending`).
    """
    return merge_ascending([itertools.chain.from_iterable(iter_result_file(p)) for p in paths])
