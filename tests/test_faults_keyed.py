"""Real faults in key-based jobs: lost workers in both phases, bad records, temporary files."""

from __future__ import annotations

import functools
import json
import operator
import os
import pathlib
import signal
import time
from collections.abc import Iterable, Iterator

import pytest

import aiomr
from tests.test_faults import accounted, write_tsv_with_bad_rows

pytestmark = pytest.mark.usefixtures("nothing_left_running")

WORDS = [f"w{n % 37}" for n in range(2000)]
COUNTS = {word: WORDS.count(word) for word in set(WORDS)}


def one_word(word: str) -> Iterator[tuple[str, int]]:
    yield word, 1


def die_once_mapping(marker: str, word: str) -> Iterator[tuple[str, int]]:
    if word == "w5" and not os.path.exists(marker):
        pathlib.Path(marker).touch()
        os._exit(9)
    yield word, 1


def die_once_reducing(marker: str, word: str, ones: Iterable[int]) -> int:
    if word == "w7" and not os.path.exists(marker):
        pathlib.Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return sum(ones)


def always_die_reducing(word: str, ones: Iterable[int]) -> int:
    if word == "w7":
        os.abort()
    return sum(ones)


def job_files(directory: pathlib.Path) -> list[pathlib.Path]:
    return list(directory.iterdir())


async def test_a_worker_lost_while_mapping_is_replaced(tmp_path: pathlib.Path) -> None:
    stats = aiomr.JobStats()
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    counts = await aiomr.map_reduce_by_key(
        WORDS,
        functools.partial(die_once_mapping, str(tmp_path / "died")),
        operator.add,
        chunk_size=100,
        temp_dir=str(jobs),
        max_workers=2,
        stats=stats,
    )
    assert counts == COUNTS
    assert stats.chunks_retried >= 1
    assert stats.workers_replaced >= 1
    accounted(stats, len(WORDS))
    assert job_files(jobs) == []


async def test_a_worker_lost_while_reducing_is_replaced(tmp_path: pathlib.Path) -> None:
    stats = aiomr.JobStats()
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    async with aiomr.Engine(max_workers=2) as engine:
        spec = aiomr.GroupByKey(
            one_word, functools.partial(die_once_reducing, str(tmp_path / "died"))
        )
        counts = await engine.run_by_key(
            WORDS, spec, chunk_size=100, partitions=4, temp_dir=str(jobs), stats=stats
        )
        assert counts == COUNTS
        assert stats.partitions_retried >= 1
        assert stats.workers_replaced >= 1
        assert stats.partitions_done == 4
        accounted(stats, len(WORDS))
        assert job_files(jobs) == []
        # The engine keeps serving.
        assert await engine.run_by_key(["a", "a"], aiomr.ReduceByKey(one_word, operator.add)) == {
            "a": 2
        }


async def test_a_partition_that_kills_its_worker_every_time_is_reported(
    tmp_path: pathlib.Path,
) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    with pytest.raises(aiomr.BrokenWorkerError) as info:
        await aiomr.group_by_key(
            WORDS,
            one_word,
            always_die_reducing,
            partitions=3,
            retry=aiomr.RetryPolicy(max_attempts=2, backoff=0),
            temp_dir=str(jobs),
            max_workers=2,
        )
    assert "a worker process died while reducing partition" in str(info.value)
    # How the worker ended is named too ("killed by SIGABRT" as a rule; multiprocessing
    # reports status 255 when its forkserver could not tell in time), not checked here.
    assert any("failed 2 times (max_attempts=2)" in n for n in info.value.__notes__)
    assert job_files(jobs) == []


def hang_once_reducing(marker: str, word: str, ones: Iterable[int]) -> int:
    """Hang reducing key ``w7`` the first time, for longer than any test runs."""
    if word == "w7" and not os.path.exists(marker):
        pathlib.Path(marker).touch()
        time.sleep(300)
    return sum(ones)


def always_hang_reducing(word: str, ones: Iterable[int]) -> int:
    if word == "w7":
        time.sleep(300)
    return sum(ones)


async def test_a_hung_reducer_is_killed_after_task_timeout_and_rerun(
    tmp_path: pathlib.Path,
) -> None:
    # Generous limits: a loaded machine must never take a healthy reduce task for a hung one.
    stats = aiomr.JobStats()
    counts = await aiomr.group_by_key(
        WORDS,
        one_word,
        functools.partial(hang_once_reducing, str(tmp_path / "hung")),
        chunk_size=500,
        partitions=4,
        retry=aiomr.RetryPolicy(task_timeout=5.0, backoff=0),
        max_workers=2,
        stats=stats,
    )
    assert counts == COUNTS
    assert stats.partitions_retried >= 1
    assert stats.workers_replaced >= 1
    assert stats.partitions_done == 4
    accounted(stats, len(WORDS))


