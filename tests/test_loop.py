"""Event loops: aiomr.run picks uvloop when installed; jobs run on both loops."""

from __future__ import annotations

import asyncio
import operator

import pytest

import aiomr

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
