"""The example service (examples/service) on a real server: uvicorn on loopback, httpx, and
the engine's default worker processes."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import pathlib
import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from examples.service.app import Service, ServiceServer, Settings, create_app, make_server

DEADLINE = 60.0
"""Seconds any wait may take before the test fails: generous, for a loaded machine."""


@dataclass
class Running:
    url: str
    service: Service
    server: ServiceServer
    client: httpx.AsyncClient


@contextlib.asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[Running]:
    """Serve the example on a free loopback port in this event loop; stop it on exit."""
    app = create_app(settings)
    server = make_server(app, log_level="warning")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            async with asyncio.timeout(DEADLINE):
                while not server.started:
                    if serving.done():
                        serving.result()  # the startup error, if any
                    await asyncio.sleep(0.01)
            async with httpx.AsyncClient(base_url=url, timeout=DEADLINE, trust_env=False) as c:
                yield Running(url, server.service, server, c)
        finally:
            server.should_exit = True
            await serving


def make_text(lines: int, seed: int) -> tuple[str, collections.Counter[str]]:
    """Text with capitals and punctuation, and the count of its (lower-case) words."""
    rng = random.Random(seed)
    vocabulary = [a + b + c for a in "bdfgklmprst" for b in "aeiou" for c in "nrst"]
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]
    counts: collections.Counter[str] = collections.Counter()
    rows = []
    for _ in range(lines):
        words = rng.choices(vocabulary, weights, k=rng.randint(1, 14))
        counts.update(words)
        shown = [w.capitalize() if rng.random() < 0.2 else w for w in words]
        rows.append(" ".join(w + rng.choice(["", "", "", ",", ".", "!"]) for w in shown))
    return "\n".join(rows) + "\n", counts


def top20(counts: collections.Counter[str]) -> list[list[Any]]:
    """The service's table: count descending, ties alphabetical."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:20]
    return [[word, count] for word, count in ranked]


def table(job: dict[str, Any]) -> list[list[Any]]:
    return [[row["word"], row["count"]] for row in job["top"]]


