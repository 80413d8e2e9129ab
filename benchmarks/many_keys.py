"""Many keys: a group-by whose states outgrow the memory budget, aiomr against Polars and DuckDB.

A generated Parquet file of 40 M rows and 20 M distinct keys, ``sum`` and ``count`` of a
value per key on 2 cores, the answer written as Parquet. aiomr's `aiomr.aggregate` runs with
a memory budget of a tenth of the keys' states, so it spills; Polars' streaming engine, its
in-memory engine and DuckDB (under the same memory limit) do the same query. Every
contender (`CONTENDERS`) runs in a fresh process per run; once its clock has stopped, the
files it wrote are checked key by key against totals the generator computed with numpy.
docs/benchmarks.md says what is measured and how.

    flock /tmp/aiomr-bench.lock python3 benchmarks/many_keys.py --write-docs
    python3 benchmarks/many_keys.py --quick        # a smoke run: 2 M rows, 1 M keys
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _harness as h
import _isolated
import _machine

WORKERS = 2
"""Workers, or threads, of every contender."""
ROWS, KEYS = 40_000_000, 20_000_000
QUICK_ROWS, QUICK_KEYS = 2_000_000, 1_000_000
ROW_GROUP = 1_000_000
"""Rows per row group of the input, and per chunk the generator holds at once."""
MULTIPLIER = 2_654_435_761
"""Row ``i`` has key id ``i * MULTIPLIER % keys``. The multiplier is a prime above any key
count (keys are written with 9 digits), so it is coprime with it: every ``keys``
consecutive rows hold every key once, and a key's rows lie ``keys`` rows apart, spread
over the file rather than side by side in one row group."""
SAMPLE_KEYS = 1_000_000
"""Distinct keys grouped to measure the states' bytes per key (`Input.state_bytes`)."""
BUDGET_SHARE = 10
"""aiomr's ``memory_budget`` (and DuckDB's ``memory_limit``): the states' bytes over this."""
DUCKDB_FLOOR = 60_000_000
"""DuckDB's ``memory_limit`` is the budget, but no less than this: on the quick input's 1 M
keys, with 2 threads, its group-by ran out of memory at 50 MB and passed at 60 MB, and a
limit it always fails under would measure nothing."""
RUN_TIMEOUT = 1800.0
COLUMNS = ["key", "value"]


# The input and its answer ----------------------------------------------------------------------


@dataclass(frozen=True)
class Input:
    """The generated file, what it holds, and where its expected answer is."""

    path: str
    rows: int
    keys: int
    row_groups: int
    size_bytes: int
    state_bytes: int
    """Bytes of the keys' states in memory: a pyarrow group-by of `SAMPLE_KEYS` distinct
    keys (``key``, ``total``, ``n``), scaled to every key."""

    @property
    def budget(self) -> int:
        """aiomr's ``memory_budget``."""
        return self.state_bytes // BUDGET_SHARE

    @property
    def duckdb_limit(self) -> int:
        """DuckDB's ``memory_limit``."""
        return max(self.budget, DUCKDB_FLOOR)

    def expected(self, what: str) -> Path:
        """The ``.npy`` file of the expected ``totals`` or ``counts``, indexed by key id."""
        return Path(self.path).with_suffix(f".{what}.npy")


def key_ids(start: int, stop: int, keys: int) -> Any:
    """The key ids of rows ``[start, stop)``, as a numpy array."""
    import numpy as np

    rows = np.arange(start, stop, dtype=np.int64)
    return rows % keys * (MULTIPLIER % keys) % keys  # below 2**63: keys < 10**9


def key_strings(ids: Any) -> Any:
    """``k`` and the id in 9 digits (``k000012345``), as a pyarrow string array."""
    import pyarrow as pa
    import pyarrow.compute as pc

    digits = pc.utf8_lpad(pa.array(ids).cast(pa.string()), width=9, padding="0")
    return pc.binary_join_element_wise("k", digits, "")


