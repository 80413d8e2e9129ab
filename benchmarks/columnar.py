"""Columnar group-by: aiomr's batches and `aiomr.Aggregate` against Polars, DuckDB and pyarrow.

The 1-gram file of the n-gram benchmark (``_ngram_workload.py``), total ``match_count`` per
word on 2 cores. Every contender (`CONTENDERS`) runs in a fresh process per run; its totals
are turned into a dict once its clock has stopped and checked word for word against
pyarrow's. docs/benchmarks.md says what is measured and how.

    flock /tmp/aiomr-bench.lock python3 benchmarks/columnar.py --write-docs
    python3 benchmarks/columnar.py --quick        # a smoke run on 20 MB
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import importlib.util
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import _harness as h
import _isolated
import _machine
from _ngram_workload import WORKERS, Expected, Totals, ensure_input, parse_size, split_job

RUN_TIMEOUT = 900.0
NAMES = ["word", "year", "match_count", "volumes"]
"""The columns of the 1-gram file, which has no header."""


def polars_scan(path: str) -> Any:
    """Polars' lazy scan of the 1-gram file."""
    import polars as pl

    return pl.scan_csv(
        path,
        separator="\t",
        has_header=False,
        new_columns=NAMES,
        quote_char=None,
        schema_overrides={"word": pl.String},  # "1", "0.10": words, not numbers
    )


def polars_query(path: str) -> Any:
    import polars as pl

    return polars_scan(path).group_by("word").agg(pl.col("match_count").sum())


def run_polars(path: str) -> Any:
    """1. Polars: a lazy scan and group-by, collected on its own thread pool."""
    return polars_query(path).collect()


async def polars_async(path: str) -> Any:
    """2. The same query with ``collect_async``, awaited on an event loop."""
    return await polars_query(path).collect_async()


def run_duckdb(path: str) -> Any:
    """3. DuckDB: ``read_csv`` and ``GROUP BY`` on 2 threads."""
    import duckdb

    with duckdb.connect() as db:
        db.execute(f"SET threads={WORKERS}")
        query = (  # columns named and typed: the first words look like numbers
            "SELECT word, sum(match_count)::BIGINT AS match_count FROM read_csv(?, delim='\\t', "
            "header=false, columns={'word': 'VARCHAR', 'year': 'INTEGER', "
            "'match_count': 'BIGINT', 'volumes': 'INTEGER'}) GROUP BY word"
        )
        return db.execute(query, [path]).to_arrow_table()


COLUMNS = ["word", "match_count"]
"""The columns the Parquet contenders read."""


def parquet_of(path: str) -> str:
    """The same rows as Parquet, beside the TSV (written once, untimed, by `ensure_parquet`)."""
    return os.path.splitext(path)[0] + ".parquet"


def ensure_parquet(path: str) -> None:
    """Write the TSV's rows as Parquet once (1 M rows per row group), as `ngram_data.py
    --parquet` does."""
    target = parquet_of(path)
    if os.path.exists(target) and os.path.getmtime(target) >= os.path.getmtime(path):
        return
    from examples.ngram_data import write_parquet

    h.progress(f"writing the same rows as Parquet to {target} (once)")
    partial = f"{target}.{os.getpid()}.part"
    write_parquet(path, partial)
    os.replace(partial, target)


HIVE_COPIES = 10
"""The hive-partitioned dataset holds the Parquet copy this many times (``copy=0`` ...)."""


def hive_of(path: str) -> str:
    """A hive-partitioned dataset of `HIVE_COPIES` times the rows, beside the TSV."""
    return os.path.splitext(path)[0] + "-hive"


def ensure_hive(path: str) -> None:
    """Make the dataset once: the Parquet copy hard-linked as ``copy=N/part-0.parquet`` (no
    more disk, the same bytes read ten times over)."""
    source = parquet_of(path)
    root = hive_of(path)
    for copy in range(HIVE_COPIES):
        folder = os.path.join(root, f"copy={copy}")
        target = os.path.join(folder, "part-0.parquet")
        if os.path.exists(target) and os.path.samefile(target, source):
            continue
        os.makedirs(folder, exist_ok=True)
        if os.path.exists(target):
            os.unlink(target)
        os.link(source, target)


