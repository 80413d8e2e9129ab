"""Database rows: a million rows of a table through aiomr, against the usual ways to read them.

A table of ``(id, store, amount)`` rows in PostgreSQL (asyncpg; ``AIOMR_TEST_POSTGRES_DSN``,
default ``postgresql://postgres@127.0.0.1:5432/test``) and in SQLite (aiosqlite), totalled by
store every way, interleaved on one event loop, each answer checked against SQL ``GROUP BY``.
docs/benchmarks.md says what is measured and how; ``--help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import functools
import gc
import importlib.util
import multiprocessing
import operator
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import _harness as h
import _isolated
import _machine

import aiomr

STORES, WORKERS, BATCH, SLICE, PARTITIONS, RANGES = 100, 2, 5_000, 10_000, 4, 8
TARGET_RATIO = 0.70
DSN = os.environ.get("AIOMR_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
TABLE = "aiomr_bench_rows"
SQL = f"SELECT id, store, amount FROM {TABLE}"

RAW = "raw cursor loop, no processing"
FETCH_ALL = "fetch all, then `multiprocessing.Pool(2).map`"
CHUNK = "aiomr, `mode='chunk'`"
KEYED = "aiomr, `run_by_key` (record mode)"
SPLIT = f"aiomr, `mode='chunk'`, range split into {PARTITIONS}"
COPY = "aiomr, `mode='chunk'`, `transfer='copy'`"
COPY_KEYED = "aiomr, `run_by_key`, `transfer='copy'`"
COPY_SPLIT = f"aiomr, `mode='chunk'`, `transfer='copy'`, range split into {PARTITIONS}"
RANGES_CHUNK = f"aiomr, `mode='chunk'`, {RANGES} ranges read by the workers"
RANGES_KEYED = f"aiomr, `run_by_key`, {RANGES} ranges read by the workers"
PAGES_CHUNK = f"aiomr, `mode='chunk'`, {RANGES} page ranges read by the workers"
PAGES_KEYED = f"aiomr, `run_by_key`, {RANGES} page ranges read by the workers"
RANGES_ARROW = f"aiomr, `aggregate`, {RANGES} ranges read by the workers as Arrow (ADBC)"
SOURCE_ONLY = "diagnostic: `async for` over `aiomr.sources.query`, no job"
NO_GC = "diagnostic: aiomr, `mode='chunk'`, cyclic GC off"
WORKERS_READ = (RANGES_CHUNK, RANGES_KEYED, PAGES_CHUNK, PAGES_KEYED)
"""The workers read the rows: ``postgres_ranges`` / ``sqlite_ranges``; pages: PostgreSQL."""
AIOMR = (CHUNK, KEYED, SPLIT, COPY, COPY_KEYED, COPY_SPLIT, *WORKERS_READ, RANGES_ARROW)


def chunk_totals(rows: list[tuple[int, int, int]]) -> dict[int, int]:
    """Total amount per store over a list of ``(id, store, amount)`` rows."""
    totals: dict[int, int] = {}
    get = totals.get
    for _, store, amount in rows:
        totals[store] = get(store, 0) + amount
    return totals


def merge(first: dict[int, int], second: dict[int, int]) -> dict[int, int]:
    """Add the totals of ``second`` into ``first``."""
    get = first.get
    for store, amount in second.items():
        first[store] = get(store, 0) + amount
    return first


def store_amount(row: tuple[int, int, int]) -> list[tuple[int, int]]:
    """Record-mode mapper: ``(store, amount)``."""
    return [(row[1], row[2])]


@dataclass
class Database:
    """One driver's way to the benchmark table."""

    name: str
    single: Any
    """What the single-cursor variants read through: a connection."""
    parallel: Any
    """What the range split reads through: a pool or a connection factory."""
    raw: Callable[[], Awaitable[int]]
    fetch_all: Callable[[], Awaitable[list[tuple[Any, ...]]]]
    expected: dict[int, int]
    variants: tuple[str, ...]
    ranges: Callable[..., Any]
    """``(sql, split=...)`` to the source whose workers read the ranges themselves."""


