"""The map-side combiner: map a chunk's records and combine their pairs by key in one dict.

`absorb` is the hot loop of every key-based job: a map task (`aiomr._keyed.shuffle.map_keyed`)
runs it over its chunk, so that one entry per distinct key, not one per pair, reaches the
shuffle. It checks each pair only as far as unpacking it; a pair that is not one, or whose key
cannot be hashed, is explained (`MapperOutputError`) only once the loop has failed on it.
`Guard` runs it one record at a time for ``on_error="skip"`` and ``"collect"``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, cast

from .._exceptions import MapperOutputError
from .._worker.blame import note_record
from .._worker.envelope import Skipped
from .order import short_repr
from .specs import FoldByKey, KeyedSpec, ReduceByKey

__all__ = ["Guard", "absorb"]

_IMMUTABLE = (int, float, complex, str, bytes, bool, tuple, frozenset, type(None))


def _bad_pair(item: Any, record: Any, position: int) -> MapperOutputError | None:
    """Explain why ``item`` is not a usable pair, or return None if it is one."""
    where = f"for record {position} ({short_repr(record)})"
    if not isinstance(item, tuple | list) or len(item) != 2:
        return MapperOutputError(
            f"the mapper must yield (key, value) pairs, but {where} it yielded {short_repr(item)}"
        )
    try:
        hash(item[0])
    except TypeError:
        return MapperOutputError(
            f"the mapper yielded an unhashable key {short_repr(item[0])} "
            f"({type(item[0]).__qualname__}) {where}"
        )
    return None


def _as_pair(item: Any) -> tuple[Any, Any]:
    """Accept a two-item list as a pair; raise `TypeError` for anything else not a 2-tuple.

    Only tuples take the fast path: a two-character string would otherwise unpack into a
    "pair" silently. The caller turns the `TypeError` into a message that names the record.
    """
    if type(item) is list and len(item) == 2:
        return (item[0], item[1])
    raise TypeError("not a (key, value) pair")


_NOTHING: Any = object()


def absorb(
    spec: KeyedSpec,
    combined: dict[Any, Any],
    mapper: Callable[[Any], Iterable[Any]],
    blocks: Iterable[Sequence[Any]],
    start: int,
) -> int:
    """Map the records of ``blocks`` and combine their pairs into ``combined``; return how
    many records were read.

    The hot loop of every key-based job. Each form has its own loop so that nothing but the
    mapper call, one type check and the dict update runs per pair. Records come in blocks
    (a chunk, or a split's lines block by block) and no position is counted per record: on
    an error, what the block's iterator has left tells where the record was (counting with
    `enumerate` cost some 4% of a job's time per line).
    """
    first = start  # the position of the current block's first record
    block: Sequence[Any] = ()
    rest: Iterator[Any] = iter(block)
    record: Any = None
    item: Any = _NOTHING
    try:
        if isinstance(spec, ReduceByKey) and spec.reducer is operator.add:
            # The common sum: `+` inline and one lookup save a call per pair (~5% of the loop).
            get = combined.get
            for block in blocks:
                rest = iter(block)
                for record in rest:
                    for item in mapper(record):
                        if type(item) is not tuple:
                            item = _as_pair(item)
                        key, value = item
                        old = get(key, _NOTHING)
                        combined[key] = value if old is _NOTHING else old + value
                first += len(block)
        elif isinstance(spec, ReduceByKey):
            reducer = spec.reducer
            for block in blocks:
                rest = iter(block)
                for record in rest:
                    for item in mapper(record):
                        if type(item) is not tuple:
                            item = _as_pair(item)
                        key, value = item
                        if key in combined:
                            combined[key] = reducer(combined[key], value)
                        else:
                            combined[key] = value
                first += len(block)
        elif isinstance(spec, FoldByKey):
            binop = spec.binop
            shared = spec.initial_factory is None and isinstance(spec.initial, _IMMUTABLE)
            initial = spec.initial
            for block in blocks:
                rest = iter(block)
                for record in rest:
                    for item in mapper(record):
                        if type(item) is not tuple:
                            item = _as_pair(item)
                        key, value = item
                        if key in combined:
                            combined[key] = binop(combined[key], value)
                        else:
                            fresh = initial if shared else spec.new_accumulator()
                            combined[key] = binop(fresh, value)
                first += len(block)
        else:
            for block in blocks:
                rest = iter(block)
                for record in rest:
                    for item in mapper(record):
                        if type(item) is not tuple:
                            item = _as_pair(item)
                        key, value = item
                        if key in combined:
                            combined[key].append(value)
                        else:
                            combined[key] = [value]
                first += len(block)
    except Exception as exc:
        # An error in the user's code is re-raised as it is; a bad pair is explained. The
        # last item unpacked tells them apart: `_bad_pair` finds nothing wrong with a good
        # one (the mapper failed after it, or the reducer did). Either way the error notes
        # the record it was raised at (`aiomr._worker.blame`).
        position = first + len(block) - operator.length_hint(rest) - 1
        problem = None
        if isinstance(exc, TypeError | ValueError) and not isinstance(exc, MapperOutputError):
            problem = None if item is _NOTHING else _bad_pair(item, record, position)
        if problem is None:
            note_record(exc, position)
            raise
        note_record(problem, position)
        raise problem from exc
    return first - start


def _replay(pairs: list[Any]) -> Callable[[Any], list[Any]]:
    return lambda _record: pairs


class Guard:
    """Map records one by one, leaving out those the parser or the mapper fails on.

    For ``on_error="skip"`` and ``"collect"``. A record contributes all of its pairs or none:
    its pairs are gathered before any is combined, so a mapper failing halfway through a
    record's pairs leaves no trace of it. Errors in the pairs themselves (not a pair, a key
    that cannot be hashed) are the job's code at fault, not the record's, and still raise.
    """

    def __init__(
        self,
        parser: Callable[[Any], Any] | None = None,
        where: Callable[[int, Any], str] | None = None,
    ) -> None:
        self.parser = parser
        self.where = where
        self.skipped: list[Skipped] = []

    def absorb(
        self,
        spec: KeyedSpec,
        combined: dict[Any, Any],
        records: Iterable[Any],
        start: int,
    ) -> int:
        """Like `absorb`, one record at a time; return how many records were read."""
        mapper, parser = plain_mapper(spec), self.parser
        count = 0
        for index, raw in enumerate(records):
            count += 1
            try:
                record = raw if parser is None else parser(raw)
                pairs = list(mapper(record))
            except Exception as exc:
                self.skipped.append(Skipped.of(index, raw, exc, self.where))
                continue
            absorb(spec, combined, _replay(pairs), ((record,),), start + index)
        return count


def plain_mapper(spec: KeyedSpec) -> Callable[[Any], Iterable[tuple[Any, Any]]]:
    """The spec's mapper where a task calls it: a plain function (a coroutine mapper's
    pairs are replayed by one, `aiomr._keyed.tasks.CoroutineMapBody`)."""
    return cast(Callable[[Any], Iterable[tuple[Any, Any]]], spec.mapper)
