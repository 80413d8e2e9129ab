"""Failures lose nothing: a job that completes counts every record it read as reduced or
skipped, and a job that raises leaves no worker process and no temporary file behind."""

from __future__ import annotations

import glob
import operator
import os
import pathlib
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aiomr
from aiomr.sources import files, lines


class Bad(Exception):
    pass


def fail_on_sevens(x: Any) -> int:
    if str(x).endswith("7"):
        raise Bad(x)
    return 1


def pairs_failing_on_sevens(x: Any) -> Iterator[tuple[int, int]]:
    yield fail_on_sevens(x), 1


class SevensJob(aiomr.Job):
    def mapper(self, _: None, x: Any) -> Iterator[tuple[int, int]]:
        yield fail_on_sevens(x), 1

    def reducer(self, key: int, ones: Iterator[int]) -> Iterator[tuple[int, int]]:
        yield key, sum(ones)


def numbers_file(tmp_path: pathlib.Path, n: int) -> pathlib.Path:
    path = tmp_path / "numbers.txt"
    path.write_text("".join(f"{i}\n" for i in range(n)))
    return path


def assert_accounted(stats: aiomr.JobStats, read: int) -> None:
    skipped = sum(1 for i in range(read) if str(i).endswith("7"))
    assert stats.records == read
    assert stats.records_skipped == skipped
    assert stats.records == stats.records_reduced + stats.records_skipped


SOURCES = ["list", "lines", "files"]


def source_of(kind: str, tmp_path: pathlib.Path, n: int) -> Any:
    if kind == "list":
        return list(range(n))
    path = numbers_file(tmp_path, n)
    return lines(path) if kind == "lines" else files(path, split_size=1000)


@pytest.mark.parametrize("kind", SOURCES)
@pytest.mark.parametrize("job", ["map_reduce", "by_key", "Job"])
async def test_every_record_is_reduced_or_skipped(
    engine: aiomr.Engine, tmp_path: pathlib.Path, kind: str, job: str
) -> None:
    stats = aiomr.JobStats()
    source = source_of(kind, tmp_path, 1000)
    if job == "map_reduce":
        total = await engine.map_reduce(
            source, fail_on_sevens, operator.add, chunk_size=64, on_error="skip", stats=stats
        )
        assert total == 900
    elif job == "by_key":
        counts = await engine.run_by_key(
            source,
            aiomr.ReduceByKey(pairs_failing_on_sevens, operator.add),
            chunk_size=64,
            on_error="collect",
            stats=stats,
        )
        assert counts == {1: 900}
        assert len(stats.bad_records) == 100
    else:
        pairs = await SevensJob().run(
            source, engine=engine, chunk_size=64, on_error="skip", stats=stats
        )
        assert pairs == [(1, 900)]
    assert_accounted(stats, 1000)


@pytest.mark.parametrize("keyed", [False, True])
async def test_undecodable_lines_are_counted_as_skipped(
    engine: aiomr.Engine, tmp_path: pathlib.Path, keyed: bool
) -> None:
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"".join(b"\xff\xfe\n" if i % 10 == 3 else b"%d\n" % i for i in range(200)))
    stats = aiomr.JobStats()
    if keyed:
        await engine.run_by_key(
            files(path, split_size=300),
            aiomr.ReduceByKey(lambda line: [(0, 1)], operator.add),
            on_error="skip",
            stats=stats,
        )
    else:
        await engine.map_reduce(
            files(path, split_size=300), len, operator.add, on_error="skip", stats=stats
        )
    assert (stats.records, stats.records_skipped) == (200, 20)
    assert stats.records == stats.records_reduced + stats.records_skipped


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 300), chunk_size=st.integers(1, 50))
def test_records_add_up_whatever_the_chunks(n: int, chunk_size: int) -> None:
    import asyncio

    stats = aiomr.JobStats()

    async def run() -> int:
        result: int = await aiomr.map_reduce(
            range(n),
            fail_on_sevens,
            operator.add,
            initial=0,
            chunk_size=chunk_size,
            on_error="skip",
            executor="inline",
            stats=stats,
        )
        return result

    total = asyncio.run(run())
    assert_accounted(stats, n)
    assert total == stats.records_reduced


def code_directories() -> list[str]:
    """The shipped-code directories of this process's process pools."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    return sorted(glob.glob(os.path.join(base, f"aiomr-code-{os.getpid()}-*")))


async def async_mapper(x: int) -> int:
    return x


FAILURES: list[tuple[str, type[BaseException], Callable[[pathlib.Path], Awaitable[Any]]]] = [
    (
        "mapper",
        Bad,
        lambda t: aiomr.map_reduce(range(1000), fail_on_sevens, operator.add, max_workers=2),
    ),
    (
        "key-value mapper",
        Bad,
        lambda t: aiomr.map_reduce_by_key(
            range(1000), pairs_failing_on_sevens, operator.add, max_workers=2, temp_dir=str(t)
        ),
    ),
    (
        "mapper output",
        aiomr.MapperOutputError,
        lambda t: aiomr.map_reduce_by_key(
            range(1000), lambda x: [x], operator.add, max_workers=2, temp_dir=str(t)
        ),
    ),
    (
        "malformed line",
        aiomr.RecordError,
        lambda t: aiomr.map_reduce(
            lines(numbers_file(t.parent, 100), format="tsv", fields=2),
            len,
            operator.add,
            max_workers=2,
        ),
    ),
    (
        "split",
        Bad,
        lambda t: aiomr.map_reduce_by_key(
            files(numbers_file(t.parent, 1000), split_size=500),
            pairs_failing_on_sevens,
            operator.add,
            max_workers=2,
            temp_dir=str(t),
        ),
    ),
    (
        "second step",
        Bad,
        lambda t: SevensInSecondStep().run(range(100), max_workers=2, temp_dir=str(t)),
    ),
    (
        "async mapper",
        TypeError,
        lambda t: aiomr.map_reduce_by_key(
            range(10), async_mapper, operator.add, max_workers=2, temp_dir=str(t)
        ),
    ),
]


class SevensInSecondStep(aiomr.Job):
    def steps(self) -> list[aiomr.Step]:
        return [aiomr.Step(mapper=self.keep), aiomr.Step(mapper=self.fail)]

    def keep(self, _: None, x: int) -> Iterator[tuple[int, int]]:
        yield x, x

    def fail(self, key: int, value: int) -> Iterator[tuple[int, int]]:
        yield fail_on_sevens(key), value


@pytest.mark.parametrize(("what", "error", "job"), FAILURES, ids=[f[0] for f in FAILURES])
async def test_a_failed_job_leaves_nothing_behind(
    nothing_left_running: None,
    tmp_path: pathlib.Path,
    what: str,
    error: type[BaseException],
    job: Callable[[pathlib.Path], Awaitable[Any]],
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    before = code_directories()
    with pytest.raises(error):
        await job(scratch)
    assert list(scratch.iterdir()) == []
    assert code_directories() == before