async def test_a_reducer_that_always_hangs_fails_the_job_after_its_attempts(
    tmp_path: pathlib.Path,
) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    with pytest.raises(aiomr.BrokenWorkerError) as info:
        await aiomr.group_by_key(
            WORDS,
            one_word,
            always_hang_reducing,
            partitions=3,
            retry=aiomr.RetryPolicy(max_attempts=2, task_timeout=3.0, backoff=0),
            temp_dir=str(jobs),
            max_workers=2,
        )
    assert "a worker process died while reducing partition" in str(info.value)
    assert "it ran longer than task_timeout=3.0s" in str(info.value)
    assert any("failed 2 times (max_attempts=2)" in n for n in info.value.__notes__)
    assert job_files(jobs) == []


def word_and_value(row: list[str]) -> Iterator[tuple[str, int]]:
    key, value = row
    yield key[:4], int(value)


@pytest.mark.parametrize("source_kind", ["files", "lines", "iterable"])
async def test_malformed_records_are_skipped_and_accounted(
    engine: aiomr.Engine, tmp_path: pathlib.Path, source_kind: str
) -> None:
    path = tmp_path / "rows.tsv"
    write_tsv_with_bad_rows(path, 5000)
    good: dict[str, int] = {}
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[1].isdigit():
            good[parts[0][:4]] = good.get(parts[0][:4], 0) + int(parts[1])
    if source_kind == "files":
        source: object = aiomr.sources.files(path, split_size=20_000, format="tsv", fields=2)
        mapper = word_and_value
    elif source_kind == "lines":
        source = aiomr.sources.lines(path, format="tsv", fields=2)
        mapper = word_and_value
    else:
        source = [line.split("\t") for line in path.read_text().splitlines()]
        mapper = word_and_value
    stats = aiomr.JobStats()
    dead = tmp_path / "dead.jsonl"
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    counts = await engine.run_by_key(
        source,  # type: ignore[arg-type]
        aiomr.ReduceByKey(mapper, operator.add),
        on_error="collect",
        dead_letter=dead,
        temp_dir=str(jobs),
        stats=stats,
    )
    assert counts == good
    assert stats.records_skipped == 50
    accounted(stats, 5000)
    assert len(stats.bad_records) == 50
    assert len(stats.bad_sample) == 20
    written = [json.loads(line) for line in dead.read_text().splitlines()]
    assert len(written) == 50
    locations = [w["location"] for w in written]
    if source_kind == "files":
        content = path.read_bytes()
        starts = [0, *(i + 1 for i, b in enumerate(content) if b == 10)]
        assert sorted(locations) == sorted(
            f"{path}:{n} (byte {starts[n - 1]})" for n in range(100, 5001, 100)
        )
    elif source_kind == "lines":
        assert sorted(int(where.rsplit(":", 1)[1]) for where in locations) == list(
            range(100, 5001, 100)
        )
    else:
        assert sorted(int(where.split()[1]) for where in locations) == list(range(99, 5000, 100))
    assert job_files(jobs) == []
    # "raise" stays the default and names the record.
    if source_kind == "lines":
        source = aiomr.sources.lines(path, format="tsv", fields=2)
    with pytest.raises((ValueError, aiomr.RecordError), match=r"expected 2|int\(\)"):
        await engine.run_by_key(source, aiomr.ReduceByKey(mapper, operator.add))  # type: ignore[arg-type]


def half_then_fail(record: int) -> Iterator[tuple[str, int]]:
    yield "seen", 1
    if record % 10 == 0:
        raise LookupError(f"record {record} is bad")
    yield "good", 1


async def test_a_record_contributes_all_its_pairs_or_none(engine: aiomr.Engine) -> None:
    stats = aiomr.JobStats()
    counts = await engine.run_by_key(
        range(100), aiomr.ReduceByKey(half_then_fail, operator.add), on_error="skip", stats=stats
    )
    assert counts == {"seen": 90, "good": 90}
    assert stats.records_skipped == 10
    accounted(stats, 100)
    assert {bad.error for bad in stats.bad_sample} == {
        f"LookupError: record {n} is bad" for n in range(0, 100, 10)
    }


async def test_keyed_error_arguments() -> None:
    with pytest.raises(ValueError, match="on_error must be 'raise', 'skip' or 'collect'"):
        await aiomr.map_reduce_by_key([1], one_word, operator.add, on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dead_letter= needs on_error"):
        await aiomr.map_reduce_by_key([1], one_word, operator.add, dead_letter="x.jsonl")
    with pytest.raises(TypeError, match=r"retry must be an aiomr\.RetryPolicy"):
        await aiomr.map_reduce_by_key([1], one_word, operator.add, retry=3)  # type: ignore[arg-type]
