"""Executors: where map tasks run.

* `ProcessExecutor` (``executor="process"``, the default): worker processes;
* `ThreadExecutor` (``"thread"``): threads, for mappers that release the GIL;
* `InlineExecutor` (``"inline"``): the caller itself, for debugging;
* `FuturesExecutor`: any `concurrent.futures.Executor` you already have;
* `DaskExecutor` (``"dask"``): a Dask cluster, with the optional extra
  ``pip install 'aiomr[dask]'`` (imported on first use).

Subclass `Executor` to add a backend. An executor that can tell how a task's worker was
lost fails the task with `WorkerLost`, so the retry rules know whose fault it was.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from ._base import Executor as Executor
    from ._base import ShippedCode as ShippedCode
    from ._base import WorkerLost as WorkerLost
    from ._dask import DaskExecutor as DaskExecutor
    from ._futures import FuturesExecutor as FuturesExecutor
    from ._inline import InlineExecutor as InlineExecutor
    from ._process import ProcessExecutor as ProcessExecutor
    from ._resolve import ExecutorSpec as ExecutorSpec
    from ._resolve import resolve_executor as resolve_executor
    from ._thread import ThreadExecutor as ThreadExecutor

__all__ = [
    "DaskExecutor",
    "Executor",
    "ExecutorSpec",
    "FuturesExecutor",
    "InlineExecutor",
    "ProcessExecutor",
    "ShippedCode",
    "ThreadExecutor",
    "WorkerLost",
    "resolve_executor",
]

_WHERE: dict[str, str] = {
    "DaskExecutor": "._dask",
    "Executor": "._base",
    "ExecutorSpec": "._resolve",
    "FuturesExecutor": "._futures",
    "InlineExecutor": "._inline",
    "ProcessExecutor": "._process",
    "ShippedCode": "._base",
    "ThreadExecutor": "._thread",
    "WorkerLost": "._base",
    "resolve_executor": "._resolve",
}

if not TYPE_CHECKING:  # imported on first use: see aiomr._lazy
    __getattr__, __dir__ = _lazy_exports(__name__, _WHERE)
