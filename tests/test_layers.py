"""The house's layers, as docs/architecture.md draws them: no import runs back up.

Every module of the package belongs to exactly one layer; a module may import from its own
layer and the layers below it, never from a layer above. Imports made only for type checkers
(under ``if TYPE_CHECKING:``) do not count: they run nowhere. A new module must be placed in
a layer here (and in the drawing) before the suite passes.
"""

from __future__ import annotations

import ast
import fnmatch
import pathlib

import pytest

import aiomr

PACKAGE = pathlib.Path(aiomr.__file__).parent

# Bottom to top. Patterns are matched in order within a layer; a module matching patterns of
# two layers is an error in this table.
LAYERS: list[tuple[str, list[str]]] = [
    (
        "foundations",
        [
            "aiomr._exceptions",
            "aiomr._sentinels",
            "aiomr._types",
            "aiomr._columnar",
            "aiomr._columnar.imports",
            "aiomr._checks",
            "aiomr._callables",
            "aiomr._badrecords",
            "aiomr._stats",
            "aiomr._retry",
            "aiomr._lazy",
            "aiomr._loop",
        ],
    ),
    (
        "worker side",
        [
            "aiomr._worker",
            "aiomr._worker.*",
            "aiomr._reducer",
            "aiomr._keyed",
            "aiomr._keyed.specs",
            "aiomr._keyed.tasks",
            "aiomr._keyed.combine",
            "aiomr._keyed.shuffle",
            "aiomr._keyed.spill",
            "aiomr._keyed.spill_file",
            "aiomr._keyed.sorted_runs",
            "aiomr._keyed.order",
            "aiomr._keyed.hashing",
            "aiomr._keyed.sizes",
            "aiomr._keyed.result_files",
            "aiomr._columnar.formats",
            "aiomr._columnar.aggregate",
            "aiomr._columnar.parquet_reader",
            "aiomr._columnar.text_reader",
            "aiomr._columnar.hashing",
            "aiomr._columnar.batch_rows",
            "aiomr._columnar.ipc_reader",
            "aiomr._columnar.spill",
            "aiomr._columnar.partition_apply",
            "aiomr.sources._framing",
            "aiomr.sources._paths",
            "aiomr.sources._parse",
            "aiomr.sources._decode",
            "aiomr.sources._locate",
            "aiomr.sources._segments",
            "aiomr.sources._file_blocks",
            "aiomr.sources._split_reader",
            "aiomr.sources._streamed",
            "aiomr.sources._sniff",
        ],
    ),
    (
        "sources and drivers",
        [
            "aiomr.sources",
            "aiomr.sources._source",
            "aiomr.sources._describe",
            "aiomr.sources._split_source",
            "aiomr.sources._file_splits",
            "aiomr.sources._lines",
            "aiomr.sources._query",
            "aiomr.sources._query_ranges",
            "aiomr.sources._range_readers",
            "aiomr.sources._parquet",
            "aiomr.sources._arrow",
            "aiomr._db",
            "aiomr._db.*",
            "aiomr.sinks",
            "aiomr.sinks.*",
        ],
    ),
    ("executors", ["aiomr.executors", "aiomr.executors.*"]),
    (
        "the job core",
        [
            "aiomr._chunker",
            "aiomr._outcomes",
            "aiomr._dispatch",
            "aiomr._map_phase",
            "aiomr._coroutine_jobs",
            "aiomr._keyed.phases",
            "aiomr._columnar.aggregate_job",
            "aiomr._steps",
            "aiomr._scheduler",
            "aiomr._running_jobs",
            "aiomr._options",
            "aiomr._windows",
            "aiomr._stream",
        ],
    ),
    ("the engine", ["aiomr._engine"]),
    (
        "entry points",
        [
            "aiomr",
            "aiomr._api",
            "aiomr._keyed_api",
            "aiomr._jobclass",
            "aiomr._progress",
            "aiomr._results",
        ],
    ),
    ("the command", ["aiomr.cli", "aiomr._cli", "aiomr._cli.*", "aiomr.__main__"]),
]


def modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ["aiomr", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def layer_of(module: str) -> int:
    hits = {
        index
        for index, (_, patterns) in enumerate(LAYERS)
        for pattern in patterns
        if fnmatch.fnmatchcase(module, pattern)
    }
    assert hits, f"{module} is in no layer: place it in tests/test_layers.py and the drawing"
    assert len(hits) == 1, f"{module} is in several layers: {sorted(hits)}"
    return hits.pop()


def imported(module: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The package's modules that ``module`` imports when it runs (type-only ones left out)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If)
        and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for inner in ast.walk(node)
    }
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in known and name != module}


def test_every_module_has_one_layer() -> None:
    for module in modules():
        layer_of(module)


def test_no_import_runs_back_up() -> None:
    found = modules()
    known = set(found)
    upward = []
    for module, path in found.items():
        mine = layer_of(module)
        for target in sorted(imported(module, path, known)):
            theirs = layer_of(target)
            if theirs > mine:
                upward.append(
                    f"{module} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]})"
                )
    assert upward == []


@pytest.mark.parametrize("name", [name for name, _ in LAYERS])
def test_the_drawing_names_every_layer(name: str) -> None:
    drawing = (pathlib.Path(__file__).parent.parent / "docs" / "architecture.md").read_text()
    assert name in drawing
