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
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from ._badrecords import DeadLetterFile, OnError, check_on_error
from ._chunker import AnySource
from ._dispatch import judge, lost_worker_error, outcome_of
from ._job import check_max_workers, run_map_phase
from ._keyed_tasks import MapBody, ReduceBody
from ._reducer import Folder
from ._result_files import as_mapping, iter_result_file, iter_sorted
from ._retry import RetryPolicy, Tally
from ._shuffle import (
    RESULT_BATCH,
    MapOutput,
    ReduceOutput,
    ReducePlan,
)
from ._stats import JobStats
from ._worker import execute
from .executors import Executor
from .sources._describe import describe

__all__ = ["DEFAULT_MEMORY_BUDGET", "KeyedOptions", "open_keyed", "run_keyed"]

DEFAULT_MEMORY_BUDGET = 256 * 1024 * 1024
"""Bytes of key state one reduce task holds before it spills a sorted run to disk. Two
workers reducing at once stay near half a gigabyte; larger budgets spill less."""
_STREAM_BATCHES = 8
"""Result batches read per helper-thread hop while streaming."""
_REMOVE_ATTEMPTS = 50
_REMOVE_PAUSE = 0.02
"""How often, and how far apart, removing a job directory is tried before it fails loudly."""


@dataclass(frozen=True, slots=True)
class KeyedOptions:
    """The knobs of a key-based job, validated."""

    partitions: int | None = None
    sort: bool = False
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    temp_dir: str | None = None
    chunk_size: int | None = None
    max_in_flight: int | None = None
    retry: RetryPolicy | None = None
    on_error: OnError = "raise"
    dead_letter: str | os.PathLike[str] | None = None
    max_workers: int | None = None
    """On an engine: the most workers the job's tasks hold at once (``None``: all)."""

    def __post_init__(self) -> None:
        check_on_error(self.on_error, self.dead_letter)
        check_max_workers(self.max_workers)
        if self.retry is not None and not isinstance(self.retry, RetryPolicy):
            raise TypeError(f"retry must be an aiomr.RetryPolicy, got {self.retry!r}")
        for name in ("partitions", "memory_budget", "chunk_size", "max_in_flight"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1")
        if not isinstance(self.sort, bool):
            raise TypeError(f"sort must be a bool, got {self.sort!r}")


def _extend(first: list[MapOutput], second: list[MapOutput]) -> list[MapOutput]:
    first.extend(second)
    return first


async def _reduce_phase(
    executor: Executor,
    plan: ReducePlan,
    outputs: list[MapOutput],
    stats: JobStats,
    policy: RetryPolicy,
) -> list[ReduceOutput]:
    """Reduce every partition in the workers; run a partition again as ``policy`` says.

    A reduce task only reads map files and writes a result file of its own, so running it
    again after its worker died (or after an exception ``policy`` retries) is safe; the
    result file of a lost attempt stays in the job directory until the job ends.
    """
    sections = [
        [(output.path, output.offsets[p]) for output in outputs] for p in range(plan.partitions)
    ]
    code = executor.ship(functools.partial(execute, ReduceBody(plan)))
    running: dict[asyncio.Future[Any], int] = {}
    waiting: dict[asyncio.Future[Any], int] = {}
    tally = Tally(policy)
    replaced_before = getattr(executor, "workers_replaced", 0)

    def submit(partition: int) -> None:
        running[executor.submit(code.fn, sections[partition], partition)] = partition

    try:
        for partition in range(plan.partitions):
            submit(partition)
        results: list[ReduceOutput] = []
        while running or waiting:
            done, _ = await asyncio.wait([*running, *waiting], return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                if future in waiting:  # a backoff ended
                    submit(waiting.pop(future))
                    continue
                partition = running.pop(future)
                where = f"partition {partition} of {plan.partitions}"
                try:
                    try:
                        outcome = outcome_of(future.result(), where)
                    except BrokenProcessPool as exc:
                        raise lost_worker_error(f"reducing {where}", exc) from exc
                except Exception as exc:
                    verdict = judge(exc)
                    delay = tally.again_after(partition, verdict, exc, where)
                    if delay is None:
                        raise
                    stats.partitions_retried += 1
                    waiting[asyncio.ensure_future(asyncio.sleep(delay))] = partition
                    continue
                results.append(outcome.value)
                stats.task_seconds += outcome.seconds
                stats.partitions_done += 1
        stats.spills += sum(r.spills for r in results)
        return sorted(results)
    finally:
        stats.workers_replaced += getattr(executor, "workers_replaced", 0) - replaced_before
        for future in [*running, *waiting]:
            future.cancel()
        code.release()


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
    body = MapBody(
        plan,
        reader=split_source.reader if split_source is not None else None,
        parser=described.parser,
        guarded=options.on_error != "raise",
    )
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
        )
    finally:
        if dead_letter is not None:
            await dead_letter.aclose()
    stats.map_output_keys = sum(output.keys for output in outputs)
    return await _reduce_phase(executor, plan, outputs, stats, options.retry or RetryPolicy())


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
