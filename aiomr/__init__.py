"""aiomr: MapReduce for asyncio.

``await aiomr.map_reduce(source, mapper, reducer)`` maps records in worker processes and folds
the results as they complete, while the event loop keeps serving everything else.

Every name below is imported on first use (PEP 562): ``import aiomr`` costs next to nothing,
and a worker process, which imports ``aiomr`` to reach its task code, loads only what its
tasks run, not the event-loop side or the database drivers.
"""

from __future__ import annotations

import logging as _logging
from typing import TYPE_CHECKING

from ._lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from . import executors as executors
    from . import sinks as sinks
    from . import sources as sources
    from ._api import aggregate as aggregate
    from ._api import map_reduce as map_reduce
    from ._api import open_aggregate as open_aggregate
    from ._api import open_stream as open_stream
    from ._api import open_windows as open_windows
    from ._badrecords import BadRecord as BadRecord
    from ._columnar.aggregate import Aggregate as Aggregate
    from ._columnar.aggregate_job import ParquetParts as ParquetParts
    from ._columnar.partition_apply import PartitionApply as PartitionApply
    from ._engine import Engine as Engine
    from ._exceptions import AiomrError as AiomrError
    from ._exceptions import BrokenInputError as BrokenInputError
    from ._exceptions import BrokenWorkerError as BrokenWorkerError
    from ._exceptions import ClosedResourceError as ClosedResourceError
    from ._exceptions import EmptySourceError as EmptySourceError
    from ._exceptions import MapperOutputError as MapperOutputError
    from ._exceptions import RecordError as RecordError
    from ._exceptions import UnpicklableError as UnpicklableError
    from ._exceptions import WorkerTraceback as WorkerTraceback
    from ._jobclass import Job as Job
    from ._keyed.specs import FoldByKey as FoldByKey
    from ._keyed.specs import GroupByKey as GroupByKey
    from ._keyed.specs import ReduceByKey as ReduceByKey
    from ._keyed_api import fold_by_key as fold_by_key
    from ._keyed_api import group_by_key as group_by_key
    from ._keyed_api import map_reduce_by_key as map_reduce_by_key
    from ._keyed_api import open_by_key as open_by_key
    from ._loop import loop_factory as loop_factory
    from ._loop import run as run
    from ._options import AggregateKeywords as AggregateKeywords
    from ._options import JobKeywords as JobKeywords
    from ._options import KeyedKeywords as KeyedKeywords
    from ._options import MapKeywords as MapKeywords
    from ._options import RunKeywords as RunKeywords
    from ._options import StreamKeywords as StreamKeywords
    from ._options import WindowKeywords as WindowKeywords
    from ._progress import Progress as Progress
    from ._progress import progress as progress
    from ._progress import report_progress as report_progress
    from ._progress import show_progress as show_progress
    from ._results import top as top
    from ._results import write_csv as write_csv
    from ._results import write_jsonl as write_jsonl
    from ._retry import RetryPolicy as RetryPolicy
    from ._stats import JobStats as JobStats
    from ._steps import Step as Step
    from ._stream import Snapshot as Snapshot
    from ._windows import Window as Window

__version__ = "0.1.0"

__all__ = [
    "Aggregate",
    "AggregateKeywords",
    "AiomrError",
    "BadRecord",
    "BrokenInputError",
    "BrokenWorkerError",
    "ClosedResourceError",
    "EmptySourceError",
    "Engine",
    "FoldByKey",
    "GroupByKey",
    "Job",
    "JobKeywords",
    "JobStats",
    "KeyedKeywords",
    "MapKeywords",
    "MapperOutputError",
    "ParquetParts",
    "PartitionApply",
    "Progress",
    "RecordError",
    "ReduceByKey",
    "RetryPolicy",
    "RunKeywords",
    "Snapshot",
    "Step",
    "StreamKeywords",
    "UnpicklableError",
    "Window",
    "WindowKeywords",
    "WorkerTraceback",
    "aggregate",
    "executors",
    "fold_by_key",
    "group_by_key",
    "loop_factory",
    "map_reduce",
    "map_reduce_by_key",
    "open_aggregate",
    "open_by_key",
    "open_stream",
    "open_windows",
    "progress",
    "report_progress",
    "run",
    "show_progress",
    "sinks",
    "sources",
    "top",
    "write_csv",
    "write_jsonl",
]

_WHERE: dict[str, str] = {
    "Aggregate": "._columnar.aggregate",
    "AggregateKeywords": "._options",
    "AiomrError": "._exceptions",
    "BadRecord": "._badrecords",
    "BrokenInputError": "._exceptions",
    "BrokenWorkerError": "._exceptions",
    "ClosedResourceError": "._exceptions",
    "EmptySourceError": "._exceptions",
    "Engine": "._engine",
    "FoldByKey": "._keyed.specs",
    "GroupByKey": "._keyed.specs",
    "Job": "._jobclass",
    "JobKeywords": "._options",
    "JobStats": "._stats",
    "KeyedKeywords": "._options",
    "MapKeywords": "._options",
    "MapperOutputError": "._exceptions",
    "ParquetParts": "._columnar.aggregate_job",
    "PartitionApply": "._columnar.partition_apply",
    "Progress": "._progress",
    "RecordError": "._exceptions",
    "ReduceByKey": "._keyed.specs",
    "RetryPolicy": "._retry",
    "RunKeywords": "._options",
    "Snapshot": "._stream",
    "Step": "._steps",
    "StreamKeywords": "._options",
    "UnpicklableError": "._exceptions",
    "Window": "._windows",
    "WindowKeywords": "._options",
    "WorkerTraceback": "._exceptions",
    "aggregate": "._api",
    "executors": ".",
    "fold_by_key": "._keyed_api",
    "group_by_key": "._keyed_api",
    "loop_factory": "._loop",
    "map_reduce": "._api",
    "map_reduce_by_key": "._keyed_api",
    "open_by_key": "._keyed_api",
    "open_aggregate": "._api",
    "open_stream": "._api",
    "open_windows": "._api",
    "progress": "._progress",
    "report_progress": "._progress",
    "run": "._loop",
    "show_progress": "._progress",
    "sinks": ".",
    "sources": ".",
    "top": "._results",
    "write_csv": "._results",
    "write_jsonl": "._results",
}
"""The module each public name comes from (``"."``: a subpackage of that name)."""


if not TYPE_CHECKING:  # type checkers read the imports above instead
    __getattr__, __dir__ = _lazy_exports(__name__, _WHERE)

# The library logs, never prints; where the application configures no logging, say nothing.
_logging.getLogger(__name__).addHandler(_logging.NullHandler())
