"""Functions workers cannot call as the job expects are refused before any work starts.

``async def`` functions (coroutine or async generator) anywhere but as a mapper (coroutine
mappers run on an event loop of each worker: tests/test_coroutines.py), an async generator
as the mapper of a job that wants one value per record, generator functions where a value is
expected; plain functions and generators where pairs are yielded are fine.
"""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

import aiomr
from aiomr.executors import ProcessExecutor


async def async_mapper(x: int) -> int:
    return x


async def async_pairs(x: int) -> AsyncIterator[tuple[int, int]]:
    yield x, 1


def generator_mapper(x: int) -> Iterator[int]:
    yield x


def pairs(x: int) -> Iterator[tuple[int, int]]:
    yield x % 3, 1


def pairs_list(x: int) -> list[tuple[int, int]]:
    return [(x % 3, 1)]


class AsyncCall:
    async def __call__(self, x: int) -> int:
        return x


class PlainCall:
    def __call__(self, x: int) -> int:
        return x


ASYNC = "is an async def function: aiomr calls it in workers, where no event loop runs"
ASYNC_GEN = "is an async generator function: aiomr calls it in workers, where no event loop runs"
GENERATOR = "is a generator function: calling it only makes a generator"

ASYNC_GEN_MAPPER = (
    "is an async generator function: this job's mapper gives one value per record; make it "
    "an async def function that returns it"
)

ASYNC_KINDS = [
    pytest.param(async_mapper, f"async_mapper {ASYNC}", id="async-def"),
    pytest.param(async_pairs, f"async_pairs {ASYNC_GEN}", id="async-generator"),
    pytest.param(
        functools.partial(async_mapper), f"functools.partial(async_mapper) {ASYNC}", id="partial"
    ),
    pytest.param(
        AsyncCall(), f"AsyncCall.__call__ (of a AsyncCall object) {ASYNC}", id="async-__call__"
    ),
]


class Pulled:
    """A source that tells whether any record was read."""

    def __init__(self) -> None:
        self.read = False

    def __iter__(self) -> Iterator[int]:
        self.read = True
        yield from range(10)


@contextlib.asynccontextmanager
async def refused(message: str) -> AsyncIterator[tuple[Pulled, ProcessExecutor]]:
    """Expect a TypeError containing ``message``, with no record read and no worker started."""
    source = Pulled()
    executor = ProcessExecutor(1)
    try:
        with pytest.raises(TypeError) as caught:
            yield source, executor
        assert message in str(caught.value)
        assert not source.read
        assert executor.worker_pids() == []
    finally:
        await executor.aclose()


def mapper_message(fn: Any, message: str) -> str | None:
    """What a plain job says of ``fn`` as its mapper: ``None`` where it takes it (an async
    def function is a coroutine mapper), else the refusal."""
    if fn is async_pairs:
        return f"mapper async_pairs {ASYNC_GEN_MAPPER}"
    return None


@pytest.mark.parametrize(("fn", "message"), ASYNC_KINDS)
async def test_map_reduce_refuses_async_functions(fn: Any, message: str) -> None:
    if (refusal := mapper_message(fn, message)) is not None:
        async with refused(refusal) as (source, executor):
            await aiomr.map_reduce(source, fn, operator.add, executor=executor)
    async with refused(f"reducer {message}") as (source, executor):
        await aiomr.map_reduce(source, abs, fn, executor=executor)


@pytest.mark.parametrize(("fn", "message"), ASYNC_KINDS)
async def test_streams_and_windows_refuse_async_functions(fn: Any, message: str) -> None:
    view_message = message.replace("in workers", "on a helper thread")
    for name, opening in [
        ("mapper", lambda s, e: aiomr.open_stream(s, fn, operator.add, executor=e)),
        ("view", lambda s, e: aiomr.open_stream(s, abs, operator.add, view=fn, executor=e)),
        ("reducer", lambda s, e: aiomr.open_windows(s, abs, fn, size=2, executor=e)),
    ]:
        expected = f"{name} {view_message if name == 'view' else message}"
        if name == "mapper":
            if (refusal := mapper_message(fn, message)) is None:
                continue
            expected = refusal
        async with refused(expected) as (source, executor), opening(source, executor):
            pass


@pytest.mark.parametrize(("fn", "message"), ASYNC_KINDS)
async def test_engine_methods_refuse_async_functions(fn: Any, message: str) -> None:
    refusal = mapper_message(fn, message)
    if refusal is not None:
        async with refused(refusal) as (source, executor):
            engine = aiomr.Engine(executor)
            try:
                await engine.map_reduce(source, fn, operator.add)
            finally:
                await engine.aclose()
    async with refused(f"reducer {message}") as (source, executor):
        engine = aiomr.Engine(executor)
        try:
            async with engine.open_stream(source, abs, fn):
                pass
        finally:
            await engine.aclose()
    if refusal is not None:
        async with refused(refusal) as (source, executor):
            engine = aiomr.Engine(executor)
            try:
                async with engine.open_windows(source, fn, operator.add, size=2):
                    pass
            finally:
                await engine.aclose()