@contextlib.asynccontextmanager
async def postgres(rows: int) -> AsyncIterator[Database]:
    import asyncpg

    connection = await asyncpg.connect(DSN)
    pool = await asyncpg.create_pool(DSN, min_size=PARTITIONS, max_size=PARTITIONS)
    try:
        await connection.execute(
            f"DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} AS SELECT g AS id, "
            f"g % {STORES} AS store, (g::bigint * 7919) % 100000 AS amount "
            f"FROM generate_series(1, {rows}) g; ALTER TABLE {TABLE} ADD PRIMARY KEY (id); "
            f"ANALYZE {TABLE}"
        )

        async def raw() -> int:
            count = 0
            async with connection.transaction():
                cursor = await connection.cursor(SQL)
                while batch := await cursor.fetch(BATCH):
                    count += len(batch)
            return count

        async def fetch_all() -> list[tuple[Any, ...]]:
            return [tuple(record) for record in await connection.fetch(SQL)]

        grouped = await connection.fetch(f"SELECT store, sum(amount) FROM {TABLE} GROUP BY store")
        variants = (RAW, FETCH_ALL, CHUNK, KEYED, SPLIT, COPY, COPY_KEYED, COPY_SPLIT)
        # Arrow batches where ADBC's driver is installed (the postgres-arrow extra).
        arrow = (RANGES_ARROW,) if importlib.util.find_spec("adbc_driver_postgresql") else ()
        yield Database(
            "asyncpg (PostgreSQL)",
            connection,
            pool,
            raw,
            fetch_all,
            {r[0]: int(r[1]) for r in grouped},
            (*variants, *WORKERS_READ, *arrow, SOURCE_ONLY, NO_GC),
            functools.partial(aiomr.sources.postgres_ranges, DSN),
        )
    finally:
        await connection.execute(f"DROP TABLE IF EXISTS {TABLE}")
        await pool.close()
        await connection.close()


@contextlib.asynccontextmanager
async def sqlite(rows: int) -> AsyncIterator[Database]:
    import aiosqlite

    with tempfile.TemporaryDirectory(prefix="aiomr-bench-db-") as directory:
        path = os.path.join(directory, "rows.db")
        await asyncio.to_thread(fill_sqlite, path, rows)
        connect = functools.partial(aiosqlite.connect, path)
        async with connect() as connection:

            async def raw() -> int:
                count = 0
                async with connection.execute(SQL) as cursor:
                    while batch := await cursor.fetchmany(BATCH):
                        count += len(batch)  # type: ignore[arg-type]
                return count

            async def fetch_all() -> list[tuple[Any, ...]]:
                return list(await connection.execute_fetchall(SQL))  # type: ignore[arg-type]

            grouped = await connection.execute_fetchall(
                f"SELECT store, sum(amount) FROM {TABLE} GROUP BY store"
            )
            variants = (RAW, FETCH_ALL, CHUNK, KEYED, SPLIT, RANGES_CHUNK, RANGES_KEYED)
            yield Database(
                "aiosqlite (SQLite)",
                connection,
                connect,
                raw,
                fetch_all,
                dict(grouped),  # type: ignore[arg-type]
                (*variants, SOURCE_ONLY, NO_GC),
                functools.partial(aiomr.sources.sqlite_ranges, path),
            )


def fill_sqlite(path: str, rows: int) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, store INTEGER, amount INTEGER)")
        db.executemany(
            f"INSERT INTO {TABLE} VALUES (?, ?, ?)",
            ((g, g % STORES, (g * 7919) % 100000) for g in range(1, rows + 1)),
        )
        db.commit()


@dataclass
class Samples:
    seconds: list[float] = field(default_factory=list)
    growth: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    """CPU seconds of the caller's process (all its threads, workers excluded)."""
    machine: list[float] = field(default_factory=list)
    """CPU seconds the whole machine spent busy: caller, workers, server (and other load)."""


@dataclass(kw_only=True)
class Result(h.Measurements):
    rows: int
    loop: str
    databases: dict[str, dict[str, Samples]] = field(default_factory=dict)

    def per_row(self, db: str, name: str, what: str = "cpu") -> float:
        """Median nanoseconds of CPU per row: the caller's (``cpu``) or the machine's."""
        return h.median(getattr(self.databases[db][name], what)) / self.rows * 1e9

    def ratio(self, db: str, name: str) -> float:
        """Median over rounds of the raw cursor's wall time over this variant's."""
        samples = self.databases[db]
        return h.median(h.ratios(samples[RAW].seconds, samples[name].seconds))