def run_polars_hive(path: str) -> Any:
    """Polars over the hive dataset: a lazy scan of every part (two columns) and group-by,
    streamed (the whole dataset does not fit the budget of the other contenders)."""
    import polars as pl

    lazy = pl.scan_parquet(os.path.join(hive_of(path), "**", "*.parquet"))
    query = lazy.group_by("word").agg(pl.col("match_count").sum())
    return query.collect(engine="streaming")


async def aiomr_hive(path: str) -> Any:
    """aiomr over the hive dataset: `aiomr.aggregate` on the row groups of every part."""
    import aiomr
    from aiomr.sources import parquet

    per_word = aiomr.Aggregate(by="word", total=("match_count", "sum"))
    source = parquet(hive_of(path), columns=COLUMNS, dictionary_columns=["word"])
    return await aiomr.aggregate(source, per_word, max_workers=WORKERS)


def run_polars_parquet(path: str) -> Any:
    """Polars over the Parquet copy: a lazy scan (two columns read) and group-by."""
    import polars as pl

    lazy = pl.scan_parquet(parquet_of(path))
    return lazy.group_by("word").agg(pl.col("match_count").sum()).collect()


def run_pyarrow(path: str) -> Any:
    """4. pyarrow: read the whole file into a table, then its group-by."""
    import pyarrow as pa
    import pyarrow.csv as csv

    pa.set_cpu_count(WORKERS)  # its parsing threads: 2 cores, as for the others
    table = csv.read_csv(
        path,
        read_options=csv.ReadOptions(column_names=NAMES),
        parse_options=csv.ParseOptions(delimiter="\t", quote_char=False),
        convert_options=csv.ConvertOptions(column_types={"word": pa.string()}),
    )
    return table.group_by("word").aggregate([("match_count", "sum")])


async def totals_by_word(map_reduce: Callable[..., Awaitable[Any]], source: Any) -> Any:
    """Total ``match_count`` by word with `aiomr.Aggregate` over a batch source, through
    ``map_reduce`` (the module's or an engine's); the table finished off the event loop."""
    import aiomr

    per_word = aiomr.Aggregate(by="word", total=("match_count", "sum"))
    states = await map_reduce(source, per_word.map, per_word.merge, mode="batches")
    return await asyncio.to_thread(per_word.finish, states)


async def aiomr_columnar(path: str) -> Any:
    """5. aiomr: TSV batches parsed by pyarrow in the workers, `aiomr.Aggregate`."""
    import aiomr
    from aiomr.sources import files

    source = files(path, format="tsv", names=NAMES, types={"word": "string"}, columns=COLUMNS)
    return await totals_by_word(functools.partial(aiomr.map_reduce, max_workers=WORKERS), source)


async def aiomr_columnar_warm(path: str) -> tuple[Any, float]:
    """The TSV job on an `aiomr.Engine` whose workers are up: ``(answer, seconds)``."""
    import aiomr
    from aiomr.sources import files

    source = files(path, format="tsv", names=NAMES, types={"word": "string"}, columns=COLUMNS)
    async with aiomr.Engine(max_workers=WORKERS) as engine:
        started = time.perf_counter()
        table = await totals_by_word(engine.map_reduce, source)
        return table, time.perf_counter() - started


def parquet_source(path: str) -> Any:
    """aiomr's source over the Parquet copy: row groups read by the workers."""
    from aiomr.sources import parquet

    return parquet(parquet_of(path), columns=COLUMNS, dictionary_columns=["word"])


async def aiomr_parquet(path: str) -> Any:
    """aiomr over the Parquet copy in one call, its workers started by the call."""
    import aiomr

    run = functools.partial(aiomr.map_reduce, max_workers=WORKERS)
    return await totals_by_word(run, parquet_source(path))


async def aiomr_parquet_warm(path: str) -> tuple[Any, float]:
    """The same job on an `aiomr.Engine` whose workers are up: ``(answer, seconds)``, the
    clock started once the engine is."""
    import aiomr

    async with aiomr.Engine(max_workers=WORKERS) as engine:
        started = time.perf_counter()
        table = await totals_by_word(engine.map_reduce, parquet_source(path))
        return table, time.perf_counter() - started


TAG = re.compile(r"_[A-Z]+$")


