"""A task whose mapper fails closes its input at once, whoever still holds the error.

An exception keeps the frames it went through, and a half-read file or cursor with them. The
caller holds the exception as long as it likes (in threads and inline, it is the very one the
task raised), and a worker process that waits for its next task may never collect garbage:
either way a file stayed open, or a range stayed idle in a transaction that blocked DDL.
"""

from __future__ import annotations

import asyncio
import operator
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

import aiomr
from aiomr.executors import ProcessExecutor
from aiomr.sources import files


class Boom(Exception):
    pass


def fail_on_line_500(line: str) -> int:
    if line == "line 500":
        raise Boom(line)
    return 1


def fail_on_a_chunk(lines: list[str]) -> int:
    if "line 500" in lines:
        raise Boom("line 500")
    return len(lines)


def fail_on_a_block(blocks: Iterator[bytes]) -> int:
    for block in blocks:
        if b"line 500\n" in block:
            raise Boom("line 500")
    return 0


def pairs_failing_on_line_500(line: str) -> Iterator[tuple[str, int]]:
    if line == "line 500":
        raise Boom(line)
    yield line, 1


def open_in(pid: int, path: pathlib.Path) -> bool:
    """Whether process ``pid`` has ``path`` open."""
    target = str(path.resolve())
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False


@pytest.fixture
def big_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "lines.txt"
    path.write_text("".join(f"line {i}\n" for i in range(200_000)))  # many 64 KiB blocks
    return path


def job(kind: str, path: pathlib.Path, executor: Any) -> Any:
    source = files(path, encoding=None if kind == "blocks" else "utf-8")
    if kind == "keyed":
        return aiomr.map_reduce_by_key(
            source, pairs_failing_on_line_500, operator.add, executor=executor
        )
    mapper = {"record": fail_on_line_500, "chunk": fail_on_a_chunk, "blocks": fail_on_a_block}
    return aiomr.map_reduce(source, mapper[kind], operator.add, mode=kind, executor=executor)


@pytest.mark.parametrize("kind", ["record", "chunk", "blocks", "keyed"])
async def test_threads_close_the_input_of_a_failed_task(big_file: pathlib.Path, kind: str) -> None:
    with pytest.raises(Boom) as caught:
        await job(kind, big_file, "thread")
    assert caught.value.__traceback__ is not None  # the error, with its frames, is still here
    assert not open_in(os.getpid(), big_file)


@pytest.mark.parametrize("kind", ["record", "chunk", "blocks", "keyed"])
async def test_workers_close_the_input_of_a_failed_task(big_file: pathlib.Path, kind: str) -> None:
    async with ProcessExecutor(1) as executor:
        with pytest.raises(Boom):
            await job(kind, big_file, executor)
        [pid] = executor.worker_pids()
        for _ in range(100):  # the worker may still be writing its reply
            if not open_in(pid, big_file):
                break
            await asyncio.sleep(0.01)
        assert not open_in(pid, big_file)