def ensure_input(rows: int, keys: int) -> Input:
    """Return the generated file of ``rows`` rows and ``keys`` keys, generating it (and its
    expected answer) once, untimed, a row group at a time."""
    if not keys < 10**9 or keys > rows:
        raise SystemExit(f"--keys must be below 10**9 and at most --rows, not {keys:,}")
    path = h.DATA_DIR / f"many-keys-{rows}-rows-{keys}-keys.parquet"
    facts = path.with_suffix(".json")
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        found = Input(**json.loads(facts.read_text(encoding="utf-8")))
        if found.size_bytes == path.stat().st_size and all(
            found.expected(what).exists() for what in ("totals", "counts")
        ):
            return found
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    h.DATA_DIR.mkdir(parents=True, exist_ok=True)
    h.progress(f"generating {rows:,} rows with {keys:,} keys into {path} (once)")
    totals = np.zeros(keys, dtype=np.int64)
    counts = np.zeros(keys, dtype=np.int64)
    schema = pa.schema([("key", pa.string()), ("value", pa.int64())])
    partial = path.with_name(f"{path.name}.{os.getpid()}.part")
    state_bytes = 0
    with pq.ParquetWriter(partial, schema) as writer:
        for start in range(0, rows, ROW_GROUP):
            stop = min(start + ROW_GROUP, rows)
            ids = key_ids(start, stop, keys)
            values = np.arange(start, stop, dtype=np.int64) % 1000
            chunk = pa.table({"key": key_strings(ids), "value": values}, schema=schema)
            writer.write_table(chunk, row_group_size=ROW_GROUP)
            counts += np.bincount(ids, minlength=keys)
            # weights are summed as float64: exact, each sum being below 2**53
            totals += np.bincount(ids, weights=values, minlength=keys).astype(np.int64)
            if start == 0:
                state_bytes = states_per_key(chunk) * keys
    os.replace(partial, path)
    found = Input(
        str(path), rows, keys, -(-rows // ROW_GROUP), path.stat().st_size, round(state_bytes)
    )
    for what, array in (("totals", totals), ("counts", counts)):
        np.save(found.expected(what), array)
    partial = facts.with_name(f"{facts.name}.{os.getpid()}.part")
    partial.write_text(json.dumps(dataclasses.asdict(found)), encoding="utf-8")
    os.replace(partial, facts)
    return found


def states_per_key(chunk: Any) -> float:
    """Bytes per key of the states of the first `SAMPLE_KEYS` rows of the first chunk
    (distinct keys, unless the input has fewer), grouped as pyarrow groups them."""
    sample = chunk.slice(0, SAMPLE_KEYS)
    grouped = sample.group_by("key").aggregate([("value", "sum"), ("value", "count")])
    return float(grouped.nbytes) / grouped.num_rows


def answer_problems(data: Input, directory: str) -> list[str]:
    """Say how the Parquet files a contender wrote in ``directory`` differ from the expected
    answer, if they do: every key once, with its total and count."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    files = sorted(glob.glob(os.path.join(directory, "*.parquet")))
    if not files:
        return [f"no Parquet file in {directory}"]
    table = ds.dataset(files, format="parquet").to_table(columns=["key", "total", "n"])
    if nulls := [name for name in table.column_names if table[name].null_count]:
        return [f"null values in {', '.join(nulls)}"]
    keys = table["key"]
    if not pc.all(pc.match_substring_regex(keys, r"^k[0-9]{9}$")).as_py():
        return ["keys not of the input's form (k and 9 digits)"]
    ids = pc.cast(pc.utf8_slice_codeunits(keys, 1), pa.int64()).to_numpy()
    if ids.size and int(ids.max()) >= data.keys:
        return [f"keys beyond the input's {data.keys:,}"]
    seen = np.bincount(ids, minlength=data.keys)
    missing, repeated = int((seen == 0).sum()), int((seen > 1).sum())
    if missing or repeated:
        return [f"{table.num_rows:,} rows: {missing:,} keys missing, {repeated:,} repeated"]
    problems = []
    for name, what in (("total", "totals"), ("n", "counts")):
        got = np.empty(data.keys, dtype=np.int64)
        got[ids] = pc.cast(table[name], pa.int64()).to_numpy()
        want = np.load(data.expected(what))
        if wrong := np.flatnonzero(got != want).tolist():
            shown = ", ".join(f"k{i:09d}: {got[i]} != {want[i]}" for i in wrong[:3])
            problems.append(f"{len(wrong):,} keys with a wrong {name}: {shown}")
    return problems


# The contenders --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """What a contender's run is given: the input, where its answer and its spilled data
    go (fresh directories of its own), and its memory: aiomr's ``memory_budget``, DuckDB's
    ``memory_limit`` (Polars is given none)."""

    path: str
    output: str
    spill: str
    memory: int


def run_aiomr(job: Job) -> dict[str, Any]:
    """1. aiomr: `aiomr.aggregate` over the Parquet row groups, spilling over the budget,
    the answer written as Parquet parts by the workers; a 10 ms ticker on the loop."""
    import aiomr
    from aiomr.sources import parquet

    async def main() -> dict[str, Any]:
        per_key = aiomr.Aggregate(by="key", total=("value", "sum"), n=("value", "count"))
        stats = aiomr.JobStats()
        async with _machine.ticking() as lags:
            parts = await aiomr.aggregate(
                parquet(job.path, columns=COLUMNS),
                per_key,
                memory_budget=job.memory,
                temp_dir=job.spill,
                output=job.output,
                max_workers=WORKERS,
                stats=stats,
            )
        return {"lags": lags, "spills": stats.spills, "rows": parts.rows}

    return aiomr.run(main())


def polars_query(path: str) -> Any:
    import polars as pl

    lazy = pl.scan_parquet(path)
    return lazy.group_by("key").agg(pl.col("value").sum().alias("total"), pl.len().alias("n"))


def run_polars_streaming(job: Job) -> dict[str, Any]:
    """2. Polars' streaming engine: the query sunk to a Parquet file."""
    target = os.path.join(job.output, "result.parquet")
    polars_query(job.path).sink_parquet(target, engine="streaming")
    return {}


def run_polars(job: Job) -> dict[str, Any]:
    """3. Polars' in-memory engine: the query collected, then written."""
    answer = polars_query(job.path).collect(engine="in-memory")
    answer.write_parquet(os.path.join(job.output, "result.parquet"))
    return {}


def sql_text(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def run_duckdb(job: Job) -> dict[str, Any]:
    """4. DuckDB: ``GROUP BY`` on 2 threads under a memory limit, ``COPY`` to Parquet."""
    import duckdb

    with duckdb.connect() as db:
        db.execute(f"SET threads={WORKERS}")
        db.execute("SET enable_progress_bar=false")
        db.execute(f"SET memory_limit='{job.memory}B'")
        db.execute(f"SET temp_directory={sql_text(job.spill)}")
        db.execute(
            "COPY (SELECT key, sum(value)::BIGINT AS total, count(*) AS n "
            f"FROM read_parquet({sql_text(job.path)}) GROUP BY key) "
            f"TO {sql_text(os.path.join(job.output, 'result.parquet'))} (FORMAT parquet)"
        )
    return {}


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    run: Callable[[Job], dict[str, Any]]  # a report: the loop's lag and aiomr's spills
    modules: tuple[str, ...]  # imported before the clock starts

    @property
    def missing(self) -> str | None:
        """The module this contender needs that is not installed, if any."""
        return h.missing_module(self.modules)


AIOMR = "aiomr"
BASELINE = "polars-streaming"
CONTENDERS = (
    Contender(
        AIOMR,
        "aiomr: `aiomr.aggregate(..., memory_budget=, output=)`",
        run_aiomr,
        (
            "aiomr.aggregate",
            "aiomr.run",
            "aiomr.Aggregate",
            "aiomr.JobStats",
            "aiomr.sources.parquet",
            "pyarrow.acero",  # a program that groups with pyarrow has it loaded before its jobs
        ),
    ),
    Contender(
        BASELINE,
        "Polars streaming: `scan_parquet` + `group_by`, `sink_parquet`",
        run_polars_streaming,
        ("polars",),
    ),
    Contender(
        "polars",
        "Polars in memory: the same query, `collect()` + `write_parquet`",
        run_polars,
        ("polars",),
    ),
    Contender(
        "duckdb",
        "DuckDB: `GROUP BY` under `memory_limit`, `COPY TO` Parquet",
        run_duckdb,
        ("duckdb",),
    ),
)
BY_KEY = {c.key: c for c in CONTENDERS}


def contender(args: list[str]) -> dict[str, Any]:
    """Run one contender once in this (fresh) process: ``KEY PATH WORK MEMORY``, its output
    and its spilled data in the fresh directory ``WORK``."""
    key, path, work, memory = args
    c = BY_KEY[key]
    os.environ["POLARS_MAX_THREADS"] = str(WORKERS)  # read when polars is first imported
    _machine.import_names(c.modules, uvloop=True)
    import psutil  # noqa: F401  (before the clock starts: tree_cpu uses it after it stops)

    job = Job(path, os.path.join(work, "output"), os.path.join(work, "spill"), int(memory))
    os.makedirs(job.output)
    os.makedirs(job.spill)
    cpu = _machine.tree_cpu()
    started = time.perf_counter()
    report = c.run(job)
    wall = time.perf_counter() - started
    cpu = _machine.tree_cpu() - cpu
    return {"lags": None, **report, "wall": wall, "cpu": cpu}


# Measuring -------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Result(h.Measurements):
    data: Input
    keys: list[str]
    skipped: list[str]
    spills: list[int] = field(default_factory=list)
    """The runs aiomr wrote in its first phase, per run."""


def check(data: Input, work: str, report: dict[str, Any]) -> list[str]:
    """What is wrong with a contender's answer and what it left behind (untimed)."""
    problems = answer_problems(data, os.path.join(work, "output"))
    if report.get("rows", data.keys) != data.keys:
        problems.append(f"said it wrote {report['rows']:,} rows, not {data.keys:,}")
    if left := os.listdir(os.path.join(work, "spill")):
        problems.append(f"{len(left)} files left in its temporary directory")
    return problems


def measure(args: argparse.Namespace) -> Result:
    """Run every contender ``--runs`` times, interleaved; check every answer."""
    keys, skipped = h.choose_installed(args.only, BY_KEY)
    rows = args.rows or (QUICK_ROWS if args.quick else ROWS)
    data = ensure_input(rows, args.keys or min(rows, QUICK_KEYS if args.quick else KEYS))
    m = Result(rounds=args.runs, data=data, keys=keys, skipped=skipped)
    h.progress(f"warming the page cache with {data.path}")
    _machine.warm_page_cache([data.path])
    for round_, key in h.interleaved(keys, args.runs):
        memory = data.duckdb_limit if key == "duckdb" else data.budget
        work = tempfile.mkdtemp(prefix="many-keys-run-", dir=h.DATA_DIR)
        try:
            child = _isolated.run_child(
                __file__, [key, data.path, work, str(memory)], timeout=RUN_TIMEOUT
            )
            if child.report is None or child.error is not None:  # a finding, not a crash
                said = (child.error or "no report").splitlines()[0]  # DuckDB adds advice
                run = _isolated.Run(key, round_, error=said)
                run.caller_peak, run.tree_peak = child.caller_peak, child.tree_peak
                m.add(run, f"FAILED: {run.error}")
                continue
            if problems := check(data, work, child.report):
                raise SystemExit(f"{key}: wrong answer: {'; '.join(problems)}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if key == AIOMR:
            m.spills.append(child.report["spills"])
        _isolated.record(m, key, round_, child, child.report)
    return m


# The docs section ------------------------------------------------------------------------------


def render(m: Result) -> str:
    """Return the docs section: the machine, the input, the budget and the tables."""
    d = m.data
    labels = {key: BY_KEY[key].label for key in m.keys}
    skipped = "".join(
        f" Not measured: {BY_KEY[k].label} ({BY_KEY[k].missing} is not installed)."
        for k in m.skipped
    )
    duckdb = (
        "the same"
        if d.duckdb_limit == d.budget
        else f"{h.mb(d.duckdb_limit)} (the budget, but no less than {h.mb(DUCKDB_FLOOR)})"
    )
    parts = [
        f"{m.machine} aiomr {m.aiomr}.",
        "",
        f"Input: {h.mb(d.size_bytes)} of Parquet, {d.rows:,} rows in {d.row_groups:,} row "
        f"groups, {d.keys:,} distinct keys. The keys' states take about {h.mb(d.state_bytes)} "
        f"in memory; aiomr's `memory_budget` is a tenth of that, {h.mb(d.budget)} "
        f"({d.budget:,} bytes) per process; DuckDB's `memory_limit` is {duckdb}. Each "
        f"contender ran {h.times(m.rounds)}.{skipped}{_isolated.load_note(m, 'ratios')}",
        "",
        h.wall_table(m, labels, d.size_bytes, BASELINE, "speed vs Polars streaming", 2),
    ]
    if m.spills:
        parts += ["", f"Runs aiomr wrote in its first phase: {h.per_run(m.spills)}."]
    if any(r.ticks for r in m.of(AIOMR)):
        parts += ["", "Event-loop lag while the job runs (a 10 ms ticker on the same loop):"]
        parts += ["", h.lag_table(m, {AIOMR: labels[AIOMR]})]
    if not m.all_ok():
        parts += ["", "Runs that failed:", "", _isolated.failure_table(m, labels)]
    return "\n".join(parts)


if __name__ == "__main__":
    parser = h.parser(__doc__, runs=3)
    parser.add_argument("--rows", type=h.positive, help="rows of the input (default 40,000,000)")
    parser.add_argument(
        "--keys", type=h.positive, help="distinct keys of the input (default 20,000,000)"
    )
    parser.add_argument("--only", help="comma-separated contenders to run (default: all)")
    sys.exit(
        h.main(
            "many_keys",
            parser,
            measure,
            render,
            contender=contender,
            ok=lambda m: all(r.ok for r in m.runs if r.key == AIOMR),
        )
    )
