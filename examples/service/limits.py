"""Enforce the request size limit while the body arrives, never after reading it all.

`BodyLimit` is a plain ASGI middleware: a request whose ``Content-Length`` is over the
limit is refused before the application sees it, and one that sends more bytes than it
declared (or a chunked one that never declared a length) is stopped by the ``receive``
channel the application reads from, the moment the count goes over. Either way the answer
is ``413`` with a JSON error.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DEFAULT_MAX_BODY_BYTES", "BodyLimit", "BodyTooLarge"]

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
"""10 MiB: a book or two of plain text. Uploads go to a file, not to memory, so the limit is
about disk and job time rather than the service's memory."""

_DRAIN_FACTOR = 1
"""After refusing a body, read and drop up to this many times the limit more of it before
answering: a client that is still sending then reads the 413 instead of a reset connection
(closing a socket with unread data makes the kernel reset it). Beyond that the service
answers and closes anyway, so a huge upload costs bounded bandwidth and no memory."""


class BodyTooLarge(Exception):
    """The request body went over the limit while the application was reading it."""


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with ``413``, counting while they arrive."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            # A client waiting for "100 Continue" has sent nothing yet: nothing to drain.
            waiting = (_header(scope, b"expect") or "").lower() == "100-continue"
            await self._refuse(receive, send, received=None if waiting else 0)
            return
        received = 0
        more_body = True
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received, more_body
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                more_body = bool(message.get("more_body", False))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if response_started:
                raise
            await self._refuse(receive, send, received=received if more_body else None)

    async def _refuse(self, receive: Receive, send: Send, *, received: int | None) -> None:
        """Drain a bounded part of what is still coming (``received=None``: nothing is),
        then answer ``413`` and close the connection."""
        if received is not None:
            budget = self.max_bytes * _DRAIN_FACTOR
            while budget > 0:
                message = await receive()
                if message["type"] != "http.request":
                    break
                budget -= len(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        body = json.dumps(
            {"error": f"request body too large: the limit is {self.max_bytes} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1").strip()
    return None
