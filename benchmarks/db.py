"""Database rows: a million rows of a table through aiomr, against the usual ways to read them.

The benchmark creates its own table of 1,000,000 rows ``(id, store, amount)`` (100 stores) in
PostgreSQL (read with asyncpg) and in a SQLite file (read with aiosqlite), and computes the
total amount per store. Every variant runs in the same process, interleaved round by round
(the order rotates each round), on the same event loop:

* ``raw cursor loop``: the driver's own batched cursor (asyncpg ``cursor.fetch(5000)`` in a
  transaction, aiosqlite ``fetchmany(5000)``), counting rows and doing nothing else: the
  ceiling for anything that reads the rows through the caller;
* ``fetch all, then multiprocessing.Pool``: every row fetched into one list (asyncpg's
  records turned into tuples, as they do not pickle), cut into 10,000-row slices and mapped
  on a warm ``multiprocessing.Pool(2)``;
* ``aiomr``: ``aiomr.sources.query`` on a warm ``aiomr.Engine(max_workers=2)``, in chunk mode
  (the workers run the same function as the pool's) and in record mode by key
  (``run_by_key``);
* ``aiomr, range split``: the same chunk-mode job reading four id ranges at once, over an
  asyncpg pool or four SQLite connections;
* ``aiomr, ranges read by the workers``: ``postgres_ranges`` (psycopg in the workers) or
  ``sqlite_ranges`` (sqlite3 in the workers) read eight id ranges, in chunk mode and by key;
  no row passes through the caller. For PostgreSQL also eight ranges of the table's pages
  (``PageSplit``).

For each run the caller's peak RSS growth is sampled every 5 ms (workers excluded), after
returning freed memory to the system. Every answer is checked against SQL ``GROUP BY``.

PostgreSQL is reached at ``AIOMR_TEST_POSTGRES_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/test``); run ``python3 benchmarks/db.py --help``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import multiprocessing
import operator
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import _common
import psutil

import aiomr
from aiomr.sources._query import DEFAULT_BATCH_SIZE

ROWS = 1_000_000
STORES = 100
WORKERS = 2
BATCH = 5_000
SLICE = 10_000
PARTITIONS = 4
WORKER_RANGES = 8
"""Ranges of ``sqlite_ranges``: four tasks per worker, so neither waits long for the other."""
TARGET_RATIO = 0.70
DSN = os.environ.get("AIOMR_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
TABLE = "aiomr_bench_rows"

RAW = "raw cursor loop, no processing"
FETCH_ALL = "fetch all, then `multiprocessing.Pool(2).map`"
AIOMR = "aiomr, `mode='chunk'`"
AIOMR_KEYED = "aiomr, `run_by_key` (record mode)"
AIOMR_SPLIT = f"aiomr, `mode='chunk'`, range split into {PARTITIONS}"
AIOMR_COPY = "aiomr, `mode='chunk'`, `transfer='copy'`"
AIOMR_COPY_KEYED = "aiomr, `run_by_key`, `transfer='copy'`"
AIOMR_COPY_SPLIT = f"aiomr, `mode='chunk'`, `transfer='copy'`, range split into {PARTITIONS}"
AIOMR_WORKER_RANGES = f"aiomr, `mode='chunk'`, {WORKER_RANGES} ranges read by the workers"
AIOMR_WORKER_RANGES_KEYED = f"aiomr, `run_by_key`, {WORKER_RANGES} ranges read by the workers"
AIOMR_WORKER_PAGES = f"aiomr, `mode='chunk'`, {WORKER_RANGES} page ranges read by the workers"
AIOMR_WORKER_PAGES_KEYED = f"aiomr, `run_by_key`, {WORKER_RANGES} page ranges read by the workers"
WORKER_RANGE_VARIANTS = (AIOMR_WORKER_RANGES, AIOMR_WORKER_RANGES_KEYED)
WORKER_PAGE_VARIANTS = (AIOMR_WORKER_PAGES, AIOMR_WORKER_PAGES_KEYED)
"""PostgreSQL only: ``postgres_ranges`` with a ``PageSplit``."""
"""``postgres_ranges`` / ``sqlite_ranges``: the workers read the ranges themselves."""
SOURCE_ONLY = "diagnostic: `async for` over `aiomr.sources.query`, no job"
NO_GC = "diagnostic: aiomr, `mode='chunk'`, cyclic GC off"
VARIANTS = (RAW, FETCH_ALL, AIOMR, AIOMR_KEYED, AIOMR_SPLIT, SOURCE_ONLY, NO_GC)
COPY_VARIANTS = (AIOMR_COPY, AIOMR_COPY_KEYED, AIOMR_COPY_SPLIT)
"""PostgreSQL only: ``COPY`` text decoded by the workers."""
AIOMR_VARIANTS = (
    AIOMR,
    AIOMR_KEYED,
    AIOMR_SPLIT,
    *COPY_VARIANTS,
    *WORKER_RANGE_VARIANTS,
    *WORKER_PAGE_VARIANTS,
)


# The work: total amount per store -------------------------------------------------------------


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


# The databases ------------------------------------------------------------------------------


@dataclass
class Database:
    """One driver's way to the benchmark table."""

    name: str
    single: Any
    """What the single-cursor variants read through: a connection or a factory."""
    parallel: Any
    """What the range split reads through: a pool or a connection factory."""
    raw: Callable[[], Awaitable[int]]
    fetch_all: Callable[[], Awaitable[list[tuple[Any, ...]]]]
    expected: dict[int, int] = field(default_factory=dict)
    variants: tuple[str, ...] = VARIANTS
    ranges: Callable[..., Any] | None = None
    """``(sql, split=...)`` to the source whose workers read the ranges themselves."""


