"""A real HTTP server on loopback for tests of coroutine mappers: Starlette under uvicorn, in
a thread of the test process, on a port the system picks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

starlette = pytest.importorskip("starlette", reason="the service extra is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="the service extra is not installed")

from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402
from starlette.routing import Route  # noqa: E402


class Counts:
    """What the server saw: requests begun and answered, per path kind."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.begun: dict[str, int] = {}
        self.answered: dict[str, int] = {}

    def add(self, table: dict[str, int], kind: str) -> None:
        with self.lock:
            table[kind] = table.get(kind, 0) + 1


def document(n: int) -> dict[str, Any]:
    """The document the server answers for ``n``: its words count ``n`` in all."""
    return {"n": n, "words": [f"w{n % 7}"] * (n % 5)}


def app(counts: Counts) -> Starlette:
    async def doc(request: Request) -> Response:
        counts.add(counts.begun, "doc")
        delay = float(request.query_params.get("delay", "0"))
        if delay:
            await asyncio.sleep(delay)
        n = int(request.path_params["n"])
        counts.add(counts.answered, "doc")
        return Response(json.dumps(document(n)), media_type="application/json")

    async def hang(request: Request) -> Response:
        counts.add(counts.begun, "hang")
        await asyncio.sleep(3600)
        return Response("late")

    return Starlette(routes=[Route("/doc/{n:int}", doc), Route("/hang", hang)])


@contextlib.contextmanager
def serving() -> Iterator[tuple[str, Counts]]:
    """Run the server until the block ends; yield its base URL and its counts."""
    counts = Counts()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app(counts), log_level="warning", lifespan="off", loop="asyncio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the test server did not start")
            threading.Event().wait(0.01)
        yield f"http://127.0.0.1:{port}", counts
    finally:
        server.should_exit = True
        server.force_exit = True
        thread.join(10)
        sock.close()
