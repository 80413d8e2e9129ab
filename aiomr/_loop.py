"""Run programs on uvloop when it is installed."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from ._checks import check_seconds

__all__ = ["loop_factory", "run"]

T = TypeVar("T")

SWITCH_INTERVAL = 0.001
"""The GIL switch interval `run` sets while it runs (Python's default is 0.005 s).

A thread that wants the GIL waits up to this long for the thread that holds it to let go.
The event loop shares the caller's process with helper threads that run Python code: aiomr's
fold thread, and whatever a program sends to ``asyncio.to_thread`` (decoding a large result,
say). At Python's 5 ms, every tick of the loop that falls while such a thread computes comes
up to 5 ms late; at 1 ms, at most 1 ms. The extra hand-overs cost those threads well under
1% of their speed; the worker processes are not affected."""


def loop_factory(use_uvloop: bool | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Return uvloop's loop factory when wanted and installed, else ``None`` (asyncio's loop).

    Args:
        use_uvloop: ``True`` requires uvloop (ImportError if missing), ``False`` never uses it,
            ``None`` uses it when installed.
    """
    if use_uvloop is False:
        return None
    try:
        import uvloop
    except ImportError:
        if use_uvloop:
            raise
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(
    main: Coroutine[Any, Any, T],
    *,
    use_uvloop: bool | None = None,
    debug: bool | None = None,
    handle_sigterm: bool = True,
    switch_interval: float | None = SWITCH_INTERVAL,
) -> T:
    """Run ``main`` to completion on a new event loop, uvloop when installed, and return its result.

    Like `asyncio.run`, with uvloop picked for you, and SIGTERM handled like Ctrl-C:

        import aiomr

        async def main() -> int:
            return await aiomr.map_reduce(range(1, 11), lambda x: x * x, lambda a, b: a + b)

        if __name__ == "__main__":
            print(aiomr.run(main()))  # 385

    Ctrl-C (SIGINT) cancels ``main``, so every job it awaits stops, removes its temporary
    files and stops the workers it started; then `KeyboardInterrupt` is raised, as
    `asyncio.run` does. SIGTERM, which by default ends Python at once and leaves no chance
    to clean up, gets the same treatment when ``handle_sigterm`` is true (and ``run`` is
    called from the main thread); then ``SystemExit(143)`` is raised, the status a shell
    shows for a process ended by SIGTERM.

    A large result costs nothing on the way out. (`asyncio.run` on Python 3.11 formats the
    main task's ``repr`` twice when it restores the SIGINT handler, CPython issue 112559; a
    dict of 150,000 words took 0.17 s of sorting its keys for that.)

    While ``main`` runs, the interpreter's GIL switch interval is `SWITCH_INTERVAL` (1 ms):
    helper threads of the caller, such as the one that folds partial results, then hand the
    event loop the GIL within a millisecond instead of five. The previous interval is put
    back when ``run`` returns.

    Args:
        main: the coroutine to run.
        use_uvloop: see `loop_factory`.
        debug: asyncio's debug mode.
        handle_sigterm: cancel ``main`` on SIGTERM, then exit with status 143.
        switch_interval: seconds for `sys.setswitchinterval` while ``main`` runs; ``None``
            leaves the interpreter's setting alone.
    """
    check_seconds("switch_interval", switch_interval, optional=True)
    previous = sys.getswitchinterval()
    if switch_interval is not None:
        sys.setswitchinterval(switch_interval)
    try:
        with asyncio.Runner(debug=debug, loop_factory=loop_factory(use_uvloop)) as runner:
            if not handle_sigterm or threading.current_thread() is not threading.main_thread():
                return runner.run(_boxed(main)).value
            try:
                return runner.run(_boxed(_cancelled_on_sigterm(main))).value
            except _Terminated:
                raise SystemExit(128 + signal.SIGTERM) from None
    finally:
        sys.setswitchinterval(previous)


class _Box(Generic[T]):
    """The main coroutine's result, kept out of its task's ``repr``."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"<result of type {type(self.value).__qualname__}>"


async def _boxed(main: Coroutine[Any, Any, T]) -> _Box[T]:
    return _Box(await main)


class _Terminated(Exception):
    """SIGTERM cancelled the main coroutine."""


async def _cancelled_on_sigterm(main: Coroutine[Any, Any, T]) -> T:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    terminated = False

    def on_sigterm() -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        return await main
    except asyncio.CancelledError:
        if terminated:
            raise _Terminated from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