async def wait_for_end(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    async with asyncio.timeout(DEADLINE):
        while True:
            response = await client.get(f"/jobs/{job_id}")
            assert response.status_code == 200, response.text
            job: dict[str, Any] = response.json()
            if job["status"] != "running":
                return job
            await asyncio.sleep(0.05)


async def wait_until(client: httpx.AsyncClient, check: Any) -> dict[str, Any]:
    """Poll ``GET /health`` until ``check(health)`` holds."""
    async with asyncio.timeout(DEADLINE):
        while True:
            health: dict[str, Any] = (await client.get("/health")).json()
            if check(health):
                return health
            await asyncio.sleep(0.05)


async def read_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """Parse a ``text/event-stream`` body into ``(event, data)`` pairs, checking its form."""
    events = []
    block: list[str] = []
    async for line in response.aiter_lines():
        if line:
            block.append(line)
            continue
        if not block:
            continue
        fields = dict(entry.split(": ", 1) for entry in block if not entry.startswith(":"))
        block = []
        if "data" in fields:
            assert set(fields) == {"id", "event", "data"}, fields
            events.append((fields["event"], json.loads(fields["data"])))
        else:
            assert set(fields) <= {"retry"}, fields
    assert block == [], "the stream ended inside an event"
    return events


BIG_FILES = 150
"""Hard links to one 1 MiB file: 150 MiB of text to count (many seconds of work) that cost
one MiB of disk and no time to create."""


@pytest.fixture
def data_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    data = tmp_path / "data"
    (data / "books").mkdir(parents=True)
    text, _ = make_text(3000, seed=1)
    (data / "books" / "one.txt").write_text(text)
    (data / "books" / "two.txt").write_text(make_text(2000, seed=2)[0])
    (tmp_path / "secret.txt").write_text("secret words outside the data directory\n")
    (data / "big").mkdir()
    block = ("lorem ipsum dolor sit amet consectetur " * 3 + "\n").encode()
    first = data / "big" / "part000.txt"
    first.write_bytes(block * (2**20 // len(block)))
    for n in range(1, BIG_FILES):
        os.link(first, data / "big" / f"part{n:03}.txt")
    return data


@pytest.fixture
async def service(data_dir: pathlib.Path, nothing_left_running: None) -> AsyncIterator[Running]:
    settings = Settings(
        data_dir=data_dir,
        max_body_bytes=4 * 2**20,
        workers=2,
        split_bytes=256 * 1024,
        grace=2.0,
    )
    async with running_service(settings) as running:
        yield running


async def post_text(client: httpx.AsyncClient, text: str) -> str:
    response = await client.post(
        "/jobs", content=text.encode(), headers={"Content-Type": "text/plain; charset=utf-8"}
    )
    assert response.status_code == 202, response.text
    reply = response.json()
    assert reply["status"] == "running"
    assert response.headers["location"] == f"/jobs/{reply['id']}"
    job_id: str = reply["id"]
    return job_id


async def test_text_job_counts_the_words_of_the_body(service: Running) -> None:
    text, counts = make_text(20_000, seed=3)
    job_id = await post_text(service.client, text)
    job = await wait_for_end(service.client, job_id)
    assert job["status"] == "done", job
    assert table(job) == top20(counts)
    assert job["records"] == 20_000
    assert job["chunks_done"] >= 2  # several map tasks, merged
    assert job["error"] is None
    assert job["elapsed_seconds"] > 0


async def test_upload_job_counts_the_uploaded_file(service: Running) -> None:
    text, counts = make_text(5000, seed=4)
    response = await service.client.post(
        "/jobs", files={"file": ("words.txt", text.encode(), "text/plain")}
    )
    assert response.status_code == 202, response.text
    job = await wait_for_end(service.client, response.json()["id"])
    assert job["status"] == "done", job
    assert job["source"] == "upload: words.txt"
    assert table(job) == top20(counts)


async def test_form_text_field_is_counted(service: Running) -> None:
    text, counts = make_text(300, seed=5)
    response = await service.client.post("/jobs", data={"text": text})
    assert response.status_code == 202, response.text
    job = await wait_for_end(service.client, response.json()["id"])
    assert table(job) == top20(counts)


async def test_path_jobs_read_files_and_directories_of_the_data_dir(service: Running) -> None:
    _, one = make_text(3000, seed=1)
    _, two = make_text(2000, seed=2)
    for path, counts in [("books/one.txt", one), ("books", one + two), ("./books/", one + two)]:
        response = await service.client.post("/jobs", json={"path": path})
        assert response.status_code == 202, response.text
        job = await wait_for_end(service.client, response.json()["id"])
        assert job["status"] == "done", job
        assert table(job) == top20(counts), path


async def test_concurrent_jobs_share_the_engine(service: Running) -> None:
    texts = [make_text(4000, seed=10 + n) for n in range(4)]
    ids = await asyncio.gather(*(post_text(service.client, text) for text, _ in texts))
    jobs = await asyncio.gather(*(wait_for_end(service.client, i) for i in ids))
    for job, (_, counts) in zip(jobs, texts, strict=True):
        assert job["status"] == "done", job
        assert table(job) == top20(counts)


async def test_events_stream_progress_and_end_with_the_result(service: Running) -> None:
    text, counts = make_text(40_000, seed=6)
    job_id = await post_text(service.client, text)
    async with service.client.stream("GET", f"/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = await read_events(response)
    assert events, "no event"
    *progress, (last, final) = events
    assert last == "end"
    assert all(name == "progress" for name, _ in progress)
    assert all(data["status"] == "running" for _, data in progress)
    assert final["status"] == "done"
    assert table(final) == top20(counts)
    assert final["records"] == 40_000
    # A finished job's stream is its end event alone.
    async with service.client.stream("GET", f"/jobs/{job_id}/events") as response:
        assert [name for name, _ in await read_events(response)] == ["end"]


async def test_event_stream_of_a_disconnected_client_is_released(service: Running) -> None:
    response = await service.client.post("/jobs", json={"path": "big"})
    job_id = response.json()["id"]
    async with service.client.stream("GET", f"/jobs/{job_id}/events") as events:
        async for line in events.aiter_lines():
            if line.startswith("event: progress"):
                break
        await wait_until(service.client, lambda health: health["event_streams"] == 1)
    # Leaving the block closed the connection mid-stream; the job goes on.
    await wait_until(service.client, lambda health: health["event_streams"] == 0)
    assert (await service.client.get(f"/jobs/{job_id}")).json()["status"] == "running"
    assert (await service.client.delete(f"/jobs/{job_id}")).status_code == 204


async def test_delete_cancels_a_running_job(service: Running) -> None:
    response = await service.client.post("/jobs", json={"path": "big"})
    job_id = response.json()["id"]
    async with asyncio.timeout(DEADLINE):
        while (job := (await service.client.get(f"/jobs/{job_id}")).json())["chunks_done"] < 1:
            await asyncio.sleep(0.05)
    assert job["status"] == "running"
    response = await service.client.delete(f"/jobs/{job_id}")
    assert response.status_code == 204
    assert response.content == b""
    job = (await service.client.get(f"/jobs/{job_id}")).json()
    assert job["status"] == "cancelled"
    assert job["error"] == "cancelled by request"
    assert job["bytes_done"] < job["bytes_total"]
    response = await service.client.delete(f"/jobs/{job_id}")
    assert response.status_code == 409
    assert response.json() == {"error": f"job {job_id} is already cancelled"}
    # The workers are free for the next job.
    text, counts = make_text(500, seed=7)
    job = await wait_for_end(service.client, await post_text(service.client, text))
    assert table(job) == top20(counts)
    assert (await service.client.get("/health")).json()["jobs_running"] == 0


REFUSED_PATHS: list[tuple[object, int]] = [
    ("../secret.txt", 403),
    ("books/../../secret.txt", 403),
    ("../missing.txt", 403),  # outside is outside, whether or not it exists
    ("link-out.txt", 403),
    ("dir-out", 403),
    ("dir-out/secret.txt", 403),
    ("mixed", 403),  # a directory holding one link that leads out
    ("/etc/passwd", 400),
    ("", 400),
    ("books/*.txt", 400),
    ("nul\x00.txt", 400),
    (7, 400),
    (None, 400),
    ("nothing-here.txt", 404),
]


async def test_paths_outside_the_data_dir_are_refused(
    service: Running, data_dir: pathlib.Path
) -> None:
    outside = data_dir.parent
    (data_dir / "link-out.txt").symlink_to(outside / "secret.txt")
    (data_dir / "dir-out").symlink_to(outside)
    (data_dir / "mixed").mkdir()
    (data_dir / "mixed" / "fine.txt").write_text("fine\n")
    (data_dir / "mixed" / "leak.txt").symlink_to(outside / "secret.txt")
    for path, status in REFUSED_PATHS:
        response = await service.client.post("/jobs", json={"path": path})
        assert response.status_code == status, (path, response.text)
        error = response.json()["error"]
        assert isinstance(error, str), path
        assert error, path
        if status == 403:
            assert "outside the data directory" in error, path
            assert str(outside) not in error, path  # says nothing about the rest of the disk
    health = (await service.client.get("/health")).json()
    assert health["jobs_running"] == health["jobs_finished"] == 0


async def test_links_inside_the_data_dir_are_followed(
    service: Running, data_dir: pathlib.Path
) -> None:
    (data_dir / "alias.txt").symlink_to(data_dir / "books" / "one.txt")
    response = await service.client.post("/jobs", json={"path": "alias.txt"})
    assert response.status_code == 202, response.text
    job = await wait_for_end(service.client, response.json()["id"])
    assert table(job) == top20(make_text(3000, seed=1)[1])


async def test_bad_requests_get_json_errors(service: Running) -> None:
    client = service.client
    cases = [
        await client.post("/jobs", content=b"", headers={"Content-Type": "text/plain"}),
        await client.post("/jobs", content=b"{nope", headers={"Content-Type": "application/json"}),
        await client.post("/jobs", json={"file": "x"}),
        await client.post("/jobs", files={"other": ("x.txt", b"words", "text/plain")}),
    ]
    for response in cases:
        assert response.status_code == 400, response.text
        assert response.json()["error"]


async def test_oversized_bodies_are_refused_with_413(service: Running) -> None:
    client = service.client
    limit = 4 * 2**20
    expected = {"error": f"request body too large: the limit is {limit} bytes"}
    # Declared too large: refused before the application reads it.
    body = b"word " * (limit // 5 + 1000)
    response = await client.post("/jobs", content=body, headers={"Content-Type": "text/plain"})
    assert response.status_code == 413
    assert response.json() == expected

    # Chunked, no length declared: refused while it arrives.
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(6):
            yield b"word " * (2**20 // 5)

    response = await client.post("/jobs", content=chunks(), headers={"Content-Type": "text/plain"})
    assert response.status_code == 413
    assert response.json() == expected
    # A multipart upload over the limit.
    response = await client.post("/jobs", files={"file": ("big.txt", body, "text/plain")})
    assert response.status_code == 413
    assert response.json() == expected
    health = (await client.get("/health")).json()
    assert health["jobs_running"] == 0
    assert health["jobs_finished"] == 0
    # Nothing of the refused bodies is left on disk.
    assert list(service.service.spool_dir.iterdir()) == []


async def test_unknown_jobs_are_404(service: Running) -> None:
    for method, url in [
        ("GET", "/jobs/nope"),
        ("GET", "/jobs/nope/events"),
        ("DELETE", "/jobs/nope"),
    ]:
        response = await service.client.request(method, url)
        assert response.status_code == 404, (method, url)
        assert response.json() == {"error": "no job nope"}
    response = await service.client.get("/no/such/page")
    assert response.status_code == 404
    assert "error" in response.json()


async def test_page_is_served(service: Running) -> None:
    response = await service.client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "EventSource" in response.text


async def test_shutdown_cancels_jobs_still_running_after_the_grace_period(
    data_dir: pathlib.Path, nothing_left_running: None
) -> None:
    settings = Settings(data_dir=data_dir, workers=2, split_bytes=256 * 1024, grace=0.2)

    async def watch(client: httpx.AsyncClient, job_id: str) -> list[tuple[str, dict[str, Any]]]:
        async with client.stream("GET", f"/jobs/{job_id}/events") as response:
            return await read_events(response)

    async with running_service(settings) as running:
        response = await running.client.post("/jobs", json={"path": "big"})
        job_id = response.json()["id"]
        job = running.service.registry.get(job_id)
        assert job is not None
        engine = running.service.engine
        assert engine is not None
        watching = asyncio.create_task(watch(running.client, job_id))
        await wait_until(running.client, lambda health: health["event_streams"] == 1)
        running.server.should_exit = True
        # The watcher sees the job end: cancelled once the grace period is over.
        *_, (last, final) = await watching
        assert last == "end"
        assert final["status"] == "cancelled"
        assert final["error"] == "the service shut down before the job ended"
    # The server has stopped: the engine is closed, its workers are gone (nothing_left_running
    # checks that), and the upload directory is removed.
    assert job.status == "cancelled"
    assert engine.closed
    assert not running.service.spool_dir.exists()
