"""Executors: where map tasks run.

* `ProcessExecutor` (``executor="process"``, the default): worker processes;
* `ThreadExecutor` (``"thread"``): threads, for mappers that release the GIL;
* `InlineExecutor` (``"inline"``): the caller itself, for debugging;
* `FuturesExecutor`: any `concurrent.futures.Executor` you already have;
* `DaskExecutor` (``"dask"``): a Dask cluster, with the optional extra
  ``pip install 'aiomr[dask]'`` (imported on first use).

Subclass `Executor` to add a backend.
"""

from typing import TYPE_CHECKING, Any

from ._base import Executor as Executor
from ._base import ShippedCode as ShippedCode
from ._futures import FuturesExecutor as FuturesExecutor
from ._inline import InlineExecutor as InlineExecutor
from ._process import ProcessExecutor as ProcessExecutor
from ._resolve import ExecutorSpec as ExecutorSpec
from ._resolve import resolve_executor as resolve_executor
from ._thread import ThreadExecutor as ThreadExecutor

if TYPE_CHECKING:
    from ._dask import DaskExecutor as DaskExecutor

__all__ = [
    "DaskExecutor",
    "Executor",
    "ExecutorSpec",
    "FuturesExecutor",
    "InlineExecutor",
    "ProcessExecutor",
    "ShippedCode",
    "ThreadExecutor",
    "resolve_executor",
]


def __getattr__(name: str) -> Any:
    # Dask is an optional dependency: import it only when its executor is asked for.
    if name == "DaskExecutor":
        from ._dask import DaskExecutor

        return DaskExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