@contextlib.asynccontextmanager
async def postgres(rows: int) -> AsyncIterator[Database]:
    import asyncpg

    connection = await asyncpg.connect(DSN)
    pool = await asyncpg.create_pool(DSN, min_size=PARTITIONS, max_size=PARTITIONS)
    sql = f"SELECT id, store, amount FROM {TABLE}"
    try:
        await connection.execute(
            f"DROP TABLE IF EXISTS {TABLE};"
            f"CREATE TABLE {TABLE} AS SELECT g AS id, g % {STORES} AS store,"
            f" (g::bigint * 7919) % 100000 AS amount FROM generate_series(1, {rows}) g;"
            f"ALTER TABLE {TABLE} ADD PRIMARY KEY (id);"
            f"ANALYZE {TABLE}"
        )

        async def raw() -> int:
            count = 0
            async with connection.transaction():
                cursor = await connection.cursor(sql)
                while batch := await cursor.fetch(BATCH):
                    count += len(batch)
            return count

        async def fetch_all() -> list[tuple[Any, ...]]:
            return [tuple(record) for record in await connection.fetch(sql)]

        grouped = await connection.fetch(f"SELECT store, sum(amount) FROM {TABLE} GROUP BY store")
        expected = {r[0]: int(r[1]) for r in grouped}
        yield Database(
            "asyncpg (PostgreSQL)",
            connection,
            pool,
            raw,
            fetch_all,
            expected,
            (
                *VARIANTS[:5],
                *COPY_VARIANTS,
                *WORKER_RANGE_VARIANTS,
                *WORKER_PAGE_VARIANTS,
                *VARIANTS[5:],
            ),
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
        await asyncio.to_thread(_fill_sqlite, path, rows)
        connect = functools.partial(aiosqlite.connect, path)
        sql = f"SELECT id, store, amount FROM {TABLE}"
        async with connect() as connection:

            async def raw() -> int:
                count = 0
                async with connection.execute(sql) as cursor:
                    while batch := await cursor.fetchmany(BATCH):
                        count += len(batch)
                return count

            async def fetch_all() -> list[tuple[Any, ...]]:
                return list(await connection.execute_fetchall(sql))

            grouped = await connection.execute_fetchall(
                f"SELECT store, sum(amount) FROM {TABLE} GROUP BY store"
            )
            expected = dict(grouped)  # type: ignore[arg-type]
            yield Database(
                "aiosqlite (SQLite)",
                connection,
                connect,
                raw,
                fetch_all,
                expected,
                (*VARIANTS[:5], *WORKER_RANGE_VARIANTS, *VARIANTS[5:]),
                functools.partial(aiomr.sources.sqlite_ranges, path),
            )


def _fill_sqlite(path: str, rows: int) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, store INTEGER, amount INTEGER)")
        db.executemany(
            f"INSERT INTO {TABLE} VALUES (?, ?, ?)",
            ((g, g % STORES, (g * 7919) % 100000) for g in range(1, rows + 1)),
        )
        db.commit()


