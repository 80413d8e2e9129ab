"""Accumulate state by key under a memory budget, spilling sorted runs to disk beyond it.

This is the reduce side of the shuffle, and it runs inside worker processes: plain,
synchronous code. `KeyedStore` merges ``(key, accumulator)`` pairs into a dict. When the
estimated size of the dict passes ``memory_budget`` bytes, the whole dict is written to a
temporary file as one *sorted run* and cleared. At the end, `KeyedStore.groups` merges
the runs and the in-memory remainder like an external merge sort, and hands out each key once
with a lazy iterator over its partial accumulators (one per run it appears in).

Why sorted runs
    Sorting a run by a sort key lets the final merge stream: a heap holds one record per run,
    so all partials of a key arrive next to each other and nothing needs a second dict. With
    ``order="hash"`` the sort key is `aiomr._keyed.hashing.stable_hash` (cheap, any hashable
    key, told apart by equality where hashes collide, so keys need no order); with
    ``order="key"`` it is the key itself, which yields the groups in ascending key order, and
    every run and merge checks that the keys are totally ordered (`aiomr._keyed.order`). The
    runs go into one file, merged back in passes past a fan-in: `aiomr._keyed.spill_file`.

The memory estimate
    Key state is sized with `aiomr._keyed.sizes.estimate_size`: a budget, not an audit. A
    spill also briefly holds a sorted list of the dict's items.
"""

from __future__ import annotations

import contextlib
import inspect
import operator
import sys
import weakref
from collections.abc import Callable, Generator, Hashable, Iterable, Iterator
from typing import Any, Generic, Literal, TypeVar

from .hashing import stable_hash, stable_hashes
from .order import check_ascending, sort_records
from .sizes import ATOMIC as _ATOMIC
from .sizes import EMPTY_LIST_SIZE as _EMPTY_LIST_SIZE
from .sizes import ENTRY_SIZE as _ENTRY_SIZE
from .sizes import bulk_size, estimate_size
from .spill_file import SpillFile

__all__ = ["KeyedStore"]

_NUMBERS = frozenset({int, float})
_STRETCH = 4096
"""Pairs the bulk loops (`KeyedStore._insert_new`, `KeyedStore._add_numbers`) add between
two looks at the memory budget."""
_STRETCH_ROOM = 4 << 20
"""Spare budget below which the bulk loops leave the pairs to the general loop, which looks
at the budget after every pair."""

K = TypeVar("K", bound=Hashable)
A = TypeVar("A")

_MISSING: Any = object()
_SEALED = "cannot add to a KeyedStore that is closed or being read"


