"""Class-based jobs for people who know mrjob and Hadoop streaming.

A `Job` is a thin layer over the key-based engine: each `Step` becomes a group-by-
key plan whose mapper, combiner and reducer are the job's methods, and the pairs one step emits
stream, from its result files, into the next step's mapper.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ._badrecords import OnError
from ._callables import check_function, describe
from ._chunker import AnySource
from ._engine import Engine
from ._exceptions import MapperOutputError
from ._keyed import DEFAULT_MEMORY_BUDGET, KeyedOptions, collect_keyed, open_keyed
from ._keyspec import GroupByKey
from ._retry import RetryPolicy
from ._shuffle import ReducePlan
from ._stats import JobStats
from ._worker import short_repr
from .executors import ExecutorSpec

__all__ = ["Job", "Step"]

Pairs = Iterable[tuple[Any, Any]]


@dataclass(frozen=True)
class Step:
    """One map-shuffle-reduce round of a `Job`; every part is optional but one.

    ``mapper(key, value)``, ``combiner(key, values)`` and ``reducer(key, values)`` yield
    ``(key, value)`` pairs. In the first step the mapper receives ``None`` and the record;
    in later steps, the pairs the previous step emitted. ``mapper_init`` and
    ``reducer_init`` run at the start of each map or reduce task, ``mapper_final`` and
    ``reducer_final`` at its end and may yield more pairs.
    """

    mapper: Callable[[Any, Any], Pairs] | None = None
    combiner: Callable[[Any, Iterator[Any]], Pairs] | None = None
    reducer: Callable[[Any, Iterator[Any]], Pairs] | None = None
    mapper_init: Callable[[], None] | None = None
    mapper_final: Callable[[], Pairs] | None = None
    reducer_init: Callable[[], None] | None = None
    reducer_final: Callable[[], Pairs] | None = None

    def __post_init__(self) -> None:
        if self.mapper is None and self.reducer is None:
            raise ValueError("a Step needs a mapper, a reducer, or both")
        for name in _YIELDING:
            if (fn := getattr(self, name)) is not None:
                check_function(name, fn, yields=True)
        for name in ("mapper_init", "reducer_init"):
            if (fn := getattr(self, name)) is not None:
                check_function(name, fn, returns=None)


_YIELDING = ("mapper", "combiner", "reducer", "mapper_final", "reducer_final")
"""The parts of a step that yield pairs (or return an iterable of them)."""


class _StepMapper:
    def __init__(self, mapper: Callable[[Any, Any], Pairs] | None, first: bool) -> None:
        self.mapper = mapper
        self.first = first

    def __call__(self, record: Any) -> Pairs:
        if self.first:
            key, value = None, record
        else:
            key, value = record
        if self.mapper is None:
            return ((key, value),)
        return self.mapper(key, value)


class _StepCombiner:
    """Adapt an mrjob-style combiner (yields pairs) to the map-side combine of a chunk."""

    def __init__(self, combiner: Callable[[Any, Iterator[Any]], Pairs]) -> None:
        self.combiner = combiner

    def __call__(self, key: Any, values: list[Any]) -> list[Any]:
        out = []
        for emitted_key, value in self.combiner(key, iter(values)):
            if emitted_key != key:
                raise ValueError(
                    f"a combiner must keep the key it was given: got {emitted_key!r} for {key!r}"
                )
            out.append(value)
        return out


class _StepOutput:
    """The pairs a step emitted, as the next step's source; messages call them by name
    (``pair 12 of the output of step 0``)."""

    def __init__(self, pairs: AsyncIterator[tuple[Any, Any]], step: int) -> None:
        self._pairs = pairs
        self.record_noun = ("pair", f"the output of step {step}")

    def __aiter__(self) -> AsyncIterator[tuple[Any, Any]]:
        return self._pairs  # the pairs' own iterator: nothing added per pair


class _Emitting:
    """A step's reducer or ``reducer_final``, whose output is checked to be pairs.

    What a Job's reducer yields goes straight to the result files: a reducer that returns
    ``key, total`` instead of yielding it would give ``[key, total]`` as two "pairs" -- a
    wrong answer -- and is stopped here with `aiomr.MapperOutputError`. The check costs
    one type test per output pair, on the reduce side, where pairs are few.
    """

    def __init__(self, fn: Callable[..., Pairs], name: str) -> None:
        self.fn = fn
        self.name = name

    def __call__(self, *args: Any) -> Iterator[tuple[Any, Any]]:
        produced = self.fn(*args)
        try:
            items = iter(produced)
        except TypeError:
            raise MapperOutputError(
                f"{self.name} {describe(self.fn)} must yield (key, value) pairs or return an "
                f"iterable of them, but it returned {short_repr(produced)}"
            ) from None
        return self._pairs(items, args)

    def _pairs(self, items: Iterator[Any], args: tuple[Any, ...]) -> Iterator[tuple[Any, Any]]:
        for item in items:
            if type(item) is not tuple or len(item) != 2:
                if type(item) is not list or len(item) != 2:
                    given = f" for key {short_repr(args[0])}" if args else ""
                    raise MapperOutputError(
                        f"{self.name} {describe(self.fn)} must yield (key, value) pairs, but"
                        f"{given} it yielded {short_repr(item)}"
                    )
                item = (item[0], item[1])
            yield item

    def __repr__(self) -> str:
        return repr(self.fn)


def _identity_reducer(key: Any, values: Iterator[Any]) -> Pairs:
    for value in values:
        yield key, value


class Job:
    """Subclass and define ``mapper`` and ``reducer`` (and ``combiner``, hooks, ``steps``).

    The word count, mrjob style:

        import aiomr

        class WordCount(aiomr.Job):
            def mapper(self, _, line):
                for word in line.split():
                    yield word.lower(), 1

            def combiner(self, word, counts):
                yield word, sum(counts)

            def reducer(self, word, counts):
                yield word, sum(counts)

        async def main() -> None:
            pairs = await WordCount().run(["the cat", "the hat"], sort=True)
            print(pairs)  # [('cat', 1), ('hat', 1), ('the', 2)]

        if __name__ == "__main__":
            aiomr.run(main())

    Methods you may define: ``mapper(key, value)``, ``combiner(key, values)``,
    ``reducer(key, values)`` -- each yielding ``(key, value)`` pairs -- and
    ``mapper_init``/``mapper_final``/``reducer_init``/``reducer_final``. Override
    `steps` for several rounds. The instance travels to the workers (with cloudpickle),
    so attributes set in ``__init__`` are visible there; state set in a task stays in that
    task. The combiner may run zero, one or many times and must not change the answer.
    """

    def steps(self) -> list[Step]:
        """Return the job's rounds; by default one, made of the methods the class defines."""
        return [
            Step(
                mapper=getattr(self, "mapper", None),
                combiner=getattr(self, "combiner", None),
                reducer=getattr(self, "reducer", None),
                mapper_init=getattr(self, "mapper_init", None),
                mapper_final=getattr(self, "mapper_final", None),
                reducer_init=getattr(self, "reducer_init", None),
                reducer_final=getattr(self, "reducer_final", None),
            )
        ]

    async def run(
        self,
        source: AnySource,
        *,
        engine: Engine | None = None,
        sort: bool = False,
        partitions: int | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        temp_dir: str | None = None,
        chunk_size: int | None = None,
        max_in_flight: int | None = None,
        retry: RetryPolicy | None = None,
        on_error: OnError = "raise",
        dead_letter: str | os.PathLike[str] | None = None,
        executor: ExecutorSpec = "process",
        max_workers: int | None = None,
        stats: JobStats | None = None,
    ) -> list[tuple[Any, Any]]:
        """Run every step over ``source`` and return the last step's pairs.

        Args:
            source: the records, given to the first mapper as ``(None, record)``.
            engine: an `aiomr.Engine` to run on; without one the call starts and
                stops its own workers (``executor`` and ``max_workers`` choose them).
            sort: order the output pairs by key.
            partitions: reduce tasks per step, as for `aiomr.map_reduce_by_key`.
            memory_budget: bytes of key state per reduce task before it spills.
            temp_dir: where the steps' temporary files go.
            chunk_size: records per map task.
            max_in_flight: map tasks outstanding at most.
            retry: how failed tasks are run again, as for `aiomr.map_reduce`.
            on_error: what a record the mapper fails on does to the job, as for
                `aiomr.map_reduce_by_key`; it applies to every step.
            dead_letter: a JSON Lines file to receive every skipped record.
            executor: where tasks run when the call starts its own workers.
            max_workers: how many workers the call starts.
            stats: a `aiomr.JobStats` describing the last step.

        Cancellation: cancelling the call stops the running step and removes every step's
        temporary files.
        """
        check_function("steps", self.steps, returns="a list of aiomr.Step")
        steps = self.steps()
        if not steps:
            raise ValueError(f"{type(self).__name__}.steps() returned no steps")
        for step in steps:
            if not isinstance(step, Step):
                raise TypeError(
                    f"{type(self).__name__}.steps() must return aiomr.Step objects, "
                    f"got {type(step).__qualname__}"
                )
        options = KeyedOptions(
            partitions,
            sort,
            memory_budget,
            temp_dir,
            chunk_size,
            max_in_flight,
            retry,
            on_error,
            dead_letter,
        )
        async with contextlib.AsyncExitStack() as stack:
            if engine is None:
                engine = await stack.enter_async_context(
                    Engine(executor, max_workers=max_workers, split_seconds=None)
                )
            lane = await stack.enter_async_context(engine._job(None))
            current: AnySource = source
            last = len(steps) - 1
            for index, step in enumerate(steps):
                plan_of = _plan_factory(step, index == 0, options)
                if index == last:
                    pairs: list[tuple[Any, Any]] = await collect_keyed(
                        lane, current, plan_of, options, stats, as_pairs=True
                    )
                    return pairs
                # Earlier steps stream their pairs from disk straight into the next step.
                emitted = await stack.enter_async_context(
                    open_keyed(lane, current, plan_of, options, None)
                )
                current = _StepOutput(emitted, index)
        raise AssertionError("unreachable")  # pragma: no cover


def _plan_factory(
    step: Step, first: bool, options: KeyedOptions
) -> Callable[[int, str], ReducePlan]:
    reducer = step.reducer or _identity_reducer
    emit = _Emitting(reducer, "reducer")
    final = _Emitting(step.reducer_final, "reducer_final") if step.reducer_final else None
    # A job's reduce tasks call ``emit``, never the spec's reducer; `_Emitting` is a plain
    # callable, as a spec's reducer must be, so it stands in for both.
    spec: GroupByKey[Any, Any, Any, Any] = GroupByKey(_StepMapper(step.mapper, first), emit)
    combiner = _StepCombiner(step.combiner) if step.combiner is not None else None

    def plan_of(partitions: int, directory: str) -> ReducePlan:
        return ReducePlan(
            spec,
            partitions,
            directory,
            options.memory_budget,
            options.sort,
            emit=emit,
            emit_combiner=combiner,
            mapper_init=step.mapper_init,
            mapper_final=step.mapper_final,
            reducer_init=step.reducer_init,
            reducer_final=final,
        )

    return plan_of