def normalize(word: str) -> str:
    """The Python function per value: the word without its part-of-speech tag, lower-cased
    (``Aardvark_NOUN`` -> ``aardvark``). Polars can run it only through ``map_elements``."""
    return TAG.sub("", word).lower()


def normalized_totals(totals: Totals) -> Totals:
    """``totals`` by normalized word: what the per-value contenders must answer (untimed)."""
    out: dict[str, int] = {}
    for word, total in totals.items():
        key = normalize(word)
        out[key] = out.get(key, 0) + total
    return out


def run_polars_per_value(path: str) -> Any:
    """Polars: the words normalized by ``map_elements``, then the same group-by."""
    import polars as pl

    normalized = polars_scan(path).with_columns(
        pl.col("word").map_elements(normalize, return_dtype=pl.String)
    )
    return normalized.group_by("word").agg(pl.col("match_count").sum()).collect()


def normalized_states(per_word: Any, batch: Any) -> Any:
    """aiomr's mapper: the batch's words normalized one by one in Python, then grouped."""
    import pyarrow as pa

    words = pa.array([normalize(word) for word in batch["word"].to_pylist()], pa.string())
    counts = batch["match_count"]
    return per_word.map(pa.RecordBatch.from_arrays([words, counts], ["word", "match_count"]))


async def aiomr_per_value(path: str) -> Any:
    """aiomr: the same normalization in the workers' batch mapper, `aiomr.Aggregate` after."""
    import aiomr
    from aiomr.sources import files

    per_word = aiomr.Aggregate(by="word", total=("match_count", "sum"))
    source = files(path, format="tsv", names=NAMES, types={"word": "string"}, columns=COLUMNS)
    mapper = functools.partial(normalized_states, per_word)
    states = await aiomr.map_reduce(
        source, mapper, per_word.merge, mode="batches", max_workers=WORKERS
    )
    return await asyncio.to_thread(per_word.finish, states)


def ticked(job: Callable[[str], Awaitable[Any]]) -> Callable[[str], Awaitable[Any]]:
    """``job`` run while a 10 ms ticker records the loop's lag: ``(answer, lateness)``."""

    async def run(path: str) -> tuple[Any, list[float]]:
        async with _machine.ticking() as lags:
            return await job(path), lags

    return run


LOOP = "uvloop" if _machine.uvloop_version() else "asyncio"
"""`aiomr.run`'s loop: the loop of both contenders whose lag is measured."""


def as_totals(result: Any) -> Totals:
    """A contender's answer as ``{word: total}`` (untimed): a dict, or a two-column table."""
    if isinstance(result, dict):
        return result
    table = result.to_arrow() if hasattr(result, "to_arrow") else result  # Polars
    (other,) = [name for name in table.schema.names if name != "word"]
    return dict(zip(table["word"].to_pylist(), table[other].to_pylist(), strict=True))


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    run: Callable[[str], Any]  # returns the answer, or the answer and the loop's lag
    modules: tuple[str, ...] = ()  # imported before the clock starts
    lag: bool = False
    own_clock: bool = False  # run returns (answer, seconds): it starts its clock itself
    parquet: bool = False  # reads the Parquet copy of the input
    per_value: bool = False  # totals by normalized word (a Python function per value)
    hive: bool = False  # reads the hive dataset: every total ten times over

    @property
    def missing(self) -> str | None:
        """The module this contender needs that is not installed, if any."""
        return h.missing_module(self.modules)


