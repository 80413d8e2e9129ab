"""Run programs on uvloop when it is installed."""

from __future__ import annotations

import asyncio
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
    main: Coroutine[Any, Any, T], *, use_uvloop: bool | None = None, debug: bool | None = None
) -> T:
    """Run ``main`` to completion on a new event loop, uvloop when installed, and return its result.

    Like `asyncio.run`, with uvloop picked for you:

        import aiomr

        async def main() -> int:
            return await aiomr.map_reduce(range(1, 11), lambda x: x * x, lambda a, b: a + b)

        if __name__ == "__main__":
            print(aiomr.run(main()))  # 385

    Args:
        main: the coroutine to run.
        use_uvloop: see `loop_factory`.
        debug: asyncio's debug mode.
    """
    with asyncio.Runner(debug=debug, loop_factory=loop_factory(use_uvloop)) as runner:
        return runner.run(main)