# Measuring ----------------------------------------------------------------------------------


class PeakRss:
    """Sample this process's RSS on a thread; ``growth`` is the peak above the start."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._stop = threading.Event()
        self.start = self._process.memory_info().rss
        self.peak = self.start
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.start


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the system, so growth starts from a floor."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass
class Samples:
    seconds: list[float] = field(default_factory=list)
    growth: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    """CPU seconds of the caller's process (all its threads, workers excluded)."""
    machine: list[float] = field(default_factory=list)
    """CPU seconds the whole machine spent busy: caller, workers, database server (and any
    other load)."""

    def rates(self, rows: int) -> list[float]:
        return [rows / s for s in self.seconds]


async def measure(db: Database, runs: int, rows: int) -> dict[str, Samples]:
    """Run every variant ``runs`` times after one untimed warm-up round."""
    samples = {name: Samples() for name in db.variants}
    split = aiomr.sources.RangeSplit("id", 1, rows + 1, PARTITIONS)
    sql = f"SELECT id, store, amount FROM {TABLE}"
    context = multiprocessing.get_context("forkserver")
    with context.Pool(WORKERS) as pool:
        pool.map(abs, range(WORKERS))  # start both workers before timing
        async with aiomr.Engine(max_workers=WORKERS) as engine:

            async def fetch_all_then_pool() -> dict[int, int]:
                fetched = await db.fetch_all()
                slices = [fetched[i : i + SLICE] for i in range(0, len(fetched), SLICE)]
                partials = await asyncio.to_thread(pool.map, chunk_totals, slices)
                return functools.reduce(merge, partials, {})

            async def run(name: str) -> Any:
                if name == RAW:
                    return await db.raw()
                if name == SOURCE_ONLY:
                    count = 0
                    async for _ in aiomr.sources.query(db.single, sql):
                        count += 1
                    return count
                if name == NO_GC:
                    gc.disable()
                    try:
                        source = aiomr.sources.query(db.single, sql)
                        return await engine.map_reduce(source, chunk_totals, merge, mode="chunk")
                    finally:
                        gc.enable()
                if name == FETCH_ALL:
                    return await fetch_all_then_pool()
                if name in WORKER_PAGE_VARIANTS:
                    pages = aiomr.sources.PageSplit(TABLE, WORKER_RANGES)
                    tables = aiomr.sources.postgres_ranges(
                        DSN, f"{sql} WHERE {{pages}}", split=pages
                    )
                    if name == AIOMR_WORKER_PAGES_KEYED:
                        spec = aiomr.ReduceByKey(store_amount, operator.add)
                        return await engine.run_by_key(tables, spec)
                    return await engine.map_reduce(tables, chunk_totals, merge, mode="chunk")
                if name in WORKER_RANGE_VARIANTS:
                    assert db.ranges is not None
                    ranges = aiomr.sources.RangeSplit("id", 1, rows + 1, WORKER_RANGES)
                    tables = db.ranges(sql, split=ranges)
                    if name == AIOMR_WORKER_RANGES_KEYED:
                        spec = aiomr.ReduceByKey(store_amount, operator.add)
                        return await engine.run_by_key(tables, spec)
                    return await engine.map_reduce(tables, chunk_totals, merge, mode="chunk")
                transfer = "copy" if name in COPY_VARIANTS else "rows"
                if name in (AIOMR_KEYED, AIOMR_COPY_KEYED):
                    spec = aiomr.ReduceByKey(store_amount, operator.add)
                    source = aiomr.sources.query(db.single, sql, transfer=transfer)
                    return await engine.run_by_key(source, spec)
                source = (
                    aiomr.sources.query(db.parallel, sql, split=split, transfer=transfer)
                    if name in (AIOMR_SPLIT, AIOMR_COPY_SPLIT)
                    else aiomr.sources.query(db.single, sql, transfer=transfer)
                )
                return await engine.map_reduce(source, chunk_totals, merge, mode="chunk")

            for round_ in range(runs + 1):
                for name in _common.rotated(db.variants, round_):
                    release_memory()
                    with PeakRss() as rss:
                        busy = machine_busy()
                        started, cpu = time.perf_counter(), time.process_time()
                        answer = await run(name)
                        seconds = time.perf_counter() - started
                        cpu = time.process_time() - cpu
                        busy = machine_busy() - busy
                    expected = rows if name in (RAW, SOURCE_ONLY) else db.expected
                    if answer != expected:
                        raise SystemExit(f"{name} over {db.name}: wrong answer")
                    if round_ == 0:
                        continue
                    samples[name].seconds.append(seconds)
                    samples[name].growth.append(rss.growth)
                    samples[name].cpu.append(cpu)
                    samples[name].machine.append(busy)
                    _common.progress(
                        f"  {db.name} round {round_}/{runs}: "
                        f"{_common.fmt_rate(rows / seconds):>11}  "
                        f"{rss.growth / 2**20:7.1f} MiB  {name}"
                    )
    return samples