AIOMR = (
    "aiomr.map_reduce",
    "aiomr.run",
    "aiomr.sources.files",
    "aiomr.Aggregate",
    "pyarrow.acero",  # a program that groups with pyarrow has it loaded before its jobs
)
CONTENDERS = (
    Contender("polars", "Polars: `scan_csv` + `group_by`, `collect()`", run_polars, ("polars",)),
    Contender(
        "polars-async",
        "Polars: the same query, `await collect_async()`",
        lambda path: h.run_on(LOOP, ticked(polars_async)(path)),
        ("polars",),
        lag=True,
    ),
    Contender("duckdb", "DuckDB: `read_csv` + `GROUP BY`", run_duckdb, ("duckdb", "pyarrow")),
    Contender(
        "pyarrow",
        "pyarrow: `csv.read_csv` + `Table.group_by`",
        run_pyarrow,
        ("pyarrow", "pyarrow.csv"),
    ),
    Contender(
        "aiomr-columnar",
        'aiomr: TSV batches + `Aggregate` (`mode="batches"`)',
        lambda path: importlib.import_module("aiomr").run(ticked(aiomr_columnar)(path)),
        AIOMR,
        lag=True,
    ),
    Contender(
        "aiomr-columnar-warm",
        "aiomr: the same on an `Engine` whose workers are up",
        lambda path: importlib.import_module("aiomr").run(aiomr_columnar_warm(path)),
        AIOMR,
        own_clock=True,
    ),
    Contender(
        "polars-parquet",
        "Polars: `scan_parquet` + `group_by`, `collect()`",
        run_polars_parquet,
        ("polars",),
        parquet=True,
    ),
    Contender(
        "aiomr-parquet",
        "aiomr: `sources.parquet` batches + `Aggregate`, one call (workers started)",
        lambda path: importlib.import_module("aiomr").run(ticked(aiomr_parquet)(path)),
        (*AIOMR, "aiomr.sources.parquet"),
        lag=True,
        parquet=True,
    ),
    Contender(
        "aiomr-parquet-warm",
        "aiomr: the same on an `Engine` whose workers are up",
        lambda path: importlib.import_module("aiomr").run(aiomr_parquet_warm(path)),
        (*AIOMR, "aiomr.sources.parquet"),
        own_clock=True,
        parquet=True,
    ),
    Contender(
        "polars-hive",
        "Polars: `scan_parquet` of the dataset + `group_by`, streaming engine",
        run_polars_hive,
        ("polars",),
        parquet=True,
        hive=True,
    ),
    Contender(
        "aiomr-hive",
        "aiomr: `aiomr.aggregate` over `sources.parquet` of the dataset",
        lambda path: importlib.import_module("aiomr").run(ticked(aiomr_hive)(path)),
        (*AIOMR, "aiomr.sources.parquet"),
        lag=True,
        parquet=True,
        hive=True,
    ),
    Contender(
        "polars-per-value",
        "Polars: `map_elements(normalize)` + `group_by`",
        run_polars_per_value,
        ("polars",),
        per_value=True,
    ),
    Contender(
        "aiomr-per-value",
        "aiomr: `normalize` per value in the batch mapper + `Aggregate`",
        lambda path: importlib.import_module("aiomr").run(ticked(aiomr_per_value)(path)),
        AIOMR,
        lag=True,
        per_value=True,
    ),
    Contender(
        "aiomr-split",
        'aiomr: byte-range splits, tight loop (`mode="blocks"`)',
        lambda path: importlib.import_module("aiomr").run(split_job(path)),
        AIOMR,
    ),
)
BY_KEY = {c.key: c for c in CONTENDERS}


def contender(args: list[str]) -> dict[str, Any]:
    """Run one contender once in this (fresh) process: ``KEY PATH``."""
    key, path = args
    c = BY_KEY[key]
    os.environ["POLARS_MAX_THREADS"] = str(WORKERS)  # read when polars is first imported
    _machine.import_names(c.modules, uvloop=True)
    import psutil  # noqa: F401  (before the clock starts: tree_cpu uses it after it stops)

    cpu = _machine.tree_cpu()
    started = time.perf_counter()
    outcome = c.run(path)
    wall = time.perf_counter() - started
    cpu = _machine.tree_cpu() - cpu
    if c.own_clock:
        outcome, wall = outcome
    answer, lags = outcome if c.lag else (outcome, None)
    return {"totals": as_totals(answer), "wall": wall, "cpu": cpu, "lags": lags}


@dataclass(kw_only=True)
class Result(h.Measurements):
    expected: Expected
    keys: list[str]
    skipped: list[str]


