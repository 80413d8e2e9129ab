"""Pin the public API: a change here is a change for every user."""

from __future__ import annotations

import importlib
import importlib.util

import pytest

import aiomr
import aiomr.executors


def test_top_level_members() -> None:
    assert aiomr.__all__ == [
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
    assert aiomr.__all__ == sorted(aiomr.__all__, key=str)
    for name in aiomr.__all__:
        assert hasattr(aiomr, name), name


def test_executors_members() -> None:
    assert aiomr.executors.__all__ == [
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


def test_sources_members() -> None:
    assert aiomr.sources.__all__ == [
        "ArrowSource",
        "Batch",
        "BatchReader",
        "FileSource",
        "LineSource",
        "PageSplit",
        "ParquetSource",
        "Parser",
        "QueryRangesSource",
        "QuerySource",
        "RangeSplit",
        "Source",
        "Split",
        "SplitSource",
        "arrow",
        "files",
        "lines",
        "parquet",
        "postgres_ranges",
        "query",
        "sqlite_ranges",
    ]


def test_sinks_members() -> None:
    assert aiomr.sinks.__all__ == ["write_rows"]


def test_exception_tree() -> None:
    assert issubclass(aiomr.RecordError, aiomr.AiomrError)
    assert issubclass(aiomr.RecordError, ValueError)
    assert issubclass(aiomr.ClosedResourceError, aiomr.AiomrError)
    assert issubclass(aiomr.EmptySourceError, aiomr.AiomrError)
    assert issubclass(aiomr.EmptySourceError, ValueError)
    assert issubclass(aiomr.MapperOutputError, aiomr.AiomrError)
    assert issubclass(aiomr.MapperOutputError, TypeError)
    assert issubclass(aiomr.BrokenWorkerError, aiomr.AiomrError)
    assert issubclass(aiomr.UnpicklableError, aiomr.BrokenWorkerError)
    assert issubclass(aiomr.UnpicklableError, TypeError)
    assert issubclass(aiomr.WorkerTraceback, aiomr.AiomrError)


PACKAGES = ["aiomr", "aiomr.executors", "aiomr.sinks", "aiomr.sources"]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_name_resolves_to_its_module_object(name: str) -> None:
    package = importlib.import_module(name)
    where = package._WHERE
    assert sorted(where) == package.__all__
    for member in package.__all__:
        if member == "DaskExecutor" and importlib.util.find_spec("distributed") is None:
            continue  # the optional extra is not installed
        value = getattr(package, member)
        if where[member] == ".":
            assert value is importlib.import_module(f"{name}.{member}")
        else:
            assert value is getattr(importlib.import_module(where[member], name), member)
        assert member in dir(package)


@pytest.mark.parametrize("name", PACKAGES)
def test_an_unknown_name_is_an_attribute_error(name: str) -> None:
    package = importlib.import_module(name)
    with pytest.raises(AttributeError, match=f"module '{name}' has no attribute 'map_reduse'"):
        package.map_reduse  # noqa: B018
    with pytest.raises(ImportError, match="map_reduse"):
        exec(f"from {name} import map_reduse", {})