@pytest.mark.parametrize(("fn", "message"), ASYNC_KINDS)
async def test_key_value_jobs_refuse_async_functions(fn: Any, message: str) -> None:
    calls: list[tuple[str, Callable[[Pulled, ProcessExecutor], Awaitable[Any]]]] = [
        ("reducer", lambda s, e: aiomr.map_reduce_by_key(s, pairs, fn, executor=e)),
        ("reducer", lambda s, e: aiomr.group_by_key(s, pairs, fn, executor=e)),
        ("combiner", lambda s, e: aiomr.group_by_key(s, pairs, len, combiner=fn, executor=e)),
        ("binop", lambda s, e: aiomr.fold_by_key(s, pairs, fn, max, initial=0, executor=e)),
        ("combine", lambda s, e: aiomr.fold_by_key(s, pairs, max, fn, initial=0, executor=e)),
        (
            "initial_factory",
            lambda s, e: aiomr.fold_by_key(s, pairs, max, max, initial_factory=fn, executor=e),
        ),
    ]
    for name, call in calls:
        async with refused(f"{name} {message}") as (source, executor):
            await call(source, executor)
    aiomr.ReduceByKey(fn, operator.add)  # a coroutine mapper (or async generator) is taken


class AsyncStepsJob(aiomr.Job):
    async def steps(self) -> list[aiomr.Step]:  # type: ignore[override]
        return []


class GeneratorInitJob(aiomr.Job):
    def mapper_init(self) -> Iterator[None]:
        self.seen = 0
        yield None

    def mapper(self, _: None, x: int) -> Iterator[tuple[int, int]]:
        yield x, 1


class AsyncCallStepJob(aiomr.Job):
    def steps(self) -> list[aiomr.Step]:
        return [aiomr.Step(mapper=pairs_of_record, reducer=AsyncCall())]


def pairs_of_record(_: None, x: int) -> Iterator[tuple[int, int]]:
    yield x, 1


@pytest.mark.parametrize(
    ("job", "message"),
    [
        (AsyncStepsJob, "steps AsyncStepsJob.steps is an async def function"),
        (
            GeneratorInitJob,
            "mapper_init GeneratorInitJob.mapper_init is a generator function: calling it only "
            "makes a generator, so its body would never run; make it a plain def",
        ),
        (AsyncCallStepJob, "reducer AsyncCall.__call__ (of a AsyncCall object) is an async def"),
    ],
)
async def test_job_classes_are_checked_before_work(job: type[aiomr.Job], message: str) -> None:
    async with refused(message) as (source, executor):
        await job().run(source, executor=executor)


def keep_first(a: Any, b: Any) -> Any:
    return a


async def test_a_generator_mapper_is_refused_not_folded_into_a_wrong_answer() -> None:
    with pytest.raises(TypeError) as caught:
        await aiomr.map_reduce(range(3), generator_mapper, keep_first, executor="inline")
    assert str(caught.value) == (
        f"mapper generator_mapper {GENERATOR}, which aiomr would take as its result; make it a "
        "plain def that returns its result (a mapper that yields several (key, value) pairs per "
        "record belongs in aiomr.map_reduce_by_key)"
    )
    with pytest.raises(TypeError, match=f"^reducer generator_mapper {GENERATOR}"):
        await aiomr.map_reduce(range(3), abs, generator_mapper, executor="inline")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=f"^reducer generator_mapper {GENERATOR}"):
        aiomr.GroupByKey(pairs, generator_mapper)  # type: ignore[arg-type]


async def test_what_may_yield_or_return_runs(engine: aiomr.Engine) -> None:
    # Key-value mappers may be generators or return an iterable of pairs; callable objects
    # and partials of plain functions are plain functions.
    expected = {0: 4, 1: 3, 2: 3}
    assert await engine.run_by_key(range(10), aiomr.ReduceByKey(pairs, operator.add)) == expected
    assert (
        await engine.run_by_key(range(10), aiomr.ReduceByKey(pairs_list, operator.add)) == expected
    )
    total = await engine.map_reduce(range(10), PlainCall(), functools.partial(operator.add))
    assert total == 45


async def _async_convert(row: list[str]) -> list[str]:
    return row


def _generator_convert(row: list[str]) -> Iterator[str]:
    yield from row


@pytest.mark.parametrize("convert", [_async_convert, _generator_convert])
@pytest.mark.parametrize("source", ["files", "lines"])
def test_a_source_refuses_a_convert_workers_cannot_call(source: str, convert: Any) -> None:
    make = aiomr.sources.files if source == "files" else aiomr.sources.lines
    with pytest.raises(TypeError, match=r"^convert _(async|generator)_convert is a"):
        make("data.tsv", format="tsv", convert=convert)