def measure(args: argparse.Namespace) -> Result:
    """Run every contender ``--runs`` times, interleaved; check every answer."""
    keys, skipped = h.choose_installed(args.only, BY_KEY)
    expected = ensure_input(parse_size(args.size or ("20MB" if args.quick else "1GB")))
    m = Result(rounds=args.runs, expected=expected, keys=keys, skipped=skipped)
    paths = [expected.path]
    if any(BY_KEY[k].parquet for k in keys):
        ensure_parquet(expected.path)
        paths.append(parquet_of(expected.path))
    if any(BY_KEY[k].hive for k in keys):
        ensure_hive(expected.path)
    h.progress(f"warming the page cache with {', '.join(paths)}")
    _machine.warm_page_cache(paths)
    reference: Totals | None = None
    unchecked: list[tuple[str, Totals]] = []
    for round_, key in h.interleaved(keys, args.runs):
        child = _isolated.run_child(__file__, [key, expected.path], timeout=RUN_TIMEOUT)
        report = child.require(key)
        totals: Totals = report["totals"]
        if BY_KEY[key].hive:
            totals = {word: total // HIVE_COPIES for word, total in totals.items()}
            if any(total % HIVE_COPIES for total in report["totals"].values()):
                raise SystemExit(f"{key}: wrong answer: a total not {HIVE_COPIES} times another")
        if not BY_KEY[key].per_value and (problems := expected.problems(totals)):
            raise SystemExit(f"{key}: wrong answer: {'; '.join(problems)}")
        unchecked.append((key, totals))  # checked against pyarrow's once it has run
        reference = reference or (totals if key == "pyarrow" else None)
        for other, earlier in unchecked if reference is not None else []:
            if BY_KEY[other].per_value:
                want, name = normalized_totals(reference), "pyarrow's, normalized"
            else:
                want, name = reference, "pyarrow's"
            if problems := h.differences(earlier, want, name):
                raise SystemExit(f"{other}: {problems[0]}")
        if reference is not None or "pyarrow" not in keys:
            unchecked.clear()
        _isolated.record(m, key, round_, child, report)
    return m


def main_table(m: Result, table: str) -> str:
    """The wall table of one group of contenders: ``"tsv"``, ``"parquet"`` or
    ``"per-value"``, each against Polars doing the same."""

    def group(c: Contender) -> str:
        if c.hive:
            return "hive"
        return "per-value" if c.per_value else "parquet" if c.parquet else "tsv"

    labels = {key: BY_KEY[key].label for key in m.keys if group(BY_KEY[key]) == table}
    baseline = {
        "tsv": "polars",
        "parquet": "polars-parquet",
        "per-value": "polars-per-value",
        "hive": "polars-hive",
    }[table]
    size = m.expected.size_bytes * (HIVE_COPIES if table == "hive" else 1)
    return h.wall_table(m, labels, size, baseline, "speed vs Polars", 2)


def render(m: Result) -> str:
    """Return the docs section: the machine, the input and the tables."""
    e = m.expected
    skipped = "".join(
        f" Not measured: {BY_KEY[k].label} ({BY_KEY[k].missing} is not installed)."
        for k in m.skipped
    )
    parts = [
        f"{m.machine} aiomr {m.aiomr}.",
        "",
        f"Input: {e.size_bytes / 1e6:,.0f} MB, {e.lines:,} lines, {e.words:,} distinct words; "
        f"each contender ran {h.times(m.rounds)}.{skipped}{_isolated.load_note(m, 'ratios')}",
        "",
        main_table(m, "tsv"),
        "",
        "The same rows as Parquet (1 M rows per row group; *MB/s* counts the TSV's bytes); "
        "a warm engine's clock starts once its workers are up:",
        "",
        main_table(m, "parquet"),
        "",
        f"The Parquet copy {HIVE_COPIES} times over as a hive-partitioned dataset "
        f"(`copy=0/` ... `copy={HIVE_COPIES - 1}/`, {HIVE_COPIES * e.lines:,} rows; *MB/s* "
        f"counts {HIVE_COPIES} times the TSV's bytes), in one call each:",
        "",
        main_table(m, "hive"),
        "",
        "A Python function per value (`normalize`: the word without its part-of-speech tag, "
        "lower-cased), then the same totals by normalized word; Polars runs it through "
        "`map_elements`:",
        "",
        main_table(m, "per-value"),
        "",
        "Event-loop lag while the job runs (a 10 ms ticker on the same loop):",
        "",
        h.lag_table(m, {key: BY_KEY[key].label for key in m.keys}),
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    parser = h.parser(__doc__, runs=5)
    parser.add_argument("--size", help="input size (default 1GB; 20MB with --quick)")
    parser.add_argument("--only", help="comma-separated contenders to run (default: all)")
    sys.exit(h.main("columnar", parser, measure, render, contender=contender))
