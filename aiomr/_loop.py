"""Run programs on uvloop when it is installed."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["loop_factory", "run"]

T = TypeVar("T")


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

    Args:
        main: the coroutine to run.
        use_uvloop: see `loop_factory`.
        debug: asyncio's debug mode.
        handle_sigterm: cancel ``main`` on SIGTERM, then exit with status 143.
    """
    with asyncio.Runner(debug=debug, loop_factory=loop_factory(use_uvloop)) as runner:
        if not handle_sigterm or threading.current_thread() is not threading.main_thread():
            return runner.run(main)
        try:
            return runner.run(_cancelled_on_sigterm(main))
        except _Terminated:
            raise SystemExit(128 + signal.SIGTERM) from None


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
