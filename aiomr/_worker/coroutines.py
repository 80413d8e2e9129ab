"""Coroutine mappers: what a task's ``async def`` mapper does with its records.

Each body here is the ``work`` of a `CoroutineTask` (`aiomr._worker.coroutine_runtime`),
which runs it on the process's runtime loop in a worker or on the caller's loop inline:

* `fold_mapped` (record mode): up to ``concurrency`` records' coroutines at once, each
  paced (``max_per_second``), timed (``record_timeout``) and retried (``retry.retry_on``)
  on its own (`map_concurrently`), their values folded in record order, so a chunk's partial
  is the same whatever order they finished in;
* `map_whole_chunk` (chunk mode): one coroutine for the chunk;
* `pairs_of_records` (key-based jobs): each record's pairs, or its exception;
* `fold_split_mapped`: the lines of a split the worker reads, a window at a time, the file
  read on a helper thread.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from .blame import note_record, reading, shift_record
from .coroutine_runtime import CoroutinePlan, JobState
from .envelope import EMPTY, Counted, Skipped

__all__ = [
    "fold_mapped",
    "fold_split_mapped",
    "map_concurrently",
    "map_whole_chunk",
    "pairs_of_records",
]

# -- one record, one chunk ------------------------------------------------------------------


async def _mapped(state: JobState, mapper: Callable[..., Any], record: Any, index: int) -> Any:
    """``await mapper(record)`` (with the job's resource), paced, timed and retried."""
    plan = state.plan
    retry = plan.retry
    attempt = 1
    while True:
        await state.pace()
        try:
            async with asyncio.timeout(plan.record_timeout):
                if plan.resources is not None:
                    return await mapper(record, await state.opened())
                return await mapper(record)
        except TimeoutError as exc:
            error: Exception = exc
            if plan.record_timeout is not None and not exc.args:
                error = TimeoutError(
                    f"record {index} of the chunk took longer than "
                    f"record_timeout={plan.record_timeout} s"
                )
        except Exception as exc:
            error = exc
        if retry is not None and isinstance(error, retry.retry_on):
            if attempt < retry.max_attempts:
                await asyncio.sleep(retry.delay(attempt))
                attempt += 1
                continue
            error.add_note(
                f"aiomr: the record's coroutine failed {attempt} times "
                f"(max_attempts={retry.max_attempts}); giving up on it"
            )
            error.aiomr_retried = True  # type: ignore[attr-defined]
        raise error


async def map_concurrently(
    state: JobState, mapper: Callable[..., Any], records: list[Any], *, stop_at_error: bool
) -> list[tuple[bool, Any]]:
    """Every record's ``(True, value)`` or ``(False, exception)``, in record order.

    Up to ``concurrency`` coroutines of the job run at once in this process (the bound is
    the job's, shared by its tasks here). With ``stop_at_error``, the first failure stops
    the rest: no more start, those in flight are cancelled, and they come back as
    ``(False, None)`` (not reached).
    """
    results: list[tuple[bool, Any]] = [(False, None)] * len(records)
    children: set[asyncio.Task[None]] = set()
    failed = False

    async def run(index: int, record: Any) -> None:
        nonlocal failed
        try:
            results[index] = (True, await _mapped(state, mapper, record, index))
        except Exception as exc:
            results[index] = (False, exc)
            if stop_at_error and not failed:
                failed = True
                for other in list(children):
                    if other is not asyncio.current_task():
                        other.cancel()

    def done(child: asyncio.Task[None]) -> None:
        children.discard(child)
        state.semaphore.release()  # here, not in run: a task cancelled unstarted runs no code

    try:
        for index, record in enumerate(records):
            await state.semaphore.acquire()
            if failed:
                state.semaphore.release()
                break
            child = asyncio.create_task(run(index, record))
            children.add(child)
            child.add_done_callback(done)
        if children:
            await asyncio.wait(list(children))
    finally:
        pending = list(children)
        for child in pending:
            child.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    return results


async def fold_mapped(
    mapper: Callable[..., Any],
    reducer: Callable[[Any, Any], Any],
    parser: Callable[[Any], Any] | None,
    guarded: bool,
    records: list[Any],
    state: JobState,
) -> Any:
    """A chunk's records mapped concurrently and folded in record order: the partial, or
    with ``guarded`` a `Counted` that leaves out the records that failed."""
    skipped: list[Skipped] = []
    if parser is not None:
        parsed: list[Any] = []
        positions: list[int] = []
        for index, raw in enumerate(records):
            try:
                parsed.append(parser(raw))
                positions.append(index)
            except Exception as exc:
                if not guarded:
                    note_record(exc, index)
                    raise
                skipped.append(Skipped.of(index, raw, exc, None))
    else:
        parsed, positions = records, list(range(len(records)))
    found = await map_concurrently(state, mapper, parsed, stop_at_error=not guarded)
    acc: Any = EMPTY
    for (ok, value), index in zip(found, positions, strict=True):
        if not ok:
            if not guarded:
                if value is None:  # stopped by an earlier failure: not reached
                    continue
                note_record(value, index)
                raise value
            skipped.append(Skipped.of(index, records[index], value, None))
            continue
        try:
            acc = value if acc is EMPTY else reducer(acc, value)
        except Exception as exc:
            note_record(exc, index)
            raise
    if not guarded:
        return acc
    skipped.sort(key=lambda bad: bad.position)
    return Counted(acc, len(records), tuple(skipped))


async def map_whole_chunk(mapper: Callable[..., Any], records: list[Any], state: JobState) -> Any:
    """Chunk mode: one coroutine for the whole chunk, paced, timed and retried as one."""
    return await _mapped(state, mapper, records, 0)


# -- key-based jobs: each record's pairs ---------------------------------------------------


class _Collected:
    """An async generator mapper as a coroutine function: the pairs it yields, as a list."""

    def __init__(self, mapper: Callable[..., Any]) -> None:
        self.mapper = mapper

    async def __call__(self, *args: Any) -> list[Any]:
        return [pair async for pair in self.mapper(*args)]


async def pairs_of_records(
    mapper: Callable[..., Any],
    parser: Callable[[Any], Any] | None,
    records: list[Any],
    state: JobState,
) -> list[tuple[bool, Any]]:
    """Each record's pairs (a list) or its exception, in record order; every record runs,
    so each failure is that record's own (a key-based job then blames or skips it)."""
    from .._callables import kind_of

    call = _Collected(mapper) if kind_of(mapper) == "async generator" else mapper
    found: list[tuple[bool, Any]] = [(False, None)] * len(records)
    inputs, positions = [], []
    for index, raw in enumerate(records):
        try:
            inputs.append(parser(raw) if parser is not None else raw)
            positions.append(index)
        except Exception as exc:
            found[index] = (False, exc)
    mapped = await map_concurrently(state, call, inputs, stop_at_error=False)
    for index, (ok, value) in zip(positions, mapped, strict=True):
        found[index] = (True, list(value)) if ok else (False, value)
    return found


# -- splits the workers read (files) ---------------------------------------------------------

WINDOW_PER_CONCURRENCY = 32
"""A split is mapped in windows of this many times ``concurrency`` records, read one after
the other: the split never sits in memory whole, and each window's last round trip (when
fewer coroutines are left than ``concurrency``) costs about 1/32 of its time."""


def _window_size(plan: CoroutinePlan) -> int:
    return WINDOW_PER_CONCURRENCY * plan.concurrency


def _located_skips(reader: Any, lines: list[Any], found: Counted) -> Counted:
    """``found`` with each skipped record located in its file (``path:line``)."""
    value, count, skipped, read = found
    located = tuple(
        bad._replace(where=str(reader.where(lines[bad.position][0], lines[bad.position][1])))
        for bad in skipped
    )
    return Counted(value, count, located, read)


def _folded(acc: Any, value: Any, reducer: Callable[[Any, Any], Any]) -> Any:
    if value is EMPTY:
        return acc
    return value if acc is EMPTY else reducer(acc, value)


async def fold_split_mapped(
    reader: Any,
    mapper: Callable[..., Any],
    reducer: Callable[[Any, Any], Any],
    guarded: bool,
    splits: list[Any],
    state: JobState,
) -> Counted:
    """Record mode over a split the worker reads: window after window of its records mapped
    concurrently, the windows' partials folded in order; the file is read on a helper
    thread, never on the loop."""
    from .bodies import close_reading

    if guarded:
        lines = await asyncio.to_thread(lambda: list(reading(reader.located_lines(splits[0]))))
        records = [line for _, _, line in lines]
        found = await fold_mapped(mapper, reducer, reader.decode_and_parse, True, records, state)
        return _located_skips(reader, lines, found)
    blocks = reader.line_blocks(splits[0])
    lines_read = reading(itertools.chain.from_iterable(blocks))
    size = _window_size(state.plan)
    acc: Any = EMPTY
    count = 0
    try:
        while window := await asyncio.to_thread(lambda: list(itertools.islice(lines_read, size))):
            try:
                value = await fold_mapped(mapper, reducer, None, False, window, state)
            except Exception as exc:
                shift_record(exc, count)  # from the window's first record to the split's
                raise
            acc = _folded(acc, value, reducer)
            count += len(window)
    finally:
        await asyncio.to_thread(close_reading, blocks)
    return Counted(acc, count)
