"""Server-Sent Events: a job's progress as ``text/event-stream``, ending with the job.

A stream is a series of events, each a few ``field: value`` lines and a blank line::

    id: 3
    event: progress
    data: {"id": "…", "status": "running", "records": 1200, "top": [...], ...}

    id: 9
    event: end
    data: {"id": "…", "status": "done", "top": [...], ...}

``progress`` events come as the job's state changes (a few per second), ``end`` once with
the final state (``done``, ``failed`` or ``cancelled``); the response then ends. A comment
line (``: keep-alive``) goes out when nothing happened for a while, so proxies keep the
connection open.

`EventStream` watches the client while it streams: when the client goes away, the stream
is cancelled at once instead of at its next write, so a watcher of a long, quiet job does
not linger.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from .jobs import Job, JobRegistry

__all__ = ["EventStream", "format_event", "job_events"]

KEEP_ALIVE_SECONDS = 15.0
"""Quiet time before a keep-alive comment: below the usual proxy idle timeouts (30-60 s)."""


def format_event(event: str, data: Any, *, event_id: int | None = None) -> bytes:
    """Encode one event; ``data`` as one line of JSON (which never holds a newline)."""
    lines = [] if event_id is None else [f"id: {event_id}"]
    lines += [f"event: {event}", f"data: {json.dumps(data, ensure_ascii=False)}"]
    return ("\n".join(lines) + "\n\n").encode()


async def job_events(
    job: Job, registry: JobRegistry, *, keep_alive: float = KEEP_ALIVE_SECONDS
) -> AsyncIterator[bytes]:
    """Yield the events of ``job`` from its current state to its end."""
    registry.event_streams += 1
    try:
        yield b"retry: 2000\n\n"
        seen = -1
        while True:
            try:
                async with asyncio.timeout(keep_alive):
                    await job.wait_changed(seen)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            seen = job.version
            state = job.to_json()
            if job.running:
                yield format_event("progress", state, event_id=seen)
            else:
                yield format_event("end", state, event_id=seen)
                return
    finally:
        registry.event_streams -= 1


class EventStream(StreamingResponse):
    """Stream ``events`` as ``text/event-stream``; stop as soon as the client disconnects."""

    def __init__(self, events: AsyncIterator[bytes]) -> None:
        super().__init__(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with asyncio.TaskGroup() as tasks:
            streaming = tasks.create_task(self._stream(send))
            listening = tasks.create_task(_until_disconnected(receive))
            streaming.add_done_callback(lambda _: listening.cancel())
            listening.add_done_callback(lambda _: streaming.cancel())

    async def _stream(self, send: Send) -> None:
        try:
            await self.stream_response(send)
        except OSError:
            pass  # the client went away between two events
        finally:
            aclose = getattr(self._events, "aclose", None)
            if aclose is not None:
                await aclose()


async def _until_disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
