"""Ending cursors, transactions and connections, whatever ended the work inside them.

asyncio is imported only when a clean-up runs, which is always in the caller's process: the
driver modules that use these helpers are loaded in worker processes too (the worker-read
range sources restrict their queries with them), and workers do not load asyncio.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import asyncio

__all__ = ["CLEANUP_GRACE", "first_error_wins", "retrieve", "uninterrupted"]

T = TypeVar("T")


@asynccontextmanager
async def first_error_wins(manager: AbstractAsyncContextManager[Any]) -> AsyncIterator[Any]:
    """Enter ``manager``, and exit it to the end, without letting its own error win.

    Ending a transaction or closing a cursor on a connection that just broke fails too, and
    that second error would hide the first, which says what went wrong. Here the first error
    is raised and the second is added to it as a note. The exit runs `uninterrupted`.
    """
    value = await manager.__aenter__()
    try:
        yield value
    except BaseException as exc:
        try:
            await uninterrupted(manager.__aexit__(type(exc), exc, exc.__traceback__))
        except Exception as err:
            if err is not exc:
                exc.add_note(f"aiomr: cleaning up afterwards failed too: {_brief(err)}")
        raise
    await uninterrupted(manager.__aexit__(None, None, None))


CLEANUP_GRACE = 5.0
"""Seconds a clean-up step may go on after its task was cancelled (see `uninterrupted`)."""


async def uninterrupted(step: Awaitable[T]) -> T:
    """Await a clean-up step to its end, then raise a cancellation that came meanwhile.

    Closing a cursor or ending a transaction takes a round trip to the server. Cut short by
    a cancellation, it leaves the driver's objects half closed: a psycopg cursor stays open
    (and warns when collected), psycopg closes a connection whose cancelled query it was
    still waiting for, and the transaction around the cursor is then rolled back on a busy
    connection. So the step runs in a task of its own; a cancellation of the caller waits
    for it, `CLEANUP_GRACE` seconds at most (then the step is cancelled too), and is raised
    once it has ended.
    """
    import asyncio  # here, not at the top: see the module docstring

    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLEANUP_GRACE
        while not task.done() and (left := deadline - loop.time()) > 0:
            with contextlib.suppress(asyncio.CancelledError):  # cancelled again: still wait
                await asyncio.wait([task], timeout=left)
        task.cancel()  # past its grace; a no-op if it has ended
        task.add_done_callback(retrieve)
        raise


def retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a task's outcome as seen, so asyncio does not report an error nobody awaited."""
    if not task.cancelled():
        task.exception()


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__qualname__}: {exc}"
