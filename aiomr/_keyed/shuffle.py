"""The shuffle, worker side: combine and partition each chunk, then reduce each partition.

Map tasks (`map_keyed`) turn a chunk of records into ``(key, value)`` pairs, combine
them by key right away (one entry per distinct key per chunk: `aiomr._keyed.combine`), split
the entries into ``partitions`` buckets by `aiomr._keyed.hashing.stable_hash`, and write all
buckets into one file, returning only the file's path and the offset of each bucket. The
caller never sees the pairs: it collects those small descriptions and, once every chunk is
mapped, starts one reduce task per partition.

Reduce tasks (`reduce_partition`) read their bucket from every map file into a
`aiomr._keyed.spill.KeyedStore`, which keeps key state under the memory budget and spills
sorted runs to disk beyond it, then write the partition's final ``(key, result)`` pairs to a
result file that the caller reads or streams. All files live in one per-job directory that
the caller removes when the job ends, however it ends.

Files hold pickled batches (``pickle.HIGHEST_PROTOCOL``): a ``(keys, values)`` pair of
lists per bucket, and lists of `RESULT_BATCH` pairs in result files, so each read or write
crosses into C once per batch rather than once per pair.
"""

from __future__ import annotations

import itertools
import os
import pickle
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from .._exceptions import MapperOutputError
from .._worker.blame import note_no_record
from .combine import Guard, absorb, plain_mapper
from .hashing import NotEqualToItself, refuse_nan, stable_hash, stable_hashes
from .order import ascending_pairs, short_repr, sort_records
from .specs import FoldByKey, GroupByKey, KeyedSpec, ReduceByKey
from .spill import KeyedStore

__all__ = [
    "MapOutput",
    "ReducePlan",
    "ReduceOutput",
    "map_keyed",
    "reduce_partition",
]

RESULT_BATCH = 1024
"""Pairs per pickled batch in result files."""
_NOTHING: Any = object()


class MapOutput(NamedTuple):
    """One map task's output file: where each partition's bucket starts."""

    path: str
    offsets: tuple[int, ...]
    keys: int


class ReduceOutput(NamedTuple):
    """One partition's result file and how many pairs it holds."""

    partition: int
    path: str
    pairs: int
    spills: int


Emit = Callable[[Any, Iterator[Any]], Iterable[tuple[Any, Any]]]
"""A reducer that yields output pairs itself (the class-based `aiomr.Job`)."""


@dataclass(frozen=True)
class ReducePlan:
    """Everything a task needs besides its data; shipped to the workers once per job."""

    spec: KeyedSpec
    partitions: int
    directory: str
    memory_budget: int
    sort: bool
    emit: Emit | None = None
    """Set for class-based jobs: the reducer yields pairs instead of returning a value."""
    emit_combiner: Callable[[Any, list[Any]], list[Any]] | None = None
    """Set for class-based jobs: a combiner returning any number of values for its key."""
    mapper_init: Callable[[], None] | None = None
    mapper_final: Callable[[], Iterable[tuple[Any, Any]]] | None = None
    reducer_init: Callable[[], None] | None = None
    reducer_final: Callable[[], Iterable[tuple[Any, Any]]] | None = None


def _combine_chunk(
    plan: ReducePlan, blocks: Iterable[Sequence[Any]], start: int, guard: Guard | None = None
) -> tuple[dict[Any, Any], int]:
    """Map a chunk and combine its pairs by key (the map-side combiner); count its records."""
    spec = plan.spec
    combined: dict[Any, Any] = {}
    if plan.mapper_init is not None:
        plan.mapper_init()
    if guard is None:
        count = absorb(spec, combined, plain_mapper(spec), blocks, start)
    else:
        count = guard.absorb(spec, combined, itertools.chain.from_iterable(blocks), start)
    if plan.mapper_final is not None:
        final = plan.mapper_final
        try:
            absorb(spec, combined, lambda _: final(), (("<mapper_final>",),), start + count)
        except Exception as exc:
            note_no_record(exc)
            raise
    if plan.emit_combiner is not None:
        many = plan.emit_combiner
        for key, values in combined.items():
            combined[key] = many(key, values)
    elif isinstance(spec, GroupByKey) and spec.combiner is not None:
        combiner = spec.combiner
        for key, values in combined.items():
            combined[key] = [combiner(key, values)]
    return combined, count


