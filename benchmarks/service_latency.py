"""The example service under load: endpoint latency beside a 1 GB job, and a small job's wait.

Method. The example service (``examples/service``) runs in its own process, served by
uvicorn on loopback with 2 workers in its engine, over a data directory holding the 1 GB
generated n-gram file of the n-gram benchmark (linked, not copied). A load generator in
this process keeps ``--clients`` concurrent httpx clients calling ``GET /health`` (a
trivial endpoint: a dict of counters) back to back for ``--seconds`` seconds and records
every request's latency:

1. ``idle``: the service runs no job;
2. ``1 GB job``: the same load while the service counts the words of the 1 GB file
   (``POST /jobs {"path": ...}``), started just before the load.

Then fairness: the time a small job (a 4 MB text upload) takes from ``POST`` to ``done``,
alone, and submitted while the 1 GB job runs. Every round repeats both; the figures are
medians over rounds of the per-round p50 and p99. The service's event loop never runs the
word count (its workers do), so the target is a p99 with the job at most twice the p99
without.

Run it alone on the machine::

    flock /tmp/aiomr-bench.lock python3 benchmarks/service_latency.py --write-docs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import ngram

ROOT = Path(__file__).resolve().parent.parent
SECTION = "service-latency"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def service(data_dir: Path) -> AsyncIterator[str]:
    """Run the example service in a process of its own; yield its base URL."""
    port = free_port()
    options = ["--port", str(port), "--workers", "2", "--max-body-bytes", str(64 << 20)]
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "examples.service", "--data-dir", str(data_dir), *options],
        cwd=ROOT,
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


async def run_job(client: httpx.AsyncClient, **request: Any) -> tuple[str, float]:
    """Start a job; return its id and the moment it was started."""
    started = time.perf_counter()
    response = await client.post("/jobs", **request)
    response.raise_for_status()
    return str(response.json()["id"]), started


async def wait_done(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    while True:
        status: dict[str, Any] = (await client.get(f"/jobs/{job_id}")).json()
        if status["status"] != "running":
            return status
        await asyncio.sleep(0.02)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def one_round(
    url: str, big: str, small: bytes, clients: int, seconds: float
) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        idle = await load(url, clients, seconds)
        small_id, started = await run_job(
            client, content=small, headers={"Content-Type": "text/plain"}
        )
        assert (await wait_done(client, small_id))["status"] == "done"
        small_alone = time.perf_counter() - started

        big_id, _ = await run_job(client, json={"path": big})
        busy = await load(url, clients, seconds)
        small_id, started = await run_job(
            client, content=small, headers={"Content-Type": "text/plain"}
        )
        assert (await wait_done(client, small_id))["status"] == "done"
        small_beside = time.perf_counter() - started
        big_status = await client.get(f"/jobs/{big_id}")
        still_running = big_status.json()["status"] == "running"
        await client.delete(f"/jobs/{big_id}")
        await wait_done(client, big_id)
    return {
        "idle_p50": percentile(idle, 0.5),
        "idle_p99": percentile(idle, 0.99),
        "busy_p50": percentile(busy, 0.5),
        "busy_p99": percentile(busy, 0.99),
        "idle_requests": len(idle) / seconds,
        "busy_requests": len(busy) / seconds,
        "small_alone": small_alone,
        "small_beside": small_beside,
        "big_still_running": float(still_running),
    }


def render(rounds: list[dict[str, float]], clients: int, seconds: float, size: str) -> str:
    med = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    ms = 1000.0
    lines = [
        "## The example service under load",
        "",
        "`benchmarks/service_latency.py`: the example service on loopback (2 engine workers),",
        f"{clients} concurrent clients calling `GET /health` back to back for {seconds:.0f} s,",
        f"without and with a word count of the {size} n-gram file running on the service's",
        "engine;",
        f"medians over {len(rounds)} round(s) of each round's percentiles.",
        "",
        "| | p50 | p99 | requests/s |",
        "| --- | ---: | ---: | ---: |",
        f"| idle | {med['idle_p50'] * ms:.1f} ms | {med['idle_p99'] * ms:.1f} ms "
        f"| {med['idle_requests']:.0f} |",
        f"| {size} job running | {med['busy_p50'] * ms:.1f} ms | {med['busy_p99'] * ms:.1f} ms "
        f"| {med['busy_requests']:.0f} |",
        "",
        f"p99 with the job / without: **{med['busy_p99'] / med['idle_p99']:.2f}x** "
        "(target: at most 2x).",
        "",
        "Fairness: a 4 MB upload's word count, from `POST` to `done`: "
        f"{med['small_alone']:.2f} s alone, {med['small_beside']:.2f} s while the {size} job "
        f"runs (**{med['small_beside'] / med['small_alone']:.2f}x**, with two jobs sharing the "
        "workers), the big job still running when it finished in "
        f"{sum(r['big_still_running'] for r in rounds):.0f} of {len(rounds)} rounds.",
    ]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[dict[str, float]]:
    sys.path.insert(0, str(ROOT / "examples"))
    from ngram_data import parse_size

    big_file = Path(ngram.ensure_input(parse_size(args.size)).path)
    words = " ".join(f"word{n % 5000}" for n in range(700_000)).encode()
    small = b"\n".join(words[i : i + 80] for i in range(0, len(words), 80))
    rounds = []
    # The service refuses symlinks leading out of its data directory: a hard link, on the
    # file system of the generated file, shows it the file without copying 1 GB.
    with tempfile.TemporaryDirectory(dir=big_file.parent) as data:
        os.link(big_file, Path(data, "ngrams.tsv"))
        async with service(Path(data)) as url:
            for n in range(args.rounds):
                result = await one_round(url, "ngrams.tsv", small, args.clients, args.seconds)
                print(f"round {n + 1}: {json.dumps({k: round(v, 4) for k, v in result.items()})}")
                rounds.append(result)
    return rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", default="1GB")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    rounds = asyncio.run(main_async(args))
    text = render(rounds, args.clients, args.seconds, args.size)
    print(text)
    if args.write_docs:
        _common.write_extra_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
