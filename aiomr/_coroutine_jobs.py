"""The caller's side of a job whose mapper is an ``async def`` function.

`coroutine_job` checks the coroutine options against the mapper and the executor, makes the
job's `CoroutinePlan` (which travels to the workers with the job's code), and keeps the
marker file that tells the workers the job still runs: removed when the job ends, however
it ends, so that every worker cancels what is left of the job's coroutines and closes its
resources (`aiomr._worker.coroutine_runtime`). On the caller's loop (``executor="inline"``) the
job's coroutines are ended here directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from ._callables import describe, kind_of
from ._options import RunOptions
from ._worker.coroutine_runtime import DEFAULT_CONCURRENCY, CoroutinePlan, end_here
from .executors import Executor

__all__ = ["COROUTINE_OPTIONS", "coroutine_job", "is_coroutine_mapper"]

COROUTINE_OPTIONS = ("concurrency", "record_timeout", "max_per_second", "resources")
"""The options that only an ``async def`` mapper takes."""
COROUTINE_TASK_SECONDS = 1.0
"""Aim of the adaptive chunk sizing for coroutine mappers: a chunk's last coroutines leave
the worker's others idle while they finish (about one round trip per chunk), so chunks are
longer than for plain mappers: about 2% of the time at a 20 ms round trip."""
CHUNKS_PER_CONCURRENCY = 4
"""A coroutine mapper's chunks hold at least this many times ``concurrency`` records, so
that a worker keeps its coroutines busy through most of a chunk."""


def is_coroutine_mapper(mapper: object) -> bool:
    """Whether ``mapper`` is an ``async def`` function or an async generator function (or
    wraps one)."""
    return kind_of(mapper) in ("coroutine", "async generator")


def smallest_chunk(plan: CoroutinePlan | None) -> int:
    """The fewest records in a chunk of a job with ``plan``."""
    return 1 if plan is None else CHUNKS_PER_CONCURRENCY * plan.concurrency


@contextlib.asynccontextmanager
async def coroutine_job(
    mapper: Callable[..., Any], options: RunOptions, executor: Executor
) -> AsyncIterator[CoroutinePlan | None]:
    """The plan of a job whose mapper is a coroutine function, for as long as the job runs;
    ``None`` for a plain mapper (whose job then must not have coroutine options)."""
    given = [name for name in COROUTINE_OPTIONS if getattr(options, name) is not None]
    if not is_coroutine_mapper(mapper):
        if given:
            raise ValueError(
                f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for an async def "
                f"mapper; mapper {describe(mapper)} is a plain function"
            )
        yield None
        return
    if options.resources is not None and not executor.same_machine:
        raise ValueError(
            f"resources= needs workers on the caller's machine; {executor.name} may run "
            "them elsewhere: open the resource inside the mapper instead"
        )
    here = executor.runs_coroutines
    alive = None if here else await asyncio.to_thread(_new_marker)
    rate = options.max_per_second
    if rate is not None and not here and not executor.in_process:
        rate = rate / executor.max_workers  # each worker process paces its own share
    plan = CoroutinePlan(
        job=uuid.uuid4().hex,
        concurrency=options.concurrency or DEFAULT_CONCURRENCY,
        record_timeout=options.record_timeout,
        per_second=rate,
        retry=options.retry,
        resources=options.resources,
        alive=alive,
    )
    try:
        yield plan
    finally:
        if alive is None:
            await end_here(plan.job)
        else:
            await asyncio.to_thread(_remove, alive)


def _new_marker() -> str:
    fd, path = tempfile.mkstemp(prefix="aiomr-job-", suffix=".running")
    os.close(fd)
    return path


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
