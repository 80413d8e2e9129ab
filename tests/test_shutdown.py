"""A program using aiomr is stopped from outside: nothing may be left running or on disk."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any

import psutil
import pytest

from tests.conftest import alive

PROGRAM = """
import asyncio, json, operator, sys, time

import aiomr


def slow(x):
    time.sleep(0.01)
    return [(x % 5, 1)]


async def main():
    async with aiomr.Engine(max_workers=2) as engine:
        await engine.start()
        executor = engine.executor
        stats = aiomr.JobStats()
        spec = aiomr.ReduceByKey(slow, operator.add)
        job = asyncio.create_task(
            engine.run_by_key(range(10**6), spec, temp_dir=sys.argv[2], stats=stats)
        )
        while stats.chunks_done < 2:
            await asyncio.sleep(0.01)
        print(json.dumps({"code": executor._directory}), flush=True)
        await job


if __name__ == "__main__":
    if sys.argv[1] == "aiomr.run":
        aiomr.run(main())
    else:
        try:
            asyncio.run(main())
        except KeyboardInterrupt:
            sys.exit(130)
"""


def start(tmp_path: pathlib.Path, runner: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start the program; return it and what it printed once its job was under way."""
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    program = subprocess.Popen(
        [sys.executable, str(script), runner, str(jobs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=pathlib.Path(__file__).parent.parent,
    )
    try:
        assert program.stdout is not None
        line = program.stdout.readline()
        assert line, program.communicate()[1]
        info: dict[str, Any] = json.loads(line)
        info["descendants"] = [p.pid for p in psutil.Process(program.pid).children(recursive=True)]
        assert len(info["descendants"]) >= 3  # the forkserver and two workers
    except BaseException:
        program.kill()  # a program that never got going must not outlive the test
        program.communicate()
        raise
    return program, info


def wait_until_gone(pids: list[int], seconds: float = 15.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive(pids)


@pytest.mark.parametrize(
    ("runner", "signum", "status"),
    [
        ("aiomr.run", signal.SIGTERM, 143),
        ("aiomr.run", signal.SIGINT, -signal.SIGINT),  # uncaught KeyboardInterrupt
        ("asyncio.run", signal.SIGINT, 130),  # KeyboardInterrupt, caught by the program
    ],
)
def test_a_signalled_program_stops_its_workers_and_removes_its_files(
    tmp_path: pathlib.Path, runner: str, signum: int, status: int
) -> None:
    program, info = start(tmp_path, runner)
    with program:
        program.send_signal(signum)
        _, stderr = program.communicate(timeout=60)
    assert program.returncode == status, stderr
    if signum == signal.SIGINT and runner == "aiomr.run":
        assert "KeyboardInterrupt" in stderr
    assert wait_until_gone(info["descendants"]) == []
    assert list((tmp_path / "jobs").iterdir()) == []
    assert not os.path.exists(info["code"])


def test_workers_of_a_program_killed_outright_exit_too(tmp_path: pathlib.Path) -> None:
    program, info = start(tmp_path, "asyncio.run")
    with program:
        program.kill()  # no chance to clean up
        program.communicate(timeout=60)
    assert wait_until_gone(info["descendants"]) == []
    # Its code directory outlives it, until the next pool is started.
    assert os.path.exists(info["code"])
    from aiomr.executors._shipping import private_directory

    fresh = private_directory()
    try:
        assert not os.path.exists(info["code"])
    finally:
        os.rmdir(fresh)