async def run_variant(db: Database, engine: aiomr.Engine, pool: Any, name: str, rows: int) -> Any:
    """Read the whole table one way; return the totals by store (or the rows counted)."""
    if name == RAW:
        return await db.raw()
    if name == SOURCE_ONLY:
        count = 0
        async for _ in aiomr.sources.query(db.single, SQL):
            count += 1
        return count
    if name == FETCH_ALL:
        fetched = await db.fetch_all()
        slices = [fetched[i : i + SLICE] for i in range(0, len(fetched), SLICE)]
        empty: dict[int, int] = {}
        return functools.reduce(
            merge, await asyncio.to_thread(pool.map, chunk_totals, slices), empty
        )
    source: Any
    if name == RANGES_ARROW:
        split = aiomr.sources.RangeSplit("id", 1, rows + 1, RANGES)
        per_store = aiomr.Aggregate(by="store", total=("amount", "sum"))
        table = await engine.aggregate(
            aiomr.sources.postgres_ranges(DSN, SQL, split=split), per_store
        )
        return dict(zip(table["store"].to_pylist(), table["total"].to_pylist(), strict=True))
    if name in (PAGES_CHUNK, PAGES_KEYED):
        pages = aiomr.sources.PageSplit(TABLE, RANGES)
        source = aiomr.sources.postgres_ranges(DSN, f"{SQL} WHERE {{pages}}", split=pages)
    elif name in (RANGES_CHUNK, RANGES_KEYED):
        source = db.ranges(SQL, split=aiomr.sources.RangeSplit("id", 1, rows + 1, RANGES))
    else:
        transfer: Literal["copy", "rows"] = (
            "copy" if name in (COPY, COPY_KEYED, COPY_SPLIT) else "rows"
        )
        split = aiomr.sources.RangeSplit("id", 1, rows + 1, PARTITIONS)
        if name in (SPLIT, COPY_SPLIT):
            source = aiomr.sources.query(db.parallel, SQL, split=split, transfer=transfer)
        else:
            source = aiomr.sources.query(db.single, SQL, transfer=transfer)
    if name in (KEYED, COPY_KEYED, RANGES_KEYED, PAGES_KEYED):
        return await engine.run_by_key(source, aiomr.ReduceByKey(store_amount, operator.add))
    if name == NO_GC:
        gc.disable()
    try:
        return await engine.map_reduce(source, chunk_totals, merge, mode="chunk")
    finally:
        gc.enable()


async def measure_database(db: Database, runs: int, rows: int) -> dict[str, Samples]:
    """Run every variant ``runs`` times after one untimed warm-up round."""
    samples = {name: Samples() for name in db.variants}
    with multiprocessing.get_context("forkserver").Pool(WORKERS) as pool:
        pool.map(abs, range(WORKERS))  # start both workers before timing
        async with aiomr.Engine(max_workers=WORKERS) as engine:
            for round_, name in h.interleaved(db.variants, runs + 1):
                gc.collect()  # and hand freed heap back, so that growth starts from a floor
                with contextlib.suppress(OSError, AttributeError):
                    ctypes.CDLL("libc.so.6").malloc_trim(0)
                with _isolated.TreeSampler(os.getpid(), 0.005, tree=False) as rss:
                    busy = _machine.busy_cpu_seconds()
                    started, cpu = time.perf_counter(), time.process_time()
                    answer = await run_variant(db, engine, pool, name, rows)
                    seconds = time.perf_counter() - started
                    cpu, busy = time.process_time() - cpu, _machine.busy_cpu_seconds() - busy
                if answer != (rows if name in (RAW, SOURCE_ONLY) else db.expected):
                    raise SystemExit(f"{name} over {db.name}: wrong answer")
                if round_ == 0:
                    continue  # the warm-up round
                s, growth = samples[name], rss.caller_peak - rss.start
                s.seconds.append(seconds)
                s.growth.append(growth)
                s.cpu.append(cpu)
                s.machine.append(busy)
                rate, mib = h.fmt_rate(rows / seconds), growth / 2**20
                h.progress(f"  {db.name} round {round_}/{runs}: {rate:>11}  {mib:7.1f} MiB  {name}")
    return samples


async def measure_all(r: Result, databases: list[str]) -> None:
    for which in databases:
        async with (postgres if which == "postgres" else sqlite)(r.rows) as db:
            h.progress(f"{db.name}: {r.rows:,} rows, {r.rounds} runs")
            r.databases[db.name] = await measure_database(db, r.rounds, r.rows)


def measure(args: argparse.Namespace) -> Result:
    if args.loop == "both":
        raise SystemExit("--loop both: choose one loop for this benchmark")
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    r = Result(rounds=args.runs, rows=rows, loop=args.loop)
    h.run_on(args.loop, measure_all(r, ["postgres", "sqlite"] if args.db == "both" else [args.db]))
    return r


