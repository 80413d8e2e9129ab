"""One definition of a job's options: every entry point takes exactly its options' keywords.

The ``TypedDict`` views (what type checkers see) and the dataclasses (defaults and checks) must
name the same options with the same types, and each entry point's signature must be its
explicit parameters plus one ``**options`` of the right view; a misspelt keyword is refused
before any work starts.
"""

from __future__ import annotations

import dataclasses
import inspect
import operator
import re
from collections.abc import Callable
from typing import Any

import pytest

import aiomr
from aiomr import _options
from aiomr._options import (
    AggregateKeywords,
    AggregateOptions,
    JobKeywords,
    JobOptions,
    KeyedKeywords,
    KeyedOptions,
    MapKeywords,
    MapOptions,
    RunKeywords,
    RunOptions,
    StreamKeywords,
    StreamOptions,
    WindowKeywords,
    WindowOptions,
)

VIEWS: list[tuple[type, type[RunOptions], set[str], set[str]]] = [
    # (TypedDict, dataclass, options the entry points take as explicit parameters, options
    # the entry points set themselves)
    (RunKeywords, RunOptions, set(), set()),
    (JobKeywords, JobOptions, set(), set()),
    (MapKeywords, MapOptions, {"mode"}, set()),
    (StreamKeywords, StreamOptions, {"mode"}, set()),
    (WindowKeywords, WindowOptions, {"size"}, set()),
    (KeyedKeywords, KeyedOptions, set(), set()),
    (AggregateKeywords, AggregateOptions, set(), set()),
]


def typed_dict_annotations(view: type) -> dict[str, str]:
    """Every key of a TypedDict (its bases' too) with its annotation, as written."""
    found: dict[str, str] = {}
    for klass in reversed(view.__mro__):
        for name, written in getattr(klass, "__annotations__", {}).items():
            found[name] = getattr(written, "__forward_arg__", written)
    return found


def same_type(written: str) -> str:
    """An annotation with the record/value type variable read as ``Any``."""
    return re.sub(r"\bV\b", "Any", written).replace(" ", "")


@pytest.mark.parametrize(("view", "options", "explicit", "fixed"), VIEWS)
def test_each_keywords_view_names_the_options_with_their_types(
    view: type, options: type[RunOptions], explicit: set[str], fixed: set[str]
) -> None:
    keys = typed_dict_annotations(view)
    fields = {field.name: str(field.type) for field in dataclasses.fields(options)}
    assert set(keys) | explicit | fixed == set(fields)
    assert not set(keys) & (explicit | fixed)
    for name, written in keys.items():
        assert same_type(written) == same_type(fields[name]), name
    assert options.keywords is view


def test_each_option_is_documented_once_in_its_view() -> None:
    source = inspect.getsource(_options)
    for view, *_ in VIEWS:
        for name in view.__annotations__:
            # The attribute docstring follows the key in the TypedDict's body.
            assert re.search(rf"\n    {name}: [^\n]+\n    \"\"\"\S", source), name


