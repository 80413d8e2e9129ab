"""The database example runs as a user runs it, and prints the totals the rows add up to."""

from __future__ import annotations

import collections
import importlib.util
import os
import pathlib
import subprocess
import sys
from types import ModuleType

import pytest

import aiomr

from .test_db import reachable_postgres

ROOT = pathlib.Path(aiomr.__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "db_rows.py"


def run_example(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), "--workers", "2", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("db_rows_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expected_table(rows: int, seed: int) -> list[tuple[str, int, str]]:
    """``(store, sales, total)`` rows as the example prints them, computed in one process."""
    example = load_example()
    totals: collections.Counter[str] = collections.Counter()
    sales: collections.Counter[str] = collections.Counter()
    for _, store, amount in example.generate_rows(rows, seed):
        totals[store] += amount
        sales[store] += 1
    ranked = sorted(totals, key=lambda store: (-totals[store], store))
    return [(store, sales[store], example.dollars(totals[store])) for store in ranked]


def printed_table(stdout: str) -> list[tuple[str, int, str]]:
    lines = stdout.splitlines()
    end = lines.index("")
    rows = [line.split() for line in lines[3:end]]
    return [(store, int(count.replace(",", "")), total) for store, count, total in rows]


@pytest.mark.parametrize(
    "options", [("--partitions", "1"), ("--partitions", "3"), ("--partitions", "3", "--in-workers")]
)
def test_sqlite_totals_match_the_rows(options: tuple[str, ...]) -> None:
    done = run_example("--rows", "20000", "--seed", "11", *options)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("TOTAL SALES PER STORE (SQLite, 20,000 rows)\n")
    assert printed_table(done.stdout) == expected_table(20000, 11)
    assert "equal to SQL GROUP BY over SQLite; 9 totals written back" in done.stdout


@pytest.mark.parametrize(
    "transfer", [(), ("--copy",), ("--in-workers",)], ids=["rows", "copy", "in-workers"]
)
def test_postgres_totals_match_the_rows(transfer: tuple[str, ...]) -> None:
    dsn = reachable_postgres()
    done = run_example(
        "--dsn", dsn, "--rows", "20000", "--seed", "5", "--partitions", "4", *transfer
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("TOTAL SALES PER STORE (PostgreSQL, 20,000 rows)\n")
    assert printed_table(done.stdout) == expected_table(20000, 5)
    assert "equal to SQL GROUP BY over PostgreSQL" in done.stdout


def test_a_bad_dsn_is_refused() -> None:
    done = run_example("--dsn", "mysql://localhost/db")
    assert done.returncode == 2
    assert "--dsn must be a postgresql:// DSN" in done.stderr


def test_in_workers_needs_ranges_and_no_copy() -> None:
    done = run_example("--in-workers")
    assert done.returncode == 2
    assert "--in-workers reads id ranges: give --partitions 2 or more" in done.stderr
    done = run_example("--dsn", "postgresql://x/y", "--partitions", "2", "--in-workers", "--copy")
    assert done.returncode == 2
    assert "--in-workers and --copy are two different ways to read" in done.stderr


def test_copy_needs_postgresql() -> None:
    done = run_example("--copy")
    assert done.returncode == 2
    assert "--copy reads with PostgreSQL's COPY: it needs --dsn" in done.stderr
