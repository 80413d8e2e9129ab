"""Coroutine mappers: I/O-bound and mixed work, aiomr against the usual asyncio ways.

A local aiohttp server (a process of its own, on loopback) answers ``GET /doc/{n}`` after
20 ms with a JSON document. Two workloads: ``io``, a small document fetched and parsed;
``cpu``, a 50 KB document parsed, then about 1 ms of pure-Python work per record. Every
contender (`CONTENDERS`) fetches the same records through one ``aiohttp.ClientSession`` per
process, with the same bound on the requests in flight in total, in a fresh process per run,
with a 1 ms ticker on the caller's loop; its total must equal the expected one.
docs/benchmarks.md says what is measured and how.

    flock /tmp/aiomr-bench.lock python3 benchmarks/coroutines.py --write-docs
    python3 benchmarks/coroutines.py --quick        # a smoke run: 2,000 records
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import multiprocessing
import operator
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import _harness as h
import _isolated
import _machine

RECORDS, QUICK_RECORDS, CONCURRENCY, WORKERS = 20_000, 2_000, 64, 2
DELAY = 0.020
"""Seconds the server waits before it answers each request."""
WORDS = [f"w{i * 7_919 % 100_000:05d}" for i in range(5_000)]
"""The body of the cpu workload's document: about 50 KB of JSON."""
WORK_SECONDS = 0.001
"""CPU time of the cpu workload's work per record, after parsing (`calibrate`)."""
TICK = 0.001
IO_TARGET, CPU_TARGET, LAG_P99_MS = 1.10, 1.7, 5.0
"""The targets: aiomr's wall time on the io workload at most 1.1x the fastest other
contender's; on the cpu workload at least 1.7x faster than the fastest single-process one;
the caller's loop lag p99 at most 5 ms."""
RUN_TIMEOUT = 600.0
WORKLOADS = {
    "io": "io: a small document, fetched and parsed",
    "cpu": "cpu: a 50 KB document, parsed, then about 1 ms of work",
}


def crunch(words: list[str], steps: int) -> int:
    """Walk a document's words in a pure-Python loop: the cpu workload's work."""
    acc, count = 0, len(words)
    for i in range(steps):
        acc = (acc * 31 + len(words[i % count])) & 0xFFFF_FFFF
    return acc


# The server ------------------------------------------------------------------------------------


