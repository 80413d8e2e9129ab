"""Turn the ``executor=`` argument into an `Executor` and say who owns it."""

from __future__ import annotations

import concurrent.futures
from typing import Literal, TypeAlias

from ._base import Executor
from ._futures import FuturesExecutor
from ._inline import InlineExecutor
from ._process import ProcessExecutor
from ._thread import ThreadExecutor

__all__ = ["ExecutorSpec", "resolve_executor"]

ExecutorSpec: TypeAlias = (
    Literal["process", "thread", "inline", "dask"] | Executor | concurrent.futures.Executor
)
"""What ``executor=`` accepts: a name, an aiomr executor, or a concurrent.futures executor."""

_NAMES = ("process", "thread", "inline", "dask")


def resolve_executor(
    spec: ExecutorSpec, *, max_workers: int | None = None
) -> tuple[Executor, bool]:
    """Return the executor for ``spec`` and whether the caller owns (and must close) it.

    Executors created from a name are owned. ``"dask"`` connects to the scheduler Dask's
    configuration names, or starts a local cluster of ``max_workers`` processes (see
    `aiomr.executors.DaskExecutor`). An aiomr executor passed in belongs to whoever
    passed it. A concurrent.futures executor is wrapped in an adapter that the caller owns;
    closing the adapter never shuts the wrapped executor down.
    """
    if max_workers is not None and (isinstance(max_workers, bool) or max_workers < 1):
        raise ValueError("max_workers must be >= 1")
    if isinstance(spec, str):
        if spec == "process":
            return ProcessExecutor(max_workers), True
        if spec == "thread":
            return ThreadExecutor(max_workers), True
        if spec == "inline":
            return InlineExecutor(), True
        if spec == "dask":
            from ._dask import DaskExecutor  # an optional dependency: imported on demand

            return DaskExecutor(max_workers=max_workers), True
        raise ValueError(f"executor must be one of {', '.join(map(repr, _NAMES))}, got {spec!r}")
    if isinstance(spec, Executor):
        return spec, False
    if isinstance(spec, concurrent.futures.Executor):
        return FuturesExecutor(spec, max_workers=max_workers), True
    raise TypeError(
        "executor must be 'process', 'thread', 'inline', 'dask', an aiomr.executors.Executor or a "
        f"concurrent.futures.Executor, got {type(spec).__qualname__}"
    )