def variant_table(r: Result, db: str) -> str:
    lines = []
    for name, s in r.databases[db].items():
        rates = [r.rows / x for x in s.seconds]
        lines.append(
            [
                name,
                h.fmt_rate(h.median(rates)),
                f"{h.fmt_rate(min(rates))} to {h.fmt_rate(max(rates))}",
                h.fmt_ratio(r.ratio(db, name)),
                f"{h.median(s.growth) / 2**20:.1f} MiB",
                f"{r.per_row(db, name):,.0f} ns",
                f"{r.per_row(db, name, 'machine'):,.0f} ns",
            ]
        )
    headers = ["variant", "median rows/s", "range", "vs raw cursor", "caller's peak RSS growth"]
    return h.markdown_table([*headers, "caller's CPU per row", "machine's CPU per row"], lines)


def target_table(r: Result) -> str:
    lines = []
    for db, samples in r.databases.items():
        for name in (n for n in (CHUNK, COPY, *WORKERS_READ) if n in samples):
            ratio = r.ratio(db, name)
            target = f"{name} ≥ {TARGET_RATIO} of the raw cursor's rows/s"
            lines.append([db, target, f"{ratio:.2f}", h.verdict(ratio >= TARGET_RATIO)])
        fetched = h.median(samples[FETCH_ALL].growth) / 2**20
        growth = max(h.median(samples[n].growth) for n in AIOMR if n in samples) / 2**20
        flat = f"at most {growth:.1f} MiB (fetch all: {fetched:.1f} MiB)"
        lines.append([db, "the caller's memory stays flat", flat, h.verdict(growth < fetched / 4)])
        for name in (n for n in (SPLIT, COPY_SPLIT, *WORKERS_READ) if n in samples):
            ratio = r.ratio(db, name)
            target = f"{name} reads faster than the raw single cursor"
            lines.append([db, target, f"{ratio:.2f}", h.verdict(ratio > 1)])
    return h.markdown_table(["database", "target", "measured", ""], lines, left=(0, 1, 2))


def budget_table(r: Result) -> str:
    """CPU per row, step by step in the caller, then for the whole machine."""
    lines = []
    for db, samples in r.databases.items():
        raw, source = r.per_row(db, RAW), r.per_row(db, SOURCE_ONLY)
        job, no_gc = r.per_row(db, CHUNK), r.per_row(db, NO_GC)
        steps = [
            ("caller: the driver fetches and decodes the rows (raw loop)", f"{raw:,.0f}"),
            (
                "caller: `query` turns them into tuples and hands them out one by one",
                f"{source - raw:+,.0f}",
            ),
            (
                "caller: the job takes them into chunks a batch at a time, pickles, folds",
                f"{job - source:+,.0f}",
            ),
            (
                "caller: of all that, the cyclic garbage collector (job with GC off)",
                f"{job - no_gc:,.0f}",
            ),
        ]
        if COPY in samples:
            copy = f"{r.per_row(db, COPY):,.0f}"
            steps.append(("caller: the whole job with `transfer='copy'` (no row decoded)", copy))
        for name, what in (
            (RAW, "the raw cursor loop"),
            (CHUNK, "aiomr, `transfer='rows'`"),
            (COPY, "aiomr, `transfer='copy'`"),
            (RANGES_CHUNK, "aiomr, ranges read by the workers"),
            (PAGES_CHUNK, "aiomr, page ranges read by the workers"),
        ):
            if name in samples:
                machine = f"{r.per_row(db, name, 'machine'):,.0f}"
                steps.append((f"whole machine (server, caller, workers): {what}", machine))
        lines += [[db, step, f"{ns} ns"] for step, ns in steps]
    return h.markdown_table(["database", "step", "CPU per row"], lines, left=(0, 1))


def render(r: Result) -> str:
    """Return the docs section: a table per database, the targets and the CPU budget."""
    parts = [
        r.machine,
        "",
        f"{r.rows:,} rows under {h.loop_label(r.loop)}; each variant ran {h.times(r.rounds)} "
        "after one untimed warm-up round.",
        "",
    ]
    for db in r.databases:
        parts += [f"### {db}", "", variant_table(r, db), ""]
    parts += ["### Against the targets", "", target_table(r), ""]
    parts += ["### Where the caller's time goes", "", budget_table(r)]
    return "\n".join(parts)


if __name__ == "__main__":
    parser = h.parser(__doc__, runs=3, loop="uvloop")
    parser.add_argument("--rows", type=h.positive, help="rows of the table (default 1,000,000)")
    parser.add_argument("--db", choices=["postgres", "sqlite", "both"], default="both")
    sys.exit(h.main("db", parser, measure, render))