def _dump_checked(section: tuple[list[Any], list[Any]], file: Any) -> None:
    try:
        pickle.dump(section, file, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        for key, value in zip(*section, strict=True):
            for role, part in (("key", key), ("value", value)):
                try:
                    pickle.dumps(part, pickle.HIGHEST_PROTOCOL)
                except Exception:
                    raise MapperOutputError(
                        f"the mapper yielded a {role} that cannot be pickled: {short_repr(part)} "
                        f"({type(part).__qualname__}) for key {short_repr(key)}: {exc}"
                    ) from exc
        raise


def _partition(keys: list[Any], values: list[Any], count: int) -> list[tuple[list[Any], list[Any]]]:
    """Split a combined chunk's keys and values by partition, in their order.

    Refuses NaN keys (`MapperOutputError`) whatever the count: with one partition nothing is
    hashed, so the keys are looked at on their own.
    """
    try:
        if count == 1:
            refuse_nan(keys)
            return [(keys, values)]
        sections: list[tuple[list[Any], list[Any]]] = [([], []) for _ in range(count)]
        for key, value, hashed in zip(keys, values, stable_hashes(keys), strict=True):
            section_keys, section_values = sections[hashed % count]
            section_keys.append(key)
            section_values.append(value)
    except NotEqualToItself as exc:
        key, nan = next((key, nan) for key in keys if (nan := _nan_in(key)) is not _NOTHING)
        what = "a NaN key" if nan is key else f"a key holding the NaN {short_repr(nan)}"
        raise MapperOutputError(
            f"the mapper yielded {what}: {short_repr(key)} ({type(key).__qualname__}). A NaN "
            "is not equal to itself, so a dict keeps NaN keys apart unless they are the very "
            "same object, and keys that travel between processes never are: map NaN to None "
            "or to a string first"
        ) from exc
    except Exception as exc:
        key = next((key for key in keys if _fails_to_hash(key)), None)
        if key is None:
            raise
        raise MapperOutputError(
            f"the mapper yielded a key that cannot be pickled: {short_repr(key)} "
            f"({type(key).__qualname__}); keys of other types than str, bytes, numbers, None "
            "and tuples are partitioned by their pickle, so their class must be importable "
            f"by the workers: {exc}"
        ) from exc
    return sections


def _nan_in(key: Any) -> Any:
    """The NaN that ``key`` is or holds, or `_NOTHING`."""
    try:
        stable_hash(key)
    except NotEqualToItself as exc:
        return exc.part
    except Exception:
        pass
    return _NOTHING


def _fails_to_hash(key: Any) -> bool:
    try:
        stable_hash(key)
    except Exception:
        return True
    return False


def map_keyed(
    plan: ReducePlan, blocks: Iterable[Sequence[Any]], start: int, guard: Guard | None = None
) -> tuple[list[MapOutput], int]:
    """Map task body: combine a chunk, partition it, write one file (runs in a worker).

    ``blocks`` holds the chunk's records, in one list or several (a split's lines, block by
    block). Returns the file's description and the number of records read (skipped ones
    included: ``guard`` holds those).

    Each partition's section of the file is one pickled ``(keys, values)`` pair of lists:
    quicker to write and to read than a list of pairs, and the reduce side can put a whole
    section into an empty dict at once (`KeyedStore.add_section`).
    """
    combined, read = _combine_chunk(plan, blocks, start, guard)
    sections = _partition(list(combined), list(combined.values()), plan.partitions)
    path = os.path.join(plan.directory, f"map-{start}-{uuid.uuid4().hex}.bin")
    offsets = []
    with open(path, "wb") as f:
        for section in sections:
            offsets.append(f.tell())
            _dump_checked(section, f)
    return [MapOutput(path, tuple(offsets), len(combined))], read


def _store_combine(spec: KeyedSpec) -> Callable[[Any, Any], Any] | None:
    if isinstance(spec, ReduceByKey):
        return spec.reducer
    if isinstance(spec, FoldByKey):
        return spec.combine
    return None  # group mode: the store concatenates value lists


def _results(plan: ReducePlan, store: KeyedStore[Any, Any]) -> Iterator[tuple[Any, Any]]:
    spec = plan.spec
    if plan.reducer_init is not None:
        plan.reducer_init()
    if plan.emit is not None:
        for key, accumulators in store.groups():
            yield from plan.emit(key, itertools.chain.from_iterable(accumulators))
        if plan.reducer_final is not None:
            yield from plan.reducer_final()
    elif isinstance(spec, GroupByKey):
        reducer = spec.reducer
        for key, accumulators in store.groups():
            yield key, reducer(key, itertools.chain.from_iterable(accumulators))
    else:
        yield from store.items()


def reduce_partition(
    plan: ReducePlan, sections: list[tuple[str, int]], partition: int
) -> ReduceOutput:
    """Reduce task body: merge one partition of every map file, write its result file."""
    order: Literal["hash", "key"] = "key" if plan.sort and plan.emit is None else "hash"
    path = os.path.join(plan.directory, f"result-{partition}-{uuid.uuid4().hex}.bin")
    pairs = 0
    store: KeyedStore[Any, Any] = KeyedStore(
        _store_combine(plan.spec),
        memory_budget=plan.memory_budget,
        directory=plan.directory,
        order=order,
    )
    with store:
        for section_path, offset in sections:
            with open(section_path, "rb") as f:
                f.seek(offset)
                store.add_section(*pickle.load(f))
        results: Iterable[tuple[Any, Any]] = _results(plan, store)
        if plan.sort and plan.emit is not None:
            emitted = list(results)
            sort_records(emitted)  # pairs sort by their item 0, the key, as records do
            results = ascending_pairs(emitted)
        with open(path, "wb") as out:
            batch: list[tuple[Any, Any]] = []
            for pair in results:
                batch.append(pair)
                if len(batch) >= RESULT_BATCH:
                    pickle.dump(batch, out, pickle.HIGHEST_PROTOCOL)
                    pairs += len(batch)
                    batch = []
            if batch:
                pickle.dump(batch, out, pickle.HIGHEST_PROTOCOL)
                pairs += len(batch)
        spills = store.spills
    return ReduceOutput(partition, path, pairs, spills)
