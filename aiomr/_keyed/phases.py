"""Key-based jobs, caller side: map phase, shuffle through files, parallel reduce, results.

::

    source ──► map phase (the core: chunk, dispatch, fold) ──► list of MapOutput files
                 map_keyed in workers: map, combine, partition, write
                                   │
                                   ▼
               reduce phase: one reduce_partition task per partition, in the workers
                 (KeyedStore: memory budget, sorted runs spilled, external merge)
                                   │
                                   ▼
               result files ──► dict (run_by_key) or a stream of pairs (open_by_key)

The caller handles only file descriptions, never pairs, until it reads results; its memory
stays flat when results are streamed. Every file lives in one job directory, removed in
``finally`` on success, error and cancellation alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import shutil
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .._badrecords import DeadLetterFile
from .._chunker import AnySource
from .._coroutine_jobs import coroutine_job
from .._dispatch import Phase, run_phase
from .._map_phase import run_map_phase
from .._options import KeyedOptions
from .._outcomes import lost_worker_error, outcome_of
from .._reducer import Folder
from .._retry import RetryPolicy
from .._stats import JobStats
from .._worker.coroutine_runtime import CoroutinePlan, CoroutineTask
from .._worker.coroutines import pairs_of_records
from .._worker.run import execute
from ..executors import Executor
from ..sources._describe import describe
from .result_files import as_mapping, iter_result_file, iter_sorted
from .shuffle import (
    RESULT_BATCH,
    MapOutput,
    ReduceOutput,
    ReducePlan,
)
from .specs import FoldByKey, GroupByKey, KeyedSpec, ReduceByKey
from .tasks import CoroutineMapBody, MapBody, ReduceBody

__all__ = ["collect_keyed", "open_keyed", "plan_for", "run_keyed"]

_STREAM_BATCHES = 8
"""Result batches read per helper-thread hop while streaming."""
_REMOVE_ATTEMPTS = 50
_REMOVE_PAUSE = 0.02
"""How often, and how far apart, removing a job directory is tried before it fails loudly."""


def _extend(first: list[MapOutput], second: list[MapOutput]) -> list[MapOutput]:
    first.extend(second)
    return first


class _Partitions(Phase[int]):
    """A reduce phase: one task per partition, reading its section of every map file."""

    def __init__(self, plan: ReducePlan, outputs: list[MapOutput], stats: JobStats) -> None:
        self._plan = plan
        self._sections = [
            [(output.path, output.offsets[p]) for output in outputs] for p in range(plan.partitions)
        ]
        self._next = 0
        self._stats = stats
        self.results: list[ReduceOutput] = []

    async def next_task(self) -> int | None:
        if self._next == self._plan.partitions:
            return None
        self._next += 1
        return self._next - 1

    async def arguments(self, task: int) -> tuple[Any, ...]:
        return (self._sections[task], task)

    def identify(self, task: int) -> tuple[int, str]:
        return task, f"partition {task} of {self._plan.partitions}"

    def result(self, future: asyncio.Future[Any], task: int) -> Any:
        where = self.identify(task)[1]
        try:
            return outcome_of(future.result(), where)
        except BrokenProcessPool as exc:
            raise lost_worker_error(f"reducing {where}", exc) from exc

    def retrying(self, task: int) -> None:
        self._stats.partitions_retried += 1

    async def finished(self, task: int, value: Any) -> None:
        self.results.append(value.value)
        self._stats.task_seconds += value.seconds
        self._stats.partitions_done += 1


async def _reduce_phase(
    executor: Executor,
    plan: ReducePlan,
    outputs: list[MapOutput],
    stats: JobStats,
    policy: RetryPolicy,
) -> list[ReduceOutput]:
    """Reduce every partition in the workers; run a partition again as ``policy`` says.

    A reduce task only reads map files and writes a result file of its own, so running it
    again after its worker died (or after an exception ``policy`` retries, or after its
    ``task_timeout``) is safe; the result file of a lost attempt stays in the job directory
    until the job ends. Every partition is submitted at once: the tasks hold only file
    coordinates.
    """
    partitions = _Partitions(plan, outputs, stats)
    code = executor.ship(functools.partial(execute, ReduceBody(plan)))
    try:
        await run_phase(
            partitions, executor, code, stats, max_in_flight=plan.partitions, retry=policy
        )
    finally:
        code.release()
    stats.spills += sum(r.spills for r in partitions.results)
    return sorted(partitions.results)


async def run_keyed(
    executor: Executor,
    source: AnySource,
    plan_of: Any,
    options: KeyedOptions,
    stats: JobStats,
    directory: str,
) -> list[ReduceOutput]:
    """Run the map and reduce phases; return the partitions' result files, in order."""
    partitions = options.partitions or 2 * executor.max_workers
    plan: ReducePlan = plan_of(partitions, directory)
    # The plan goes into the map body, so it is shipped once per job with it.
    described = describe(source)
    split_source = described.worker_side()
    batches = None
    if options.mode == "batches":
        batches = split_source.batch_reader() if split_source is not None else None
        if batches is None:
            raise ValueError(
                "mode='batches' needs a columnar source: aiomr.sources.parquet(...), "
                "aiomr.sources.arrow(...), or aiomr.sources.files(..., format='tsv', 'csv' "
                "or 'jsonl')"
            )
    async with coroutine_job(plan.spec.mapper, options, executor) as coroutines:
        if coroutines is not None:
            if split_source is not None:
                raise ValueError(
                    "an async def mapper takes records the caller sends (iterables, async "
                    "iterables, aiomr.sources.lines, queries), not a source the workers "
                    "read themselves: read it with a plain mapper, or stream it with "
                    "aiomr.sources.lines"
                )
            pairs = CoroutineTask(
                coroutines,
                functools.partial(pairs_of_records, plan.spec.mapper, described.parser),
            )
            coroutine_body = CoroutineMapBody(plan, pairs, guarded=options.on_error != "raise")
            here = executor.runs_coroutines
            body: Any = coroutine_body.here if here else coroutine_body
        else:
            body = MapBody(
                plan,
                reader=split_source.reader if split_source is not None else None,
                parser=described.parser,
                guarded=options.on_error != "raise",
                batches=batches,
                batch_format=options.batch_format,
            )
        outputs = await _map_phase(executor, source, body, plan, options, stats, coroutines)
    stats.map_output_keys = sum(output.keys for output in outputs)
    return await _reduce_phase(executor, plan, outputs, stats, options.retry or RetryPolicy())