def serve(conn: Connection, workload: str) -> None:
    """The server's process: answer ``GET /doc/{n}`` after `DELAY` with the workload's
    document; send the port the OS picked on ``conn`` once it listens."""
    from aiohttp import web

    # Encoded once: a document differs from the next only by its number.
    tail = b', "words": ' + json.dumps(WORDS).encode() if workload == "cpu" else b', "ok": true'

    async def document(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        await asyncio.sleep(DELAY)
        return web.Response(body=b'{"n": %d%s}' % (n, tail), content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/doc/{n}", document)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock, backlog=1024).start()
        conn.send(sock.getsockname()[1])
        await asyncio.Event().wait()

    h.run_on("uvloop" if _machine.uvloop_version() else "asyncio", main())


@contextlib.contextmanager
def server(workload: str) -> Iterator[tuple[str, int]]:
    """Run the workload's server in a process of its own; yield its base URL and its pid."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=serve, args=(sender, workload), daemon=True)
    process.start()
    sender.close()
    try:
        if not receiver.poll(60):
            raise SystemExit("the HTTP server did not start")
        yield f"http://127.0.0.1:{receiver.recv()}", process.pid or 0
    finally:
        process.terminate()
        process.join()


# The mapper, the same for every contender ------------------------------------------------------


def client(limit: int) -> Any:
    """An ``aiohttp.ClientSession`` holding at most ``limit`` connections."""
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit))


@dataclass(frozen=True)
class Sessions:
    """aiomr's ``resources=``: one session per worker (per job), closed when the job ends."""

    limit: int

    def __call__(self) -> Any:
        return client(self.limit)


@dataclass(frozen=True)
class Fetch:
    """Fetch record ``n``'s document, parse it, and (cpu workload) work on it: ``n`` plus
    the work's result."""

    url: str
    steps: int
    """Steps of `crunch` per record; 0 for the io workload."""

    async def __call__(self, n: int, session: Any) -> int:
        async with session.get(f"{self.url}/doc/{n}") as response:
            response.raise_for_status()
            doc = await response.json()
        return int(doc["n"]) + (crunch(doc["words"], self.steps) if self.steps else 0)


def bound(fetch: Fetch, session: Any) -> Callable[[int], Awaitable[int]]:
    """``fetch`` with ``session``: the coroutine function a stream library maps."""

    async def one(n: int) -> int:
        return await fetch(n, session)

    return one


_child_session: Any = None


@dataclass(frozen=True)
class InChild:
    """aiomultiprocess's task: `Fetch` with its worker's session, opened by the first task.
    The pool has no hook to close it: it lives as long as its worker process."""

    fetch: Fetch
    limit: int

    async def __call__(self, n: int) -> int:
        global _child_session
        if _child_session is None:
            _child_session = client(self.limit)
        return await self.fetch(n, _child_session)


# The contenders --------------------------------------------------------------------------------


async def run_gather(fetch: Fetch, records: int, c: int, loop: str) -> int:
    """1. A task per record, ``asyncio.gather``, a semaphore bounding them."""
    bound = asyncio.Semaphore(c)
    async with client(c) as session:

        async def one(n: int) -> int:
            async with bound:
                return await fetch(n, session)

        return sum(await asyncio.gather(*(one(n) for n in range(records))))


async def run_aiostream(fetch: Fetch, records: int, c: int, loop: str) -> int:
    """2. aiostream's ``stream.map`` with a task limit, summed as the values arrive."""
    from aiostream import stream

    total = 0
    async with client(c) as session:
        mapped = stream.map(stream.iterate(range(records)), bound(fetch, session), task_limit=c)
        async with mapped.stream() as values:
            async for value in values:
                total += value
    return total


async def run_aiometer(fetch: Fetch, records: int, c: int, loop: str) -> int:
    """3. aiometer's ``amap`` with ``max_at_once``, summed as the values arrive."""
    import aiometer

    total = 0
    async with (
        client(c) as session,
        aiometer.amap(bound(fetch, session), range(records), max_at_once=c) as values,
    ):
        async for value in values:
            total += value
    return total


async def run_aiomultiprocess(fetch: Fetch, records: int, c: int, loop: str) -> int:
    """4. aiomultiprocess: 2 processes running ``c / 2`` tasks each; summed by the caller."""
    import aiomultiprocess

    new_loop = None
    if loop == "uvloop":
        import uvloop

        new_loop = uvloop.new_event_loop
    half = c // WORKERS
    async with aiomultiprocess.Pool(
        processes=WORKERS, childconcurrency=half, loop_initializer=new_loop
    ) as pool:
        return sum(await pool.map(InChild(fetch, half), range(records)))


async def run_aiomr(fetch: Fetch, records: int, c: int, loop: str, inline: bool = False) -> int:
    """5. aiomr on 2 worker processes, ``c / 2`` coroutines and a session in each; 6. with
    ``inline``, ``c`` coroutines on the caller's own loop, one process."""
    import aiomr

    per = c if inline else c // WORKERS
    where: dict[str, Any] = {"executor": "inline"} if inline else {"max_workers": WORKERS}
    total = await aiomr.map_reduce(
        range(records), fetch, operator.add, concurrency=per, resources=Sessions(per), **where
    )
    return int(total)


@dataclass(frozen=True)
class Contender:
    key: str
    label: str  # with ``{c}`` and ``{half}``: the concurrency bound in total and per worker
    run: Callable[[Fetch, int, int, str], Awaitable[int]]
    modules: tuple[str, ...]  # imported before the clock starts, besides aiohttp


AIOMR = "aiomr"
SINGLE = ("gather", "aiostream", "aiometer")
"""The single-process contenders that aiomr's cpu target and the ratios compare with."""
AIOMR_CALL = "aiomr.map_reduce"
CONTENDERS = (
    Contender("gather", "`asyncio.gather` + `asyncio.Semaphore({c})`", run_gather, ()),
    Contender(
        "aiostream", "aiostream: `stream.map(..., task_limit={c})`", run_aiostream, ("aiostream",)
    ),
    Contender("aiometer", "aiometer: `amap(..., max_at_once={c})`", run_aiometer, ("aiometer",)),
    Contender(
        "aiomultiprocess",
        "aiomultiprocess: `Pool(processes=2, childconcurrency={half}).map`",
        run_aiomultiprocess,
        ("aiomultiprocess",),
    ),
    Contender(
        AIOMR, "aiomr, 2 workers: `concurrency={half}, resources=`", run_aiomr, (AIOMR_CALL,)
    ),
    Contender(
        "aiomr-inline",
        'aiomr inline: `executor="inline", concurrency={c}, resources=`',
        functools.partial(run_aiomr, inline=True),
        (AIOMR_CALL,),
    ),
)
BY_KEY = {c.key: c for c in CONTENDERS}


def contender(args: list[str]) -> dict[str, Any]:
    """Run one contender once in this (fresh) process: ``KEY URL RECORDS C STEPS LOOP``."""
    key, url, records, c, steps, loop = args
    run = BY_KEY[key].run
    _machine.import_names(["aiohttp", *BY_KEY[key].modules], uvloop=loop == "uvloop")
    import psutil  # noqa: F401  (before the clock starts: tree_cpu uses it after it stops)

    async def main() -> dict[str, Any]:
        cpu = _machine.tree_cpu()
        started = time.perf_counter()
        async with _machine.ticking(TICK) as lags:
            total = await run(Fetch(url, int(steps)), int(records), int(c), loop)
        wall = time.perf_counter() - started
        return {"total": total, "wall": wall, "cpu": _machine.tree_cpu() - cpu, "lags": lags}

    return h.run_on(loop, main())


# Measuring -------------------------------------------------------------------------------------


def calibrate() -> tuple[int, float, float]:
    """The steps of `crunch` that take `WORK_SECONDS` here, and the seconds it and parsing
    the cpu workload's document take (best of several tries)."""

    def best(call: Callable[[], object]) -> float:
        tries = []
        for _ in range(7):
            started = time.perf_counter()
            call()
            tries.append(time.perf_counter() - started)
        return min(tries)

    trial = 200_000
    steps = round(trial * WORK_SECONDS / best(lambda: crunch(WORDS, trial)))
    doc = b'{"n": 1, "words": ' + json.dumps(WORDS).encode() + b"}"
    return steps, best(lambda: crunch(WORDS, steps)), best(lambda: json.loads(doc))


def expected_total(records: int, steps: int) -> int:
    """What every contender must find: the records' numbers, plus each one's work."""
    return sum(range(records)) + (records * crunch(WORDS, steps) if steps else 0)


@dataclass(kw_only=True)
class Result(h.Measurements):
    records: int
    concurrency: int
    loop: str
    steps: int
    work: float
    parse: float
    workloads: list[str]
    keys: list[str]
    skipped: list[str]
    server_cpu: dict[str, list[float]] = field(default_factory=dict)
    """CPU seconds the server spent during each run, by run key."""


def measure(args: argparse.Namespace) -> Result:
    """Run every contender ``--runs`` times per workload, interleaved; check every total."""
    if args.loop == "both":
        raise SystemExit("--loop both: choose one loop for this benchmark")
    if h.missing_module(["aiohttp"]):
        raise SystemExit("aiohttp is not installed: every contender fetches with it")
    if args.concurrency % WORKERS:
        raise SystemExit(f"--concurrency must be a multiple of {WORKERS}")
    import psutil

    keys, skipped = h.choose_installed(args.only, BY_KEY)
    workloads = h.choose(args.workload, WORKLOADS, "workloads")
    steps, work, parse = calibrate()
    h.progress(f"calibrated: {steps:,} steps of work take {work * 1e3:.2f} ms")
    records = args.records or (QUICK_RECORDS if args.quick else RECORDS)
    m = Result(
        rounds=args.runs,
        records=records,
        concurrency=args.concurrency,
        loop=args.loop,
        steps=steps,
        work=work,
        parse=parse,
        workloads=workloads,
        keys=keys,
        skipped=skipped,
    )
    for workload in workloads:
        own_steps = steps if workload == "cpu" else 0
        expected = expected_total(records, own_steps)
        with server(workload) as (url, pid):
            served = psutil.Process(pid)
            h.progress(f"{workload}: {records:,} records from {url}, {args.runs} runs")
            for round_, key in h.interleaved(keys, args.runs):
                command = [key, url, str(records), str(m.concurrency), str(own_steps), m.loop]
                before = sum(served.cpu_times()[:2])
                child = _isolated.run_child(__file__, command, timeout=RUN_TIMEOUT)
                spent = sum(served.cpu_times()[:2]) - before
                if child.report is None or child.error is not None:
                    run = _isolated.Run(
                        f"{workload}:{key}", round_, error=child.error or "no report"
                    )
                    m.add(run, f"FAILED: {run.error}")
                    continue
                if child.report["total"] != expected:
                    total = child.report["total"]
                    raise SystemExit(f"{workload}: {key} found {total!r}, not {expected!r}")
                run = _isolated.record(m, f"{workload}:{key}", round_, child, child.report)
                run.problems += child.left
                m.server_cpu.setdefault(run.key, []).append(spent)
    return m


# The docs section ------------------------------------------------------------------------------


def label(m: Result, key: str) -> str:
    return BY_KEY[key].label.format(c=m.concurrency, half=m.concurrency // WORKERS)


def fastest(m: Result, workload: str, keys: Any) -> str | None:
    """The contender of ``keys`` with the shortest median wall time on ``workload``."""
    there = [k for k in keys if m.of(f"{workload}:{k}")]
    return min(there, key=lambda k: m.wall(f"{workload}:{k}")) if there else None


def workload_table(m: Result, workload: str) -> str:
    best = fastest(m, workload, SINGLE)
    rows = []
    for key in m.keys:
        runs = m.of(f"{workload}:{key}")
        if not runs:
            continue
        wall = m.wall(f"{workload}:{key}")
        ratio = m.speedup(f"{workload}:{key}", f"{workload}:{best}") if best else float("nan")
        rows.append(
            [
                label(m, key),
                str(len(runs)),
                f"{wall:.2f} s",
                h.span([r.wall for r in runs], ".2f", " s"),
                h.fmt_rate(m.records / wall),
                f"{h.median(r.cpu for r in runs):.1f}",
                f"{h.median(m.server_cpu.get(f'{workload}:{key}', [])):.1f}",
                h.na(ratio, ".2f", "x"),
                f"{h.fmt_ms(h.median(r.lag_p99 for r in runs), 1)} ms",
                f"{h.fmt_ms(max(r.lag_max for r in runs), 1)} ms",
            ]
        )
    headers = ["contender", "runs", "wall (median)", "range", "records/s", "CPU s"]
    headers += ["server CPU s", f"speed vs {best}", "loop lag p99", "loop lag max"]
    return h.markdown_table(headers, rows)


def targets(m: Result) -> list[tuple[str, str, bool]]:
    """Check aiomr on 2 workers against the targets: its speed, then its caller's loop."""
    out = []
    for workload in (w for w in m.workloads if m.of(f"{w}:{AIOMR}")):
        ours, others = f"{workload}:{AIOMR}", [k for k in m.keys if k != AIOMR]
        best = fastest(m, workload, others if workload == "io" else SINGLE)
        if best is not None:
            speedup = m.speedup(ours, f"{workload}:{best}")
            measured = f"{m.wall(ours):.2f} s against {m.wall(f'{workload}:{best}'):.2f} s ({best})"
            if workload == "io":
                what = f"io: aiomr (2 workers) within {IO_TARGET - 1:.0%} of the fastest other"
                met = 1 / speedup <= IO_TARGET
                out.append((what, f"{measured}: {1 / speedup:.2f}x its time", met))
            else:
                what = (
                    f"cpu: aiomr (2 workers) ≥ {CPU_TARGET}x faster than the fastest in one process"
                )
                out.append((what, f"{measured}: {speedup:.2f}x its speed", speedup >= CPU_TARGET))
        p99 = h.median(r.lag_p99 for r in m.of(ours)) * 1e3
        what = f"{workload}: aiomr (2 workers), caller's loop lag p99 ≤ {LAG_P99_MS:.0f} ms"
        out.append((what, f"{p99:.1f} ms", p99 <= LAG_P99_MS))
    return out


def render(m: Result) -> str:
    """Return the docs section: what was measured, a table per workload, the targets."""
    half = m.concurrency // WORKERS
    skipped = "".join(
        f" Not measured: {label(m, k)} ({h.missing_module(BY_KEY[k].modules)} is not installed)."
        for k in m.skipped
    )
    parts = [
        f"{m.machine} aiomr {m.aiomr}.",
        "",
        f"A local aiohttp server, in a process of its own on loopback, answers `GET /doc/{{n}}` "
        f"{DELAY * 1e3:.0f} ms after each request with a JSON document. *io*: a document of "
        "a few bytes, which the mapper fetches and parses. *cpu*: a document of "
        f"{len(json.dumps(WORDS)) / 1e3:.0f} KB (the record's number and {len(WORDS):,} "
        f"words), which the mapper parses (about {m.parse * 1e3:.2f} ms) and walks in a "
        f"pure-Python loop for about {m.work * 1e3:.2f} ms. Each contender maps "
        f"{m.records:,} records to integers and sums them, through one `aiohttp.ClientSession` "
        f"per process, with {m.concurrency} requests in flight at most in total: "
        f"{m.concurrency} in one process, {half} in each of {WORKERS} worker processes "
        f"(the connector's limit is the same). At {DELAY * 1e3:.0f} ms a request, none can "
        f"pass {h.fmt_rate(m.concurrency / DELAY)}. The callers and aiomultiprocess's workers run "
        f"on {h.loop_label(m.loop)}; the server and aiomr's workers on uvloop where it is "
        f"installed. Each contender ran {h.times(m.rounds)} per workload, in a "
        "fresh process, interleaved round by round in rotating order; figures are medians. "
        "Wall time includes starting the worker processes, as a program sees it. *CPU s* is "
        "the contender's processes' CPU time, *server CPU s* the server's during the same "
        f"run: they share the machine's CPUs. *Speed vs* "
        "is the median over rounds of the fastest single-process contender's wall time over "
        "the contender's in the same round. Loop lag: a task sleeps 1 ms at a time on the "
        "caller's loop and records how late it wakes; p99 is the median over runs of each "
        "run's 99th percentile, max the worst of all runs. Every total was checked against "
        f"the expected one.{skipped}",
        "",
    ]
    for workload in m.workloads:
        parts += [f"### {WORKLOADS[workload]}", "", workload_table(m, workload), ""]
    rows = [[what, measured, h.verdict(met)] for what, measured, met in targets(m)]
    parts += ["### Against the targets", ""]
    parts += [h.markdown_table(["target", "measured", "verdict"], rows, left=(0, 1))]
    if not m.all_ok():
        labels = {f"{w}:{k}": f"{w}: {label(m, k)}" for w in m.workloads for k in m.keys}
        parts += ["", "Runs that failed:", "", _isolated.failure_table(m, labels)]
    return "\n".join(parts)


if __name__ == "__main__":
    parser = h.parser(__doc__, runs=3, loop="uvloop" if _machine.uvloop_version() else "asyncio")
    parser.add_argument("--records", type=h.positive, help=f"records (default {RECORDS:,})")
    parser.add_argument(
        "--concurrency",
        type=h.positive,
        default=CONCURRENCY,
        help=f"requests in flight in total (default {CONCURRENCY})",
    )
    parser.add_argument("--workload", help="comma-separated: io, cpu (default: both)")
    parser.add_argument("--only", help="comma-separated contenders to run (default: all)")
    sys.exit(
        h.main("coroutines", parser, measure, render, contender=contender, ok=lambda m: m.all_ok())
    )
