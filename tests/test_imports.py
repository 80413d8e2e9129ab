"""What each side imports: ``import aiomr`` loads nothing yet; workers load only task code.

A worker process starts by importing what its tasks name. Were that the event loop's side,
the executors or the database drivers, each worker (and the forkserver) would spend most of
its start-up importing code it never runs. These run real programs in fresh interpreters,
since the test process itself has imported everything long ago.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_program

CALLER_SIDE = [
    "aiofiles",
    "aiosqlite",
    "aiomr._chunker",
    "aiomr._dispatch",
    "aiomr._engine",
    "aiomr._map_phase",
    "aiomr._keyed.phases",
    "aiomr._scheduler",
    "aiomr.cli",
    "aiomr.executors._pool",
    "aiomr.executors._pool_health",
    "aiomr.executors._pool_spawner",
    "aiomr.executors._pool_tasks",
    "aiomr.executors._process",
    "aiomr.sources._query",
    "aiomr.sources._lines",
    "asyncio",
]
"""Modules a worker running a file job must never need."""


def _run(code: str, tmp_path: Path) -> str:
    done = run_program(code, tmp_path)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_import_aiomr_loads_no_submodule_until_a_name_is_used(tmp_path: Path) -> None:
    out = _run(
        """
        import json, sys
        import aiomr
        before = sorted(m for m in sys.modules if m.startswith("aiomr") or m == "asyncio")
        aiomr.RecordError
        after = sorted(m for m in sys.modules if m.startswith("aiomr") or m == "asyncio")
        print(json.dumps([before, after]))
        """,
        tmp_path,
    )
    before, after = json.loads(out)
    assert before == ["aiomr", "aiomr._lazy"]
    assert after == ["aiomr", "aiomr._exceptions", "aiomr._lazy"]


def test_workers_of_file_jobs_import_no_caller_side_module(tmp_path: Path) -> None:
    """The mappers report, from inside the workers, which modules are loaded there."""
    (tmp_path / "input.txt").write_text("".join(f"line {i}\\n" for i in range(2000)))
    out = _run(
        """
        import json
        import operator
        import sqlite3
        import sys

        import aiomr

        WATCHED = ("aiomr", "asyncio", "aiofiles", "aiosqlite")


        def loaded():
            return frozenset(m for m in sys.modules if m.split(".")[0] in WATCHED)


        def keyed_mapper(line):
            for module in loaded():
                yield module, 1


        def block_mapper(blocks):
            for _ in blocks:
                pass
            return loaded()


        async def main():
            source = aiomr.sources.files("input.txt")
            keyed = await aiomr.map_reduce_by_key(source, keyed_mapper, operator.add)
            blocks = await aiomr.map_reduce(
                aiomr.sources.files("input.txt", encoding=None),
                block_mapper,
                operator.or_,
                mode="blocks",
            )
            with sqlite3.connect("rows.db") as db:
                db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
                db.executemany("INSERT INTO t VALUES (?, ?)", [(i, i) for i in range(500)])
            split = aiomr.sources.RangeSplit("id", 0, 500, 2)
            rows = aiomr.sources.sqlite_ranges("rows.db", "SELECT id, v FROM t", split=split)
            table = await aiomr.map_reduce_by_key(rows, keyed_mapper, operator.add)
            found = {"keyed": sorted(keyed), "blocks": sorted(blocks), "sqlite": sorted(table)}
            print(json.dumps(found))


        if __name__ == "__main__":
            aiomr.run(main())
        """,
        tmp_path,
    )
    found = json.loads(out)
    for job in ("keyed", "blocks", "sqlite"):
        assert "aiomr._worker.run" in found[job], found[job]  # the mappers did run in workers
        assert sorted(set(CALLER_SIDE) & set(found[job])) == [], job
    assert "aiomr._keyed.shuffle" in found["keyed"]
    assert "aiomr.sources._range_readers" in found["sqlite"]
