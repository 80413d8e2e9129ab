"""Key-based MapReduce in one await: reduce, group or fold by key, with a pool owned by the call."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import Any, Unpack

from ._chunker import AnySource
from ._engine import Engine
from ._keyed.specs import FoldByKey, GroupByKey, KeyedSpec, ReduceByKey
from ._map_phase import check_job
from ._options import KeyedKeywords, KeyedOptions
from ._sentinels import MISSING
from ._types import A, K, PairsMapper, R, T, V
from .executors import ExecutorSpec
from .sources._source import Source

__all__ = ["fold_by_key", "group_by_key", "map_reduce_by_key", "open_by_key"]


async def map_reduce_by_key(
    source: Iterable[R] | AsyncIterable[R] | Source,
    mapper: PairsMapper[R, K, V],
    reducer: Callable[[V, V], V],
    *,
    executor: ExecutorSpec = "process",
    **options: Unpack[KeyedKeywords],
) -> dict[K, V]:
    """Map records to ``(key, value)`` pairs and combine each key's values with ``reducer``.

    The word count:

        import operator, aiomr

        def words(line: str):
            for word in line.split():
                yield word.lower(), 1

        async def main() -> None:
            lines = ["the cat", "the hat"]
            counts = await aiomr.map_reduce_by_key(lines, words, operator.add)
            print(aiomr.top(counts, 1))  # [('the', 2)]

        if __name__ == "__main__":
            aiomr.run(main())

    ``reducer(v1, v2)`` must be associative and commutative (Spark's ``reduceByKey``): it runs
    inside every chunk as the combiner, so a chunk ships one value per distinct key; keys are
    then hash-partitioned and each partition is reduced in a worker.

    Args:
        source: any iterable or async iterable of records, pulled lazily.
        mapper: ``record -> iterable of (key, value)``; keys must be hashable and picklable.
        reducer: ``(value, value) -> value``.
        executor: where tasks run, as for `aiomr.map_reduce`.
        **options: `aiomr.KeyedKeywords`: ``partitions`` (reduce tasks), ``sort`` (keys in
            ascending order; they must be in a total order under ``<``, or a `TypeError`
            names two that are not), ``memory_budget`` (bytes of key state a reduce task
            holds before it spills a sorted run to a temporary file), ``temp_dir``, and
            ``chunk_size``, ``max_in_flight``, ``max_workers``, ``retry``, ``on_error``
            (the parser's or the mapper's failures on a record), ``dead_letter`` and
            ``stats`` as for `aiomr.map_reduce`.

    Returns:
        ``{key: reduced value}`` (insertion-ordered by key when ``sort=True``).

    Raises:
        aiomr.MapperOutputError: the mapper yielded something other than a pair, or a key that
            cannot be hashed or pickled; the message names the record, a note the chunk.

    Cancellation: cancelling the call closes the source, stops the job's tasks, removes its
    temporary files and stops the worker processes it started.
    """
    checked = KeyedOptions.of("map_reduce_by_key", options)
    ReduceByKey(mapper, reducer)  # checks the functions before any worker starts
    check_job(source)
    async with Engine(executor, max_workers=checked.max_workers, split_seconds=None) as engine:
        return await engine.map_reduce_by_key(source, mapper, reducer, **options)


async def group_by_key(
    source: Iterable[R] | AsyncIterable[R] | Source,
    mapper: PairsMapper[R, K, V],
    reducer: Callable[[K, Iterator[V]], T],
    *,
    combiner: Callable[[K, list[V]], V] | None = None,
    executor: ExecutorSpec = "process",
    **options: Unpack[KeyedKeywords],
) -> dict[K, T]:
    """Hand all values of each key to ``reducer(key, values)`` (Hadoop's reduce).

    For reductions that need every value at once:

        import statistics, aiomr

        async def main() -> None:
            rows = [("a", 3), ("b", 1), ("a", 5), ("a", 4)]
            medians = await aiomr.group_by_key(
                rows, lambda row: [row], lambda key, values: statistics.median(values)
            )
            print(medians)  # {'a': 4, 'b': 1} (in some order)

        if __name__ == "__main__":
            aiomr.run(main())

    ``values`` is an iterator, read lazily from memory and spilled runs. ``combiner(key,
    values) -> value``, when given, shrinks each chunk's values before the shuffle; see
    `aiomr.GroupByKey` for the contract it must keep. The other arguments are those of
    `aiomr.map_reduce_by_key`.
    """
    checked = KeyedOptions.of("group_by_key", options)
    GroupByKey(mapper, reducer, combiner)  # checks the functions before any worker starts
    check_job(source)
    async with Engine(executor, max_workers=checked.max_workers, split_seconds=None) as engine:
        return await engine.group_by_key(source, mapper, reducer, combiner=combiner, **options)


async def fold_by_key(
    source: Iterable[R] | AsyncIterable[R] | Source,
    mapper: PairsMapper[R, K, V],
    binop: Callable[[A, V], A],
    combine: Callable[[A, A], A],
    *,
    initial: A = MISSING,
    initial_factory: Callable[[], A] | None = None,
    executor: ExecutorSpec = "process",
    **options: Unpack[KeyedKeywords],
) -> dict[K, A]:
    """Fold each key's values into an accumulator with ``binop``; merge them with ``combine``.

    The mean per key, kept as ``(sum, count)``:

        import aiomr

        async def main() -> None:
            rows = [("a", 3), ("b", 1), ("a", 5)]
            sums = await aiomr.fold_by_key(
                rows,
                lambda row: [row],
                lambda acc, v: (acc[0] + v, acc[1] + 1),
                lambda x, y: (x[0] + y[0], x[1] + y[1]),
                initial=(0, 0),
            )
            print({k: s / n for k, (s, n) in sums.items()})  # {'a': 4.0, 'b': 1.0}

        if __name__ == "__main__":
            aiomr.run(main())

    Give exactly one of ``initial`` (copied for every key of every chunk) and
    ``initial_factory``; see `aiomr.FoldByKey`. The other arguments are those of
    `aiomr.map_reduce_by_key`.
    """
    checked = KeyedOptions.of("fold_by_key", options)
    FoldByKey(mapper, binop, combine, initial, initial_factory)  # checks them early
    check_job(source)
    async with Engine(executor, max_workers=checked.max_workers, split_seconds=None) as engine:
        return await engine.fold_by_key(
            source,
            mapper,
            binop,
            combine,
            initial=initial,
            initial_factory=initial_factory,
            **options,
        )


@contextlib.asynccontextmanager
async def open_by_key(
    source: AnySource,
    spec: KeyedSpec,
    *,
    executor: ExecutorSpec = "process",
    **options: Unpack[KeyedKeywords],
) -> AsyncIterator[AsyncIterator[tuple[Any, Any]]]:
    """Run a key-based job and stream its ``(key, result)`` pairs from disk.

    For results larger than memory: nothing is held in the caller but one batch of pairs:

        import operator, aiomr

        async def main() -> None:
            spec = aiomr.ReduceByKey(lambda n: [(n % 1000, 1)], operator.add)
            async with aiomr.open_by_key(range(100_000), spec, sort=True) as pairs:
                async for key, count in pairs:
                    assert count == 100

        if __name__ == "__main__":
            aiomr.run(main())

    Entering runs the whole job; the pairs then stream from the partitions' result files
    (merged in key order with ``sort=True``). Leaving removes the files and, when the call
    started them, the workers. The arguments are those of `aiomr.map_reduce_by_key`.

    Cancellation: cancelling while entering stops the job as `map_reduce_by_key` does;
    leaving early (``break``) is safe.
    """
    checked = KeyedOptions.of("open_by_key", options)
    check_job(source)
    async with (
        Engine(executor, max_workers=checked.max_workers, split_seconds=None) as engine,
        engine.open_by_key(source, spec, **options) as pairs,
    ):
        yield pairs
