"""Executors: where map tasks run.

* `ProcessExecutor` (``executor="process"``, the default): worker processes;
* `ThreadExecutor` (``"thread"``): threads, for mappers that release the GIL;
* `InlineExecutor` (``"inline"``): the caller itself, for debugging;
* `FuturesExecutor`: any `concurrent.futures.Executor` you already have.

Subclass `Executor` to add a backend.
"""

from ._base import Executor as Executor
from ._base import ShippedCode as ShippedCode
from ._futures import FuturesExecutor as FuturesExecutor
from ._inline import InlineExecutor as InlineExecutor
from ._process import ProcessExecutor as ProcessExecutor
from ._resolve import ExecutorSpec as ExecutorSpec
from ._resolve import resolve_executor as resolve_executor
from ._thread import ThreadExecutor as ThreadExecutor

__all__ = [
    "Executor",
    "ExecutorSpec",
    "FuturesExecutor",
    "InlineExecutor",
    "ProcessExecutor",
    "ShippedCode",
    "ThreadExecutor",
    "resolve_executor",
]
