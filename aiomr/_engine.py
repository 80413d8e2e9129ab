"""The Engine: one warm pool of workers for many jobs, several at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Literal, Self, Unpack, overload

from ._checks import check_seconds
from ._chunker import AnySource, check_source
from ._columnar.aggregate import Aggregate
from ._columnar.aggregate_job import open_aggregate, run_aggregate
from ._exceptions import ClosedResourceError
from ._keyed.phases import collect_keyed, open_keyed, plan_for
from ._keyed.specs import FoldByKey, GroupByKey, KeyedSpec, ReduceByKey
from ._map_phase import check_job, run_map_reduce
from ._options import (
    AggregateKeywords,
    AggregateOptions,
    KeyedKeywords,
    KeyedOptions,
    MapKeywords,
    MapOptions,
    StreamKeywords,
    StreamOptions,
    WindowKeywords,
    WindowOptions,
)
from ._reducer import Folder
from ._running_jobs import RunningJobs
from ._scheduler import FairScheduler
from ._sentinels import MISSING
from ._stats import JobStats
from ._steps import HasSteps, checked_steps, run_steps
from ._stream import Snapshot, running
from ._types import A, K, Mode, PairsMapper, R, T, V
from ._windows import Window, windows
from .executors import Executor, ExecutorSpec, resolve_executor
from .sources._source import Source
from .sources._split_source import SplitSource

__all__ = ["Engine"]


SHARED_SPLIT_SECONDS = 0.5
"""The default ``split_seconds`` of an `Engine`: a job arriving beside a whole-file job waits
about this long for a worker, and tasks stay long enough that their fixed cost (a task, a
partial result) is small beside their work."""


class Engine:
    """Keep workers warm and run map-reduce jobs on them, several at a time.

    Create one per application (in a web service, in its lifespan) and share it:

        async with aiomr.Engine(max_workers=4) as engine:
            total = await engine.map_reduce(range(1, 11), square, operator.add)

    Args:
        executor: ``"process"`` (the default), ``"thread"``, ``"inline"``, ``"dask"``, an
            `aiomr.executors.Executor`, or any `concurrent.futures.Executor`.
            Executors passed as instances are not closed by the engine.
        max_workers: workers to start when the engine creates the executor; defaults to the
            number of CPUs.
        split_seconds: about how long each byte-range split of a file job runs in a worker
            on this engine, when the job does not set ``split_size``: splits are sized by
            the job's measured speed, so a job that arrives while a whole-file job runs waits
            about this long for its first worker. ``None`` sizes splits by bytes alone, as
            the one-job functions (`aiomr.map_reduce`, ...) do.

    Entering the context starts the workers (in a helper thread, so the event loop keeps
    running). Jobs started concurrently share the workers by worker time: each job's tasks
    wait in a queue of their own, and each worker that comes free goes to the active job
    that has had the least worker time so far (`aiomr._scheduler`), so a small job beside a
    big one takes about its own time multiplied by the number of running jobs. Every job
    method takes ``max_workers=`` (the most workers the job holds at once; all by default)
    and ``max_in_flight=`` (its chunks outstanding). A running task is never interrupted,
    which is what ``split_seconds`` bounds for file jobs (docs/concepts/fairness.md).

    Cancellation: cancelling a job stops only that job; the engine stays usable.
    ``aclose()`` drains: it waits for running jobs to finish, then stops the workers.
    ``aclose(cancel=True)`` cancels the running jobs first (each raises
    `aiomr.ClosedResourceError`); cancelling ``aclose`` itself stops the workers at once.
    """

    def __init__(
        self,
        executor: ExecutorSpec = "process",
        *,
        max_workers: int | None = None,
        split_seconds: float | None = SHARED_SPLIT_SECONDS,
    ) -> None:
        check_seconds("split_seconds", split_seconds, optional=True)
        self._executor, self._owns_executor = resolve_executor(executor, max_workers=max_workers)
        self._scheduler = FairScheduler(self._executor, split_seconds=split_seconds)
        self._jobs = RunningJobs(self._scheduler)
        self._shut = asyncio.Event()
        self._closed = False

    @property
    def executor(self) -> Executor:
        """The executor the engine's jobs run on."""
        return self._executor

    @property
    def max_workers(self) -> int:
        """How many map tasks run at the same time."""
        return self._executor.max_workers

    @property
    def closed(self) -> bool:
        """Whether `aclose` has been called."""
        return self._closed

    async def start(self) -> None:
        """Start the workers now rather than on the first job. Idempotent."""
        self._check_open()
        # ProcessExecutor boots its pool; DaskExecutor connects (and sizes max_workers).
        await self._executor.start()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedResourceError("the Engine is closed")

    @contextlib.asynccontextmanager
    async def _job(self, max_workers: int | None) -> AsyncIterator[Executor]:
        """Run a job on the engine (`aiomr._running_jobs`): yield its lane to the workers."""
        self._check_open()
        async with self._jobs.job(max_workers) as lane:
            yield lane

    @overload
    async def map_reduce(
        self,
        source: Iterable[R] | AsyncIterable[R] | Source,
        mapper: Callable[[R], V],
        reducer: Callable[[V, V], V],
        *,
        mode: Literal["record"] = ...,
        **options: Unpack[MapKeywords[V]],
    ) -> V: ...

    @overload
    async def map_reduce(
        self,
        source: SplitSource,
        mapper: Callable[[Any], V],
        reducer: Callable[[V, V], V],
        *,
        mode: Literal["blocks", "batches"],
        **options: Unpack[MapKeywords[V]],
    ) -> V: ...

    @overload
    async def map_reduce(
        self,
        source: Iterable[R] | AsyncIterable[R] | Source,
        mapper: Callable[[list[R]], V],
        reducer: Callable[[V, V], V],
        *,
        mode: Literal["chunk"],
        **options: Unpack[MapKeywords[V]],
    ) -> V: ...

    async def map_reduce(
        self,
        source: AnySource,
        mapper: Callable[[Any], Any],
        reducer: Callable[[Any, Any], Any],
        *,
        mode: Mode = "record",
        **options: Unpack[MapKeywords[Any]],
    ) -> Any:
        """Run one job on the engine's workers; see `aiomr.map_reduce` for the arguments.

        ``max_workers`` caps the workers this job's tasks hold at once (``None``: as many as
        its fair share allows); the engine's pool keeps its size.

            total = await engine.map_reduce(range(1000), square, operator.add, max_workers=1)

        Cancellation: cancelling the call closes the source, cancels the job's outstanding
        chunks (those waiting for a worker never run) and leaves the workers to other jobs.
        """
        checked = MapOptions.of("map_reduce", {**options, "mode": mode})
        check_job(source, mapper=mapper, reducer=reducer)
        async with self._job(checked.max_workers) as lane:
            return await run_map_reduce(lane, source, mapper, reducer, checked, checked.stats)

    async def aggregate(
        self, source: SplitSource, aggregate: Aggregate, **options: Unpack[AggregateKeywords]
    ) -> Any:
        """Run an `aiomr.Aggregate` over a batch source; see `aiomr.aggregate`.

            per_shop = aiomr.Aggregate(by="shop", sales=("id", "count"))
            table = await engine.aggregate(parquet("sales/"), per_shop)

        Cancellation: as `map_reduce`; the job's files on disk are removed.
        """
        checked = AggregateOptions.of("aggregate", options)
        check_source(source)
        async with self._job(checked.max_workers) as lane:
            return await run_aggregate(lane, source, aggregate, checked)

    @contextlib.asynccontextmanager
    async def open_aggregate(
        self, source: SplitSource, aggregate: Aggregate, **options: Unpack[AggregateKeywords]
    ) -> AsyncIterator[AsyncIterator[Any]]:
        """Run an `aiomr.Aggregate`, then stream its result's batches; see
        `aiomr.open_aggregate`.

            async with engine.open_aggregate(parquet("sales/"), per_shop) as batches:
                async for batch in batches:
                    ...

        The job holds its workers until the ``async with`` is left.
        """
        checked = AggregateOptions.of("open_aggregate", options)
        check_source(source)
        async with (
            self._job(checked.max_workers) as lane,
            open_aggregate(lane, source, aggregate, checked) as batches,
        ):
            yield batches

    @contextlib.asynccontextmanager
    async def open_stream(
        self,
        source: Iterable[R] | AsyncIterable[R] | Source,
        mapper: Callable[[R], V],
        reducer: Callable[[V, V], V],
        *,
        mode: Literal["record", "batches"] = "record",
        **options: Unpack[StreamKeywords[V]],
    ) -> AsyncIterator[AsyncIterator[Snapshot[Any]]]:
        """Run a job and watch its running result; see `aiomr.open_stream`.

        ``max_workers`` caps the workers the job holds at once, as in `map_reduce`.
        """
        checked = StreamOptions.of("open_stream", {**options, "mode": mode})
        check_job(source, mapper=mapper, reducer=reducer)
        self._check_open()
        stats = checked.stats if checked.stats is not None else JobStats()
        folder = Folder(reducer, initial=checked.initial, ordered=checked.ordered)

        async def job() -> Any:
            async with self._job(checked.max_workers) as lane:
                return await run_map_reduce(lane, source, mapper, reducer, checked, stats, folder)

        async with running(asyncio.create_task(job()), folder, stats, checked) as snapshots:
            yield snapshots

    @contextlib.asynccontextmanager
    async def open_windows(
        self,
        source: Iterable[R] | AsyncIterable[R],
        mapper: Callable[[R], V],
        reducer: Callable[[V, V], V],
        *,
        size: float,
        **options: Unpack[WindowKeywords[V]],
    ) -> AsyncIterator[AsyncIterator[Window[Any]]]:
        """A result per window of an endless source; see `aiomr.open_windows`.

        ``max_workers`` caps the workers each window's job holds at once, as in `map_reduce`.
        """
        checked = WindowOptions.of("open_windows", {**options, "size": size})
        check_job(source, mapper=mapper, reducer=reducer)
        self._check_open()
        pane = checked.pane_options()

        async def reduce_pane(records: AsyncIterable[Any]) -> Any:
            async with self._job(pane.max_workers) as lane:
                return await run_map_reduce(lane, records, mapper, reducer, pane, None)

        results = windows(reduce_pane, source, reducer, checked.spec, checked.initial)
        try:
            yield results
        finally:
            await results.aclose()

    async def map_reduce_by_key(
        self,
        source: Iterable[R] | AsyncIterable[R] | Source,
        mapper: PairsMapper[R, K, V],
        reducer: Callable[[V, V], V],
        **options: Unpack[KeyedKeywords],
    ) -> dict[K, V]:
        """Combine each key's values with ``reducer``; see `aiomr.map_reduce_by_key`.

        ``max_workers`` caps the workers the job's map and reduce tasks hold at once, as in
        `map_reduce`.
        """
        spec: ReduceByKey[R, K, V] = ReduceByKey(mapper, reducer)
        return await self._by_key("map_reduce_by_key", source, spec, options)

    async def group_by_key(
        self,
        source: Iterable[R] | AsyncIterable[R] | Source,
        mapper: PairsMapper[R, K, V],
        reducer: Callable[[K, Iterator[V]], T],
        *,
        combiner: Callable[[K, list[V]], V] | None = None,
        **options: Unpack[KeyedKeywords],
    ) -> dict[K, T]:
        """Hand all values of each key to ``reducer(key, values)``; see `aiomr.group_by_key`."""
        spec: GroupByKey[R, K, V, T] = GroupByKey(mapper, reducer, combiner)
        return await self._by_key("group_by_key", source, spec, options)

    async def fold_by_key(
        self,
        source: Iterable[R] | AsyncIterable[R] | Source,
        mapper: PairsMapper[R, K, V],
        binop: Callable[[A, V], A],
        combine: Callable[[A, A], A],
        *,
        initial: A = MISSING,
        initial_factory: Callable[[], A] | None = None,
        **options: Unpack[KeyedKeywords],
    ) -> dict[K, A]:
        """Fold each key's values into an accumulator; see `aiomr.fold_by_key`."""
        spec: FoldByKey[R, K, V, A] = FoldByKey(mapper, binop, combine, initial, initial_factory)
        return await self._by_key("fold_by_key", source, spec, options)

    @overload
    async def run_by_key(
        self,
        source: Iterable[R] | AsyncIterable[R] | Source,
        spec: ReduceByKey[R, K, V],
        **options: Unpack[KeyedKeywords],
    ) -> dict[K, V]: ...

    @overload
    async def run_by_key(
        self,
        source: Iterable[R] | AsyncIterable[R] | Source,
        spec: GroupByKey[R, K, V, T],
        **options: Unpack[KeyedKeywords],
    ) -> dict[K, T]: ...

    @overload
    async def run_by_key(
        self,
        source: Iterable[R] | AsyncIterable[R] | Source,
        spec: FoldByKey[R, K, V, A],
        **options: Unpack[KeyedKeywords],
    ) -> dict[K, A]: ...

    async def run_by_key(
        self, source: AnySource, spec: KeyedSpec, **options: Unpack[KeyedKeywords]
    ) -> dict[Any, Any]:
        """Run a key-based job given as a spec (`aiomr.ReduceByKey`, `aiomr.GroupByKey`,
        `aiomr.FoldByKey`) and return ``{key: result}``.

        The spec form of `map_reduce_by_key`, `group_by_key` and `fold_by_key`, for code that
        builds its specs, or shares one with `open_by_key`:

            spec = aiomr.ReduceByKey(words, operator.add)
            counts = await engine.run_by_key(lines, spec, sort=True)

        Cancellation: cancelling the call closes the source, cancels the job's tasks and
        removes its temporary files; the engine stays usable.
        """
        return await self._by_key("run_by_key", source, spec, options)

    async def _by_key(
        self, where: str, source: AnySource, spec: KeyedSpec, keywords: KeyedKeywords
    ) -> dict[Any, Any]:
        checked = KeyedOptions.of(where, keywords)
        plan_of = plan_for(spec, checked)
        check_source(source)
        async with self._job(checked.max_workers) as lane:
            result: dict[Any, Any] = await collect_keyed(
                lane, source, plan_of, checked, checked.stats
            )
            return result

    @contextlib.asynccontextmanager
    async def open_by_key(
        self, source: AnySource, spec: KeyedSpec, **options: Unpack[KeyedKeywords]
    ) -> AsyncIterator[AsyncIterator[tuple[Any, Any]]]:
        """Run a key-based job, then stream its ``(key, result)`` pairs.

        See `aiomr.open_by_key`; ``max_workers`` caps the workers the job holds at once, as
        in `map_reduce`.
        """
        checked = KeyedOptions.of("open_by_key", options)
        plan_of = plan_for(spec, checked)
        check_source(source)
        async with (
            self._job(checked.max_workers) as lane,
            open_keyed(lane, source, plan_of, checked, checked.stats) as pairs,
        ):
            yield pairs

    async def run_job(
        self, job: HasSteps, source: AnySource, **options: Unpack[KeyedKeywords]
    ) -> list[tuple[Any, Any]]:
        """Run a class-based job's steps and return its last step's pairs; see `aiomr.Job.run`.

            pairs = await engine.run_job(WordCount(), lines, sort=True)

        ``max_workers`` caps the workers the job's steps hold at once, as in `map_reduce`.

        Cancellation: cancelling the call stops the running step and removes every step's
        temporary files; the engine stays usable.
        """
        checked = KeyedOptions.of("run_job", options)
        steps = checked_steps(job)
        check_source(source)
        async with self._job(checked.max_workers) as lane:
            return await run_steps(lane, steps, source, checked)

    async def aclose(self, *, cancel: bool = False) -> None:
        """Stop taking jobs, finish or cancel the running ones, stop the workers. Idempotent.

        Args:
            cancel: ``False`` (the default) drains: running jobs go on to their end and
                their callers get their results. ``True`` cancels them: each stops as if
                its caller had cancelled it (source closed, tasks cancelled, temporary
                files removed) and raises `aiomr.ClosedResourceError` to its caller.

        New jobs are refused (`aiomr.ClosedResourceError`) from the moment this is called.
        Workers of an executor the engine did not create are left running. A call with
        ``cancel=True`` while an earlier call drains cancels the jobs still running, then
        waits for the earlier call to finish; so a graceful shutdown with a deadline is::

            try:
                async with asyncio.timeout(grace):
                    await asyncio.shield(engine.aclose())  # drain ...
            except TimeoutError:
                await engine.aclose(cancel=True)  # ... then cancel what is left

        Cancellation: cancelling this call stops the workers at once.
        """
        if asyncio.current_task() in self._jobs:
            raise RuntimeError("aclose() was called from inside one of the engine's jobs")
        if self._closed:
            if cancel:
                self._jobs.cancel()
            await self._shut.wait()
            return
        self._closed = True
        try:
            if cancel:
                self._jobs.cancel()
            await self._jobs.wait_idle()
        finally:
            try:
                if self._owns_executor:
                    await self._executor.aclose()
            finally:
                self._shut.set()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
