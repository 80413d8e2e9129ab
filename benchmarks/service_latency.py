"""The example service under load: endpoint latency beside a 1 GB job, and a small job's wait.

The example service (``examples/service``, uvicorn on loopback, 2 engine workers) serves a
data directory holding the generated n-gram file. ``--clients`` httpx clients call
``GET /health`` back to back for ``--seconds`` seconds, idle and while the service counts
the words of that file; then a 4 MB upload's word count, from ``POST`` to ``done``, alone and
beside the big job. Target: p99 with the job at most twice the p99 without.

    flock /tmp/aiomr-bench.lock python3 benchmarks/service_latency.py --write-docs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _harness as h
import _machine
import _ngram_workload as workload
import httpx
from shared_engine import size_label, small_counts, small_text

from examples.service.words import top_words


@contextlib.asynccontextmanager
async def service(data_dir: Path) -> AsyncIterator[str]:
    """Run the example service in a process of its own; yield its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    options = ["--port", str(port), "--workers", "2", "--max-body-bytes", str(64 << 20)]
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "examples.service", "--data-dir", str(data_dir), *options],
        cwd=_machine.REPO_ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            for _ in range(600):
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/health")).status_code == 200:
                        break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("the service did not start")
        yield url
    finally:
        process.terminate()
        await process.wait()


async def load(url: str, clients: int, seconds: float) -> list[float]:
    """Latencies (seconds) of back-to-back GET /health from ``clients`` clients."""
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < end:
            started = time.perf_counter()
            response = await client.get("/health")
            latencies.append(time.perf_counter() - started)
            response.raise_for_status()

    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=clients)) as c:
        await asyncio.gather(*(client_loop(c) for _ in range(clients)))
    return latencies


async def start_job(client: httpx.AsyncClient, **request: Any) -> str:
    response = await client.post("/jobs", **request)
    response.raise_for_status()
    return str(response.json()["id"])


async def wait_done(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    while True:
        status: dict[str, Any] = (await client.get(f"/jobs/{job_id}")).json()
        if status["status"] != "running":
            return status
        await asyncio.sleep(0.02)


async def small_job(client: httpx.AsyncClient, text: bytes) -> float:
    """Upload the small text for a word count; return the seconds from ``POST`` to ``done``."""
    started = time.perf_counter()
    job = await start_job(client, content=text, headers={"Content-Type": "text/plain"})
    status = await wait_done(client, job)
    done = time.perf_counter() - started
    top = [(row["word"], row["count"]) for row in status["top"]]
    if status["status"] != "done" or top != top_words(small_counts()):
        raise SystemExit(f"the small job failed or counted wrong: {status}")
    return done


async def one_round(url: str, small: bytes, clients: int, seconds: float) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        idle = await load(url, clients, seconds)
        small_alone = await small_job(client, small)
        big = await start_job(client, json={"path": "ngrams.tsv"})
        busy = await load(url, clients, seconds)
        small_beside = await small_job(client, small)
        still_running = (await client.get(f"/jobs/{big}")).json()["status"] == "running"
        await client.delete(f"/jobs/{big}")
        await wait_done(client, big)
    return {
        "idle_p50": h.percentile(idle, 50),
        "idle_p99": h.percentile(idle, 99),
        "busy_p50": h.percentile(busy, 50),
        "busy_p99": h.percentile(busy, 99),
        "idle_requests": len(idle) / seconds,
        "busy_requests": len(busy) / seconds,
        "small_alone": small_alone,
        "small_beside": small_beside,
        "big_still_running": float(still_running),
    }


@dataclass(kw_only=True)
class Result(h.Measurements):
    clients: int
    seconds: float
    size: int
    rows: list[dict[str, float]] = field(default_factory=list)


async def measure_all(r: Result) -> None:
    big_file = Path(workload.ensure_input(r.size).path)
    # The service refuses symlinks leading out of its data directory: a hard link, on the
    # file system of the generated file, shows it the file without copying it.
    with tempfile.TemporaryDirectory(dir=big_file.parent) as data:
        os.link(big_file, Path(data, "ngrams.tsv"))
        async with service(Path(data)) as url:
            for n in range(r.rounds):
                r.rows.append(await one_round(url, small_text(), r.clients, r.seconds))
                h.progress(f"round {n + 1}: { ({k: round(v, 4) for k, v in r.rows[-1].items()}) }")


def measure(args: argparse.Namespace) -> Result:
    size = workload.parse_size(args.size or ("20MB" if args.quick else "1GB"))
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    r = Result(rounds=args.runs, clients=args.clients, seconds=seconds, size=size)
    asyncio.run(measure_all(r))
    return r


def render(r: Result) -> str:
    med = {key: h.median(row[key] for row in r.rows) for key in r.rows[0]}
    size = size_label(r.size).replace(" ", "")
    return "\n".join(
        [
            "`benchmarks/service_latency.py`: the example service on loopback (2 engine workers),",
            f"{r.clients} concurrent clients calling `GET /health` back to back for "
            f"{r.seconds:.0f} s,",
            f"without and with a word count of the {size} n-gram file running on the service's",
            "engine;",
            f"medians over {len(r.rows)} round(s) of each round's percentiles.",
            "",
            "| | p50 | p99 | requests/s |",
            "| --- | ---: | ---: | ---: |",
            f"| idle | {med['idle_p50'] * 1e3:.1f} ms | {med['idle_p99'] * 1e3:.1f} ms "
            f"| {med['idle_requests']:.0f} |",
            f"| {size} job running | {med['busy_p50'] * 1e3:.1f} ms "
            f"| {med['busy_p99'] * 1e3:.1f} ms | {med['busy_requests']:.0f} |",
            "",
            f"p99 with the job / without: **{med['busy_p99'] / med['idle_p99']:.2f}x** "
            "(target: at most 2x).",
            "",
            "Fairness: a 4 MB upload's word count, from `POST` to `done`: "
            f"{med['small_alone']:.2f} s alone, {med['small_beside']:.2f} s while the {size} "
            f"job runs (**{med['small_beside'] / med['small_alone']:.2f}x**, with two jobs "
            "sharing the workers), the big job still running when it finished in "
            f"{sum(row['big_still_running'] for row in r.rows):.0f} of {len(r.rows)} rounds.",
        ]
    )


if __name__ == "__main__":
    parser = h.parser(__doc__, runs=3)
    parser.add_argument("--clients", type=h.positive, default=16, help="default 16")
    parser.add_argument("--seconds", type=float, help="of load per round (default 10)")
    parser.add_argument("--size", help="the generated n-gram file (default 1GB)")
    sys.exit(h.main("service-latency", parser, measure, render))