async def _map_phase(
    executor: Executor,
    source: AnySource,
    body: Any,
    plan: ReducePlan,
    options: KeyedOptions,
    stats: JobStats,
    coroutines: CoroutinePlan | None,
) -> list[MapOutput]:
    dead_letter = DeadLetterFile(options.dead_letter) if options.dead_letter else None
    try:
        outputs: list[MapOutput] = await run_map_phase(
            executor,
            source,
            body,
            Folder(_extend, initial=[]),
            chunk_size=options.chunk_size,
            max_in_flight=options.max_in_flight,
            stats=stats,
            parts=_spec_parts(plan),
            retry=options.retry,
            on_error=options.on_error,
            dead_letter=dead_letter,
            coroutines=coroutines,
        )
    finally:
        if dead_letter is not None:
            await dead_letter.aclose()
    return outputs


def _spec_parts(plan: ReducePlan) -> dict[str, object]:
    spec = plan.spec
    names = ("mapper", "reducer", "combiner", "binop", "combine", "initial_factory")
    return {name: getattr(spec, name) for name in names if getattr(spec, name, None) is not None}


def make_directory(temp_dir: str | None) -> str:
    """Create the job's private directory for map outputs, spills and results."""
    return tempfile.mkdtemp(prefix="aiomr-job-", dir=temp_dir)


def _remove_now(directory: str) -> None:
    """Remove ``directory`` for good, even while workers of a failed job still write to it.

    A map or reduce task that was already running when its job failed or was cancelled
    keeps running, and may create a file in the job directory at any moment. Renaming the
    directory first means no task started from now on can find it (their paths name the old
    directory; a late write fails in the worker, where nobody waits for it); the removal is
    repeated until no write that was already under way can have added anything back.
    """
    doomed = f"{directory}-removing"
    try:
        os.rename(directory, doomed)
    except FileNotFoundError:
        return
    for _ in range(_REMOVE_ATTEMPTS):
        shutil.rmtree(doomed, ignore_errors=True)
        if not os.path.lexists(doomed):
            return
        time.sleep(_REMOVE_PAUSE)
    shutil.rmtree(doomed)  # raise what stops it: a leftover directory must not be silent