class KeyedStore(Generic[K, A]):
    """Merge accumulators by key within ``memory_budget`` bytes, spilling to disk beyond it.

        with KeyedStore(operator.add, memory_budget=1 << 20) as store:
            store.add_items([("a", 1), ("b", 2), ("a", 3)])
            assert dict(store.items()) == {"a": 4, "b": 2}

    Args:
        combine: ``(existing, new) -> merged`` for two accumulators of one key; ``None``
            groups instead: every accumulator is a list of values, and the store extends the
            lists in place (it takes ownership of the lists passed to `add`).
        memory_budget: bytes of estimated key state held before a spill to disk.
        directory: where the private temporary directory goes; the system default if None.
        order: ``"hash"`` (groups in no promised order, the same for the same input) or
            ``"key"`` (ascending keys, which must be totally ordered: each run and merge
            checks, see `aiomr._keyed.order`).

    A store is read once, by `groups` or `items`; reading it to the end, `close` or leaving
    the ``with`` block removes its temporary files. A key's accumulators are combined, and its
    values listed, in the order they were added.
    """

    def __init__(
        self,
        combine: Callable[[A, A], A] | None,
        *,
        memory_budget: int,
        directory: str | None = None,
        order: Literal["hash", "key"] = "hash",
        _hash: Callable[[Any], Any] = stable_hash,  # tests inject colliding ones
    ) -> None:
        if combine is not None and not callable(combine):
            raise TypeError(f"combine must be callable or None, got {type(combine).__qualname__}")
        if isinstance(memory_budget, bool) or not isinstance(memory_budget, int):
            raise TypeError(f"memory_budget must be an int, got {memory_budget!r}")
        if memory_budget < 1:
            raise ValueError("memory_budget must be >= 1")
        if order not in ("hash", "key"):
            raise ValueError(f"order must be 'hash' or 'key', got {order!r}")
        self._combine = combine
        self._budget = memory_budget
        self._order = order
        self._hash = _hash
        self._data: dict[Any, Any] = {}
        self._size = 0
        self._runs = SpillFile(
            memory_budget=memory_budget, directory=directory, ordered=order == "key"
        )
        self._sealed = False
        self._active: weakref.ref[Generator[Any, None, None]] | None = None
        self.spills = 0
        """Times the in-memory state was written out as a run."""
        self.spilled_bytes = 0
        """Bytes those runs took on disk."""

    def __enter__(self) -> KeyedStore[K, A]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add(self, key: K, acc: A) -> None:
        """Merge ``acc`` into the state of ``key``; spill if the budget is exceeded."""
        if self._sealed:
            raise ValueError(_SEALED)
        data = self._data
        old = data.get(key, _MISSING)
        if old is _MISSING:
            data[key] = acc
            self._size += estimate_size(key) + estimate_size(acc) + _ENTRY_SIZE
        elif self._combine is None:
            old.extend(acc)
            self._size += estimate_size(acc) - _EMPTY_LIST_SIZE
        else:
            before = estimate_size(old)  # before combine: it may update ``old`` in place
            new = data[key] = self._combine(old, acc)
            self._size += estimate_size(new) - before
        if self._size > self._budget:
            self._spill()

    def add_items(self, items: Iterable[tuple[K, A]]) -> None:
        """Add every ``(key, acc)`` pair of ``items``; a key may come more than once."""
        pairs = list(items)
        self._merge([key for key, _ in pairs], [acc for _, acc in pairs], 0)

    def add_section(self, keys: list[K], accs: list[A]) -> None:
        """Add ``accs[i]`` to the state of ``keys[i]`` for every ``i``; no key comes twice.

        The reduce side's entry: one partition of one map output, whose keys are distinct
        (they were one dict's). While the store holds no key, the section's keys are all
        new, so stretches of it go into the dict with one `dict.update` each, in C: the
        first map output a reduce task reads costs next to nothing.
        """
        if self._sealed:
            raise ValueError(_SEALED)
        if len(keys) != len(accs):
            raise ValueError(f"{len(keys)} keys but {len(accs)} accumulators")
        start = 0 if self._data else self._insert_new(keys, accs)
        if start < len(keys):
            self._merge(keys, accs, start)

    def _insert_new(self, keys: list[K], accs: list[A]) -> int:
        """Put distinct keys that the store does not hold into its dict, a stretch at a time
        while the budget has `_STRETCH_ROOM` to spare; return how many were put.

        A stretch of large accumulators can pass the budget: the store then spills at once,
        and the stretches after it start a new dict (their keys are still new to it).
        """
        done = 0
        while done < len(keys) and self._budget - self._size >= _STRETCH_ROOM:
            stop = done + _STRETCH
            new_keys, new_accs = keys[done:stop], accs[done:stop]
            self._data.update(zip(new_keys, new_accs, strict=True))
            self._size += bulk_size(new_keys) + bulk_size(new_accs)
            self._size += _ENTRY_SIZE * len(new_keys)
            done += len(new_keys)
            if self._size > self._budget:
                self._spill()
        return done

    def _merge(self, keys: list[K], accs: list[A], start: int) -> None:
        """Merge ``accs[i]`` into the state of ``keys[i]`` for ``i`` from ``start`` on.

        `add` inlined for a combining store: this loop runs once per key per map output,
        so a method call and two `estimate_size` calls per pair were most of the reduce
        side's time. Atomic keys and accumulators (words and counts) are sized with
        ``sys.getsizeof`` directly; everything else goes through `estimate_size`.
        """
        if self._sealed:
            raise ValueError(_SEALED)
        if self._combine is None:
            add = self.add
            for key, acc in zip(keys[start:], accs[start:], strict=True):
                add(key, acc)
            return
        if self._combine is operator.add:
            start += self._add_numbers(keys, accs, start)
            if start == len(keys):
                return
        combine, budget, getsizeof, atomic = self._combine, self._budget, sys.getsizeof, _ATOMIC
        data = self._data
        get = data.get
        for key, acc in zip(keys[start:], accs[start:], strict=True):
            old = get(key, _MISSING)
            if old is _MISSING:
                data[key] = acc
                size = getsizeof(key) if type(key) in atomic else estimate_size(key)
                size += getsizeof(acc) if type(acc) in atomic else estimate_size(acc)
                self._size += size + _ENTRY_SIZE
            else:
                before = getsizeof(old) if type(old) in atomic else estimate_size(old)
                new = data[key] = combine(old, acc)
                after = getsizeof(new) if type(new) in atomic else estimate_size(new)
                self._size += after - before
            if self._size > budget:
                self._spill()
                data = self._data  # the spill starts a new dict
                get = data.get

    def _add_numbers(self, keys: list[K], accs: list[A], start: int) -> int:
        """`_merge` for sums of numbers, the commonest reduce; return how many pairs from
        ``start`` on it added (the caller adds the rest).

        When every value is an ``int`` or a ``float`` and the combine is ``operator.add``,
        ``old + value`` is inlined and the keys each stretch of `_STRETCH` pairs added
        are sized in bulk, in C. A stretch runs only while the budget has `_STRETCH_ROOM`
        bytes to spare, so a tight budget is still checked after every pair; a sum's own
        growth (four bytes per thirty bits of an int) is left out of the budget.
        """
        if not set(map(type, accs)) <= _NUMBERS:
            return 0
        data = self._data
        get = data.get
        fresh: list[Any] = []
        note = fresh.append
        done = start
        while done < len(keys) and self._budget - self._size >= _STRETCH_ROOM:
            stop = done + _STRETCH
            for key, value in zip(keys[done:stop], accs[done:stop], strict=True):
                old = get(key, _MISSING)
                if old is _MISSING:
                    data[key] = value
                    note(key)
                else:
                    data[key] = old + value
            done = min(stop, len(keys))
            if fresh:
                values = map(data.__getitem__, fresh)
                self._size += bulk_size(fresh) + bulk_size(values) + _ENTRY_SIZE * len(fresh)
                fresh.clear()
        return done - start

    def groups(self) -> Iterator[tuple[K, Iterator[A]]]:
        """Yield each key once with a lazy iterator over its partial accumulators.

        An iterator is valid until the next group is requested (as with
        `itertools.groupby`); whatever of it was not consumed is skipped.
        """
        self._start()
        if self._runs:
            return self._track(self._merged_groups())
        return self._track(self._single_groups(self._memory_items()))

    def items(self) -> Iterator[tuple[K, A]]:
        """Yield each key once with its accumulators folded by ``combine`` (or concatenated)."""
        self._start()
        if self._runs:
            return self._track(self._fold(self._merged_groups()))
        return self._track(self._memory_items())

    def close(self) -> None:
        """Stop any reading in progress and remove every temporary file; idempotent."""
        reader = self._active() if self._active is not None else None
        self._active = None
        # A reader closing its own store (from combine) is running: its finally cleans up.
        if reader is not None and inspect.getgeneratorstate(reader) != inspect.GEN_RUNNING:
            reader.close()
        self._release()

    def _start(self) -> None:
        if self._sealed:
            raise ValueError("a KeyedStore is read once, and this one is closed or being read")
        self._sealed = True

    def _track(self, reader: Generator[Any, None, None]) -> Generator[Any, None, None]:
        self._active = weakref.ref(reader)
        return reader

    def _release(self) -> None:
        self._sealed = True
        self._data, self._size = {}, 0
        self._runs.discard()  # closes the files, removes them and the directory

    def _records(self) -> list[tuple[Any, Any, Any]]:
        """Return the in-memory state as records sorted by sort key.

        Sorted by key, the keys are checked to be totally ordered (`check_ascending`):
        a sort of keys that are not returns some order without a word.
        """
        data = self._data
        if self._order == "key":
            records = list(zip(data, data, data.values(), strict=True))
            sort_records(records)
            check_ascending([record[0] for record in records])
            return records
        keys = list(data)
        hashes = stable_hashes(keys) if self._hash is stable_hash else map(self._hash, keys)
        records = list(zip(hashes, keys, data.values(), strict=True))
        sort_records(records)
        return records

    def _spill(self) -> None:
        self.spilled_bytes += self._runs.write(self._records())
        self.spills += 1
        self._data, self._size = {}, 0

    def _remainder(self) -> list[tuple[Any, Any, Any]]:
        """The in-memory state as records, handed over to the final merge."""
        records = self._records()
        self._data = {}
        return records

    def _memory_items(self) -> Generator[tuple[Any, Any], None, None]:
        # Without runs nothing needs merging: hash order may be any order, so dict order it is.
        try:
            if self._order == "key":
                for _, key, acc in self._records():
                    yield key, acc
            else:
                yield from self._data.items()
        finally:
            self._release()

    @staticmethod
    def _single_groups(
        pairs: Generator[tuple[Any, Any], None, None],
    ) -> Generator[tuple[Any, Iterator[Any]], None, None]:
        with contextlib.closing(pairs):
            for key, acc in pairs:
                yield key, iter((acc,))

    def _merged_groups(self) -> Generator[tuple[Any, Iterator[Any]], None, None]:
        try:
            yield from self._runs.groups(self._remainder if self._data else None)
        finally:
            self._release()

    def _fold(
        self, groups: Generator[tuple[Any, Iterator[Any]], None, None]
    ) -> Generator[tuple[Any, Any], None, None]:
        combine = self._combine
        with contextlib.closing(groups):
            for key, accs in groups:
                acc = next(accs)
                if combine is None:
                    for more in accs:
                        acc.extend(more)  # the first list is the store's own: extend in place
                else:
                    for more in accs:
                        acc = combine(acc, more)
                yield key, acc
