"""Event loops: aiomr.run picks uvloop when installed; jobs run on both loops."""

from __future__ import annotations

import asyncio
import operator
import sys

import pytest

import aiomr
from aiomr._loop import SWITCH_INTERVAL

uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed on this platform")


def test_run_uses_uvloop_when_installed() -> None:
    async def loop_type() -> type:
        return type(asyncio.get_running_loop())

    assert aiomr.run(loop_type()) is uvloop.Loop
    assert aiomr.run(loop_type(), use_uvloop=False) is not uvloop.Loop


def test_run_returns_the_job_result_on_uvloop() -> None:
    async def main() -> int:
        return await aiomr.map_reduce(range(1, 11), lambda x: x * x, operator.add, max_workers=2)

    assert aiomr.run(main()) == 385


async def test_jobs_run_on_the_current_loop() -> None:
    # Runs once per loop factory (asyncio and uvloop; see conftest).
    result = await aiomr.map_reduce(range(100), abs, operator.add, executor="thread")
    assert result == 4950


def test_run_shortens_the_gil_switch_interval_while_it_runs() -> None:
    async def interval() -> float:
        return sys.getswitchinterval()

    before = sys.getswitchinterval()
    assert aiomr.run(interval()) == SWITCH_INTERVAL
    assert sys.getswitchinterval() == before
    assert aiomr.run(interval(), switch_interval=0.002) == 0.002
    assert aiomr.run(interval(), switch_interval=None) == before
    assert sys.getswitchinterval() == before


def test_run_puts_the_switch_interval_back_after_an_error() -> None:
    async def fail() -> None:
        raise RuntimeError("boom")

    before = sys.getswitchinterval()
    with pytest.raises(RuntimeError, match="boom"):
        aiomr.run(fail())
    assert sys.getswitchinterval() == before


@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (-1.0, ValueError), (True, TypeError), ("1", TypeError)]
)
def test_run_checks_the_switch_interval(value: object, error: type[Exception]) -> None:
    async def nothing() -> None:
        return None

    coroutine = nothing()
    with pytest.raises(error, match="switch_interval"):
        aiomr.run(coroutine, switch_interval=value)  # type: ignore[arg-type]
    coroutine.close()


class _Watched:
    """A result that counts how often it is formatted."""

    def __init__(self) -> None:
        self.reprs = 0

    def __repr__(self) -> str:
        self.reprs += 1
        return "<watched>"


@pytest.mark.parametrize("use_uvloop", [False, True])
@pytest.mark.parametrize("handle_sigterm", [True, False])
def test_run_never_formats_the_result(use_uvloop: bool, handle_sigterm: bool) -> None:
    # Formatting a large dict sorts all its keys: asyncio.run on Python 3.11 does it twice.
    result = _Watched()

    async def main() -> _Watched:
        return result

    got = aiomr.run(main(), use_uvloop=use_uvloop, handle_sigterm=handle_sigterm)
    assert got is result
    assert result.reprs == 0