async def new_directory(temp_dir: str | None) -> str:
    """Create the job's directory off the event loop; remove it again if cancelled meanwhile.

    The helper thread makes the directory whether or not the caller is still waiting, so a
    cancellation that lands between its making and the caller's ``try`` must not leak it.
    """
    making = asyncio.ensure_future(asyncio.to_thread(make_directory, temp_dir))
    try:
        return await asyncio.shield(making)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await remove_directory(await making)
        raise


async def remove_directory(directory: str) -> None:
    """Remove the job's directory off the event loop, even while being cancelled."""
    await asyncio.shield(asyncio.to_thread(_remove_now, directory))


def _result_batches(results: list[ReduceOutput], sort: bool) -> Iterator[list[tuple[Any, Any]]]:
    """Yield the job's pairs in batches: as stored, or merged in key order."""
    if not sort:
        for result in results:
            yield from iter_result_file(result.path)
        return
    merged = iter_sorted([r.path for r in results])
    while batch := list(itertools.islice(merged, RESULT_BATCH)):
        yield batch


def _read_mapping(results: list[ReduceOutput], sort: bool) -> dict[Any, Any]:
    return as_mapping(_result_batches(results, sort))


def _read_pairs(results: list[ReduceOutput], sort: bool) -> list[tuple[Any, Any]]:
    pairs: list[tuple[Any, Any]] = []
    for batch in _result_batches(results, sort):
        pairs.extend(batch)
    return pairs


async def collect_keyed(
    executor: Executor,
    source: AnySource,
    plan_of: Any,
    options: KeyedOptions,
    stats: JobStats | None,
    *,
    as_pairs: bool = False,
) -> Any:
    """Run a key-based job and read every result into a dict (or a list of pairs)."""
    stats = stats if stats is not None else JobStats()
    stats.started_at = time.monotonic()
    directory = await new_directory(options.temp_dir)
    try:
        results = await run_keyed(executor, source, plan_of, options, stats, directory)
        reader = _read_pairs if as_pairs else _read_mapping
        return await asyncio.to_thread(reader, results, options.sort)
    finally:
        stats.finished_at = time.monotonic()
        await remove_directory(directory)


class _Batches:
    """Pull result batches from a blocking iterator on a helper thread, a few per hop."""

    def __init__(self, pairs: Iterator[tuple[Any, Any]]) -> None:
        self._pairs = pairs

    def take(self) -> list[tuple[Any, Any]]:
        out: list[tuple[Any, Any]] = []
        for pair in self._pairs:
            out.append(pair)
            if len(out) >= 1024 * _STREAM_BATCHES:
                break
        return out


@contextlib.asynccontextmanager
async def open_keyed(
    executor: Executor,
    source: AnySource,
    plan_of: Any,
    options: KeyedOptions,
    stats: JobStats | None,
) -> AsyncIterator[AsyncIterator[tuple[Any, Any]]]:
    """Run a key-based job, then stream its ``(key, value)`` pairs from the result files."""
    stats = stats if stats is not None else JobStats()
    stats.started_at = time.monotonic()
    directory = await new_directory(options.temp_dir)
    try:
        results = await run_keyed(executor, source, plan_of, options, stats, directory)

        async def stream() -> AsyncGenerator[tuple[Any, Any], None]:
            batches = _Batches(
                itertools.chain.from_iterable(_result_batches(results, options.sort))
            )
            while batch := await asyncio.to_thread(batches.take):
                for pair in batch:
                    yield pair

        pairs = stream()
        try:
            yield pairs
        finally:
            await pairs.aclose()
    finally:
        stats.finished_at = time.monotonic()
        await remove_directory(directory)


def plan_for(spec: KeyedSpec, options: KeyedOptions) -> Callable[[int, str], ReducePlan]:
    """Return how to plan ``spec``'s reduce side once the partitions and the job's directory
    are known; refuse anything but the three spec types."""
    if not isinstance(spec, ReduceByKey | GroupByKey | FoldByKey):
        raise TypeError(
            f"spec must be a ReduceByKey, GroupByKey or FoldByKey, got {type(spec).__qualname__}"
        )

    def plan_of(partitions: int, directory: str) -> ReducePlan:
        return ReducePlan(spec, partitions, directory, options.memory_budget, options.sort)

    return plan_of
