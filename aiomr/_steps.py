"""The rounds of a class-based job: each `Step` becomes a group-by-key plan.

A step's mapper, combiner and reducer are the job's methods, adapted here to the key-based
engine (`aiomr._keyed.phases`); the pairs one step emits stream, from its result files, into the
next step's mapper. `aiomr.Job` is the public face; `run_steps` runs the rounds on one
job's share of an engine.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ._callables import check_function, describe, kind_of
from ._chunker import AnySource
from ._exceptions import MapperOutputError
from ._keyed.phases import collect_keyed, open_keyed
from ._keyed.shuffle import ReducePlan
from ._keyed.specs import GroupByKey
from ._options import KeyedOptions
from ._worker.envelope import short_repr
from .executors import Executor

__all__ = ["HasSteps", "Step", "checked_steps", "run_steps"]

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
                check_function(name, fn, yields=True, coroutines=name == "mapper")
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


class _AsyncStepMapper(_StepMapper):
    """A step's ``async def`` mapper: its coroutine runs on a worker's event loop."""

    async def __call__(self, record: Any, *resource: Any) -> Pairs:  # type: ignore[override]
        assert self.mapper is not None
        key, value = (None, record) if self.first else record
        pairs: Pairs = await self.mapper(key, value, *resource)  # type: ignore[misc]
        return pairs


class _AsyncGenStepMapper(_StepMapper):
    """A step's async generator mapper: the pairs it yields."""

    async def __call__(  # type: ignore[override]
        self, record: Any, *resource: Any
    ) -> AsyncIterator[tuple[Any, Any]]:
        assert self.mapper is not None
        key, value = (None, record) if self.first else record
        async for pair in self.mapper(key, value, *resource):  # type: ignore[attr-defined]
            yield pair


def _step_mapper(mapper: Callable[[Any, Any], Pairs] | None, first: bool) -> _StepMapper:
    kind = "plain" if mapper is None else kind_of(mapper)
    if kind == "coroutine":
        return _AsyncStepMapper(mapper, first)
    if kind == "async generator":
        return _AsyncGenStepMapper(mapper, first)
    return _StepMapper(mapper, first)


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


class HasSteps(Protocol):
    """A job made of steps: an `aiomr.Job`."""

    def steps(self) -> list[Step]: ...


def checked_steps(job: HasSteps) -> list[Step]:
    """Return ``job.steps()``, refusing anything but a non-empty list of `Step` objects."""
    name = type(job).__name__
    check_function("steps", job.steps, returns="a list of aiomr.Step")
    steps = job.steps()
    if not steps:
        raise ValueError(f"{name}.steps() returned no steps")
    for step in steps:
        if not isinstance(step, Step):
            raise TypeError(
                f"{name}.steps() must return aiomr.Step objects, got {type(step).__qualname__}"
            )
    return steps


async def run_steps(
    lane: Executor, steps: list[Step], source: AnySource, options: KeyedOptions
) -> list[tuple[Any, Any]]:
    """Run every step over ``source`` on ``lane``; return the last step's pairs.

    Earlier steps stream their pairs from disk straight into the next step; every step's
    temporary files are removed when this returns or raises.
    """
    async with contextlib.AsyncExitStack() as stack:
        current: AnySource = source
        last = len(steps) - 1
        for index, step in enumerate(steps):
            plan_of = _plan_factory(step, index == 0, options)
            if index == last:
                pairs: list[tuple[Any, Any]] = await collect_keyed(
                    lane, current, plan_of, options, options.stats, as_pairs=True
                )
                return pairs
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
    spec: GroupByKey[Any, Any, Any, Any] = GroupByKey(_step_mapper(step.mapper, first), emit)
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