def machine_busy() -> float:
    """CPU seconds all CPUs have spent busy since boot."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


# Reporting ----------------------------------------------------------------------------------


def paired_ratio(samples: dict[str, Samples], name: str, rows: int) -> float:
    """Median over rounds of this variant's rows/s over the raw cursor's, same round."""
    ours, raw = samples[name].rates(rows), samples[RAW].rates(rows)
    return _common.median(a / b for a, b in zip(ours, raw, strict=True))


def table(samples: dict[str, Samples], rows: int) -> str:
    lines = []
    for name in samples:
        rates = samples[name].rates(rows)
        lines.append(
            [
                name,
                _common.fmt_rate(_common.median(rates)),
                f"{_common.fmt_rate(min(rates))} to {_common.fmt_rate(max(rates))}",
                _common.fmt_ratio(paired_ratio(samples, name, rows)),
                f"{_common.median(samples[name].growth) / 2**20:.1f} MiB",
                f"{_common.median(samples[name].cpu) / rows * 1e9:,.0f} ns",
                f"{_common.median(samples[name].machine) / rows * 1e9:,.0f} ns",
            ]
        )
    headers = ["variant", "median rows/s", "range", "vs raw cursor", "caller's peak RSS growth"]
    return _common.markdown_table(
        [*headers, "caller's CPU per row", "machine's CPU per row"], lines
    )


def targets(results: dict[str, dict[str, Samples]], rows: int) -> str:
    lines = []
    for db_name, samples in results.items():
        fetched = _common.median(samples[FETCH_ALL].growth) / 2**20
        for name in (AIOMR, AIOMR_COPY, *WORKER_RANGE_VARIANTS, *WORKER_PAGE_VARIANTS):
            if name not in samples:
                continue
            ratio = paired_ratio(samples, name, rows)
            lines.append(
                [db_name, f"{name} ≥ {TARGET_RATIO} of the raw cursor's rows/s",
                 f"{ratio:.2f}", _common.verdict(ratio >= TARGET_RATIO)]
            )  # fmt: skip
        growth = (
            max(_common.median(samples[n].growth) for n in AIOMR_VARIANTS if n in samples) / 2**20
        )
        lines.append(
            [db_name, "the caller's memory stays flat",
             f"at most {growth:.1f} MiB (fetch all: {fetched:.1f} MiB)",
             _common.verdict(growth < fetched / 4)]
        )  # fmt: skip
        for name in (AIOMR_SPLIT, AIOMR_COPY_SPLIT, *WORKER_RANGE_VARIANTS, *WORKER_PAGE_VARIANTS):
            if name not in samples:
                continue
            ratio = paired_ratio(samples, name, rows)
            lines.append(
                [db_name, f"{name} reads faster than the raw single cursor",
                 f"{ratio:.2f}", _common.verdict(ratio > 1)]
            )  # fmt: skip
    return _common.markdown_table(["database", "target", "measured", ""], lines, left=(0, 1, 2))


def render(results: dict[str, dict[str, Samples]], runs: int, rows: int, loop: str) -> str:
    parts = [
        "## Database rows",
        "",
        _common.machine_line(),
        "",
        f"{rows:,} rows `(id, store, amount)` of a table the benchmark creates, summed by "
        f"store ({STORES} stores) on {WORKERS} worker processes, under "
        f"{_common.loop_label(loop)}. The database server runs on the same {WORKERS} CPUs. "
        f"Each variant ran {runs} times (after one untimed warm-up round), interleaved with "
        "the others in rotating order; the table gives the median rows/s, the range over the "
        "runs, the median over rounds of the ratio to the raw cursor loop measured in the same "
        "round, the median peak growth of the caller's resident memory, the caller's CPU "
        "time per row (all its threads; workers and database server excluded) and the "
        "machine's (every process: server, caller, workers, and whatever else ran). Every "
        "answer was checked against SQL `GROUP BY`.",
        "",
        "- raw cursor loop: the driver's batched cursor (asyncpg `cursor.fetch(5000)` in a "
        "transaction, aiosqlite `fetchmany(5000)`), counting rows and nothing else;",
        "- fetch all, then `multiprocessing.Pool(2).map`: every row in one list (asyncpg "
        "records turned into tuples first: they do not pickle), mapped in 10,000-row slices "
        "on a warm pool with the same function as aiomr's chunk mode;",
        f"- aiomr: `aiomr.sources.query` (batches of {DEFAULT_BATCH_SIZE:,}) on a warm "
        "`Engine(max_workers=2)`, adaptive chunks; `run_by_key` maps every row to "
        "`(store, amount)` and reduces by key;",
        "- `transfer='copy'` (asyncpg only): the same jobs reading `COPY (query) TO STDOUT`; "
        "the caller passes the text blocks on and the workers decode them into the same "
        "tuples;",
        f"- range split: `RangeSplit('id', 1, {rows + 1:,}, {PARTITIONS})` over an asyncpg "
        f"pool of {PARTITIONS} connections, or {PARTITIONS} SQLite connections; `id` is the "
        "table's primary key (PostgreSQL) or `INTEGER PRIMARY KEY` (SQLite);",
        f"- ranges read by the workers: `postgres_ranges` / `sqlite_ranges` with "
        f"`RangeSplit('id', 1, {rows + 1:,}, {WORKER_RANGES})`; each range read by a worker "
        "(psycopg, a server-side binary cursor; the standard library's `sqlite3`), 10,000 "
        "rows per fetch, and mapped there: the caller sends only each range's query; "
        f"page ranges (PostgreSQL only): `PageSplit('{TABLE}', {WORKER_RANGES})`, each "
        "range a run of the table's pages read by a TID range scan (no index used).",
        "",
    ]
    for db_name, samples in results.items():
        parts += [f"### {db_name}", "", table(samples, rows), ""]
    parts += ["### Against the targets", "", targets(results, rows), ""]
    parts += ["### Where the caller's time goes", "", budget(results, rows), "", LIMITS, ""]
    return "\n".join(parts)


def budget(results: dict[str, dict[str, Samples]], rows: int) -> str:
    """CPU per row, step by step in the caller, then for the whole machine."""

    def per_row(samples: dict[str, Samples], name: str) -> float:
        return _common.median(samples[name].cpu) / rows * 1e9

    def machine(samples: dict[str, Samples], name: str) -> float:
        return _common.median(samples[name].machine) / rows * 1e9

    lines = []
    for db_name, samples in results.items():
        raw, source = per_row(samples, RAW), per_row(samples, SOURCE_ONLY)
        job, no_gc = per_row(samples, AIOMR), per_row(samples, NO_GC)
        lines += [
            [db_name, "caller: the driver fetches and decodes the rows (raw loop)",
             f"{raw:,.0f} ns"],
            [db_name, "caller: `query` turns them into tuples and hands them out one by one",
             f"{source - raw:+,.0f} ns"],
            [db_name, "caller: the job takes them into chunks a batch at a time, pickles, folds",
             f"{job - source:+,.0f} ns"],
            [db_name, "caller: of all that, the cyclic garbage collector (job with GC off)",
             f"{job - no_gc:,.0f} ns"],
        ]  # fmt: skip
        if AIOMR_COPY in samples:
            lines.append(
                [db_name, "caller: the whole job with `transfer='copy'` (no row decoded)",
                 f"{per_row(samples, AIOMR_COPY):,.0f} ns"]
            )  # fmt: skip
        steps = (
            (RAW, "the raw cursor loop"),
            (AIOMR, "aiomr, `transfer='rows'`"),
            (AIOMR_COPY, "aiomr, `transfer='copy'`"),
            (AIOMR_WORKER_RANGES, "aiomr, ranges read by the workers"),
            (AIOMR_WORKER_PAGES, "aiomr, page ranges read by the workers"),
        )
        for name, what in steps:
            if name in samples:
                lines.append(
                    [db_name, f"whole machine (server, caller, workers): {what}",
                     f"{machine(samples, name):,.0f} ns"]
                )  # fmt: skip
    return _common.markdown_table(["database", "step", "CPU per row"], lines, left=(0, 1))


LIMITS = (
    "With `transfer='rows'` every row passes through the caller, one process on one CPU: the "
    "driver decodes it, `query` makes it a tuple (asyncpg's records do not pickle), the job "
    "takes it into a chunk (a batch at a time) and pickles the chunk to a worker. The raw "
    "loop does only the first step, so the caller's CPU per row sets aiomr's pace. With "
    "`transfer='copy'` the caller builds no row: it moves blocks of `COPY` text, and its CPU "
    "per row drops to a fraction of the raw loop's. The pace is then set by the machine as a "
    "whole: the database server, the caller and the two workers share its two CPUs, and the "
    "workers decode every value from text in Python (`int()` on each field, a tuple per row), "
    "which costs more CPU than asyncpg's decoding in C plus pickling. The last rows of the "
    "table above give the whole machine's CPU per row: on two CPUs no variant can pass "
    "2 s / (its CPU per row) rows a second, and the raw loop, which neither pickles nor "
    "folds, needs the least. A range split through the caller adds database backends and "
    "connections but no CPU, so it can only beat a single raw cursor where there are CPUs to "
    "spare (or the query itself is slow: filters, joins, a busy or remote server). With the "
    "ranges read by the workers (`postgres_ranges`, `sqlite_ranges`) no row passes through "
    "the caller: each worker fetches and decodes its own rows with the driver's C code and "
    "maps them where they are. SQLite has no server, and its raw loop runs on one CPU: two "
    "workers reading their own ranges pass it. PostgreSQL's server shares the two CPUs: the "
    "raw loop already keeps most of both busy (server and caller), and the workers' path "
    "costs more per row (server, decoding, and the mapping the raw loop does not do), so on "
    "two CPUs it stays near the raw loop's rate."
)


async def run_all(runs: int, rows: int, databases: list[str]) -> dict[str, dict[str, Samples]]:
    results: dict[str, dict[str, Samples]] = {}
    makers = {"postgres": postgres, "sqlite": sqlite}
    for which in databases:
        async with makers[which](rows) as db:
            _common.progress(f"{db.name}: {rows:,} rows, {runs} runs")
            results[db.name] = await measure(db, runs, rows)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = _common.parser(__doc__.splitlines()[0], default_runs=3)
    parser.set_defaults(loop="uvloop")
    parser.add_argument("--rows", type=int, default=None, help=f"default {ROWS:,}")
    parser.add_argument(
        "--db", choices=["postgres", "sqlite", "both"], default="both", help="default: both"
    )
    args = parser.parse_args(argv)
    if args.loop == "both":
        parser.error("--loop both: choose one loop for this benchmark")
    rows = args.rows or (100_000 if args.quick else ROWS)
    runs = 1 if args.quick and args.runs == parser.get_default("runs") else args.runs
    databases = ["postgres", "sqlite"] if args.db == "both" else [args.db]
    results = _common.run_on(args.loop, run_all(runs, rows, databases))
    text = render(results, runs, rows, args.loop)
    print(text)
    if args.write_docs:
        _common.write_extra_section("db", text)


if __name__ == "__main__":
    main()