def signature_of(entry: Callable[..., Any]) -> tuple[set[str], str | None]:
    """The keyword-only parameters of an entry point and the view its ``**options`` has."""
    parameters = inspect.signature(entry).parameters.values()
    named = {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    rest = [p for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD]
    if not rest:
        return named, None
    found = re.fullmatch(r"Unpack\[(\w+)(\[\w+\])?\]", str(rest[0].annotation))
    assert found, rest[0].annotation
    return named, found[1]


# Every entry point: its view, and its keyword-only parameters that are not options.
ENTRY_POINTS: list[tuple[Callable[..., Any], str, set[str]]] = [
    (aiomr.map_reduce, "MapKeywords", {"executor"}),
    (aiomr.Engine.map_reduce, "MapKeywords", set()),
    (aiomr.open_stream, "StreamKeywords", {"executor"}),
    (aiomr.Engine.open_stream, "StreamKeywords", set()),
    (aiomr.open_windows, "WindowKeywords", {"executor"}),
    (aiomr.Engine.open_windows, "WindowKeywords", set()),
    (aiomr.map_reduce_by_key, "KeyedKeywords", {"executor"}),
    (aiomr.Engine.map_reduce_by_key, "KeyedKeywords", set()),
    (aiomr.group_by_key, "KeyedKeywords", {"executor", "combiner"}),
    (aiomr.Engine.group_by_key, "KeyedKeywords", {"combiner"}),
    (aiomr.fold_by_key, "KeyedKeywords", {"executor", "initial", "initial_factory"}),
    (aiomr.Engine.fold_by_key, "KeyedKeywords", {"initial", "initial_factory"}),
    (aiomr.open_by_key, "KeyedKeywords", {"executor"}),
    (aiomr.Engine.open_by_key, "KeyedKeywords", set()),
    (aiomr.Engine.run_by_key, "KeyedKeywords", set()),
    (aiomr.Job.run, "KeyedKeywords", {"executor", "engine"}),
    (aiomr.Engine.run_job, "KeyedKeywords", set()),
    (aiomr.aggregate, "AggregateKeywords", {"executor"}),
    (aiomr.Engine.aggregate, "AggregateKeywords", set()),
]


@pytest.mark.parametrize(
    ("entry", "view_name", "own"), ENTRY_POINTS, ids=[e[0].__qualname__ for e in ENTRY_POINTS]
)
def test_every_entry_point_takes_its_options_and_nothing_else(
    entry: Callable[..., Any], view_name: str, own: set[str]
) -> None:
    named, view = signature_of(entry)
    assert view == view_name
    explicit = next(e for v, _, e, _ in VIEWS if v.__name__ == view_name)
    # Options a view leaves out are explicit parameters; the rest of the explicit
    # parameters belong to the entry point (executor, a spec's own functions).
    assert named - own == explicit, named
    assert own <= named


def test_the_engine_has_every_job_function_of_the_module() -> None:
    module_jobs = [e for e, _, own in ENTRY_POINTS if "executor" in own]
    for function in module_jobs:
        name = function.__name__ if function is not aiomr.Job.run else "run_job"
        method = getattr(aiomr.Engine, name)
        module_named, module_view = signature_of(function)
        engine_named, engine_view = signature_of(method)
        assert module_view == engine_view
        assert module_named - {"executor", "engine"} == engine_named, name


def test_the_module_functions_do_not_reach_into_the_engine() -> None:
    from aiomr import _api, _jobclass, _keyed_api

    for module in (_api, _keyed_api, _jobclass):
        assert not re.search(r"engine\._\w", inspect.getsource(module)), module.__name__


def keyed(record: int) -> list[tuple[int, int]]:
    return [(record, 1)]


CALLS: list[tuple[str, Callable[..., Any]]] = [
    ("map_reduce", lambda engine, **kw: aiomr.map_reduce([1], abs, operator.add, **kw)),
    ("map_reduce", lambda engine, **kw: engine.map_reduce([1], abs, operator.add, **kw)),
    (
        "map_reduce_by_key",
        lambda engine, **kw: aiomr.map_reduce_by_key([1], keyed, operator.add, **kw),
    ),
    ("group_by_key", lambda engine, **kw: engine.group_by_key([1], keyed, lambda k, vs: 0, **kw)),
    ("run", lambda engine, **kw: aiomr.Job().run([1], **kw)),
    # The options are checked first: neither the source nor the Aggregate is looked at.
    ("aggregate", lambda engine, **kw: engine.aggregate([1], None, **kw)),
]


@pytest.mark.parametrize(
    ("name", "call"), CALLS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CALLS)]
)
async def test_a_misspelt_keyword_is_refused_by_name_before_any_work(
    engine: aiomr.Engine, name: str, call: Callable[..., Any]
) -> None:
    with pytest.raises(TypeError) as caught:
        await call(engine, chunk_sise=10)
    assert str(caught.value) == (
        f"{name}() got an unexpected keyword argument 'chunk_sise'; did you mean 'chunk_size'?"
    )


async def test_a_keyword_of_another_job_shape_is_refused(engine: aiomr.Engine) -> None:
    with pytest.raises(
        TypeError, match=r"^map_reduce\(\) got an unexpected keyword argument 'sort'"
    ):
        await engine.map_reduce([1], abs, operator.add, sort=True)  # type: ignore[call-overload]
    with pytest.raises(
        TypeError, match=r"^open_windows\(\) got an unexpected keyword argument 'stats'"
    ):
        async with engine.open_windows([1], abs, operator.add, size=1, stats=aiomr.JobStats()):  # type: ignore[call-arg]
            pass


def test_defaults_are_those_the_keywords_document() -> None:
    defaults = {
        field.name: field.default
        for options in (MapOptions, StreamOptions, KeyedOptions, WindowOptions)
        for field in dataclasses.fields(options)
        if field.default is not dataclasses.MISSING
    }
    assert defaults["chunk_size"] is None
    assert defaults["on_error"] == "raise"
    assert defaults["every_seconds"] == 1.0
    assert defaults["memory_budget"] == 256 * 1024 * 1024
    assert defaults["by"] == "count"
    # Each default is written in its keyword's documentation where it is not None/False.
    source = inspect.getsource(_options)
    for name in ("every_seconds", "memory_budget", "on_error", "by"):
        documented = re.search(rf"\n    {name}: [^\n]+\n    \"\"\"(.*?)\"\"\"", source, re.S)
        assert documented, name
        assert "default" in documented[1], name
