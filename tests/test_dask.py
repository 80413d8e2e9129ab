"""The Dask executor on a real two-worker LocalCluster started for this module."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import operator
import os
import pathlib
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import distributed
import psutil
import pytest
import pytest_asyncio

import aiomr
from aiomr.executors import DaskExecutor, resolve_executor
from tests import ast_guard
from tests.conftest import alive

pytestmark = pytest.mark.asyncio(loop_scope="module")

WORKERS = 2
POLL = 0.01
"""Seconds between looks at something a worker does (a file appearing)."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster() -> AsyncIterator[Any]:
    async with distributed.LocalCluster(
        n_workers=WORKERS,
        processes=True,
        threads_per_worker=1,
        asynchronous=True,
        dashboard_address=":0",
        preload=[ast_guard.__name__],  # see tests.ast_guard
    ) as started:
        yield started


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(cluster: Any) -> AsyncIterator[Any]:
    async with distributed.Client(cluster, asynchronous=True) as connected:
        yield connected


@pytest_asyncio.fixture(loop_scope="module")
async def executor(client: Any) -> AsyncIterator[DaskExecutor]:
    """An executor on the module's client; every test leaves both workers running."""
    async with DaskExecutor(client=client) as made:
        yield made
    await client.wait_for_workers(WORKERS)


async def wait_for(predicate: Any, what: str, *, limit: float = 60.0) -> None:
    """Poll ``predicate`` (an async function) until it holds; fail after ``limit`` seconds.

    The limit only turns a hang into a failure; nothing is asserted about time.
    """
    deadline = time.monotonic() + limit
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(POLL)


def square(x: int) -> int:
    return x * x


def words(line: str) -> Iterator[tuple[str, int]]:
    for word in line.split():
        yield word.lower(), 1


class CustomError(Exception):
    pass


def fail_at(fatal: int, x: int) -> int:
    if x == fatal:
        raise CustomError(f"record {x} is bad")
    return x


def wait_at_gate(directory: str, x: int) -> int:
    """Say which worker process started record ``x``, then wait for the gate to open."""
    folder = pathlib.Path(directory)
    (folder / f"started-{x}-{os.getpid()}").touch()
    while not (folder / "gate").exists():
        time.sleep(POLL)
    return x


def started(directory: pathlib.Path) -> list[tuple[int, int]]:
    """The ``(record, worker pid)`` of every task that started."""
    found = []
    for path in directory.glob("started-*"):
        _, record, pid = path.name.split("-")
        found.append((int(record), int(pid)))
    return found


def both_started(directory: pathlib.Path) -> Any:
    async def check() -> bool:
        return len(started(directory)) == WORKERS

    return check


def kill_own_worker_at(fatal: int, x: int) -> int:
    if x == fatal:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


async def worker_pids(client: Any) -> set[int]:
    pids: dict[str, int] = await client.run(os.getpid)
    return set(pids.values())


async def aiomr_tasks_on_scheduler(client: Any) -> list[str]:
    def keys(dask_scheduler: Any) -> list[str]:
        return [str(key) for key in dask_scheduler.tasks if str(key).startswith("aiomr-")]

    found: list[str] = await client.run_on_scheduler(keys)
    return found


# The seed jobs ---------------------------------------------------------------------------------


async def test_sum_of_squares_is_385(executor: DaskExecutor) -> None:
    assert await aiomr.map_reduce(range(1, 11), square, operator.add, executor=executor) == 385


async def test_lambdas_and_closures_travel(executor: DaskExecutor) -> None:
    offset = 3
    total = await aiomr.map_reduce(
        range(100), lambda x: x + offset, operator.add, executor=executor, chunk_size=7
    )
    assert total == sum(range(100)) + 300


async def squared_later(x: int) -> int:
    await asyncio.sleep(0.001)
    return x * x


async def test_coroutine_mappers_run_on_the_workers_loops(executor: DaskExecutor) -> None:
    total = await aiomr.map_reduce(
        range(1, 501), squared_later, operator.add, executor=executor, concurrency=8
    )
    assert total == sum(x * x for x in range(1, 501))
    with pytest.raises(ValueError, match=r"resources= needs workers on the caller's machine"):
        await aiomr.map_reduce(
            range(3),
            squared_later,
            operator.add,
            executor=executor,
            resources=contextlib.nullcontext,
        )


async def test_word_count_by_key(executor: DaskExecutor) -> None:
    lines = ["The cat sat", "the hat", "a cat and the hat"] * 50
    stats = aiomr.JobStats()
    counts = await aiomr.map_reduce_by_key(
        lines, words, operator.add, executor=executor, chunk_size=20, stats=stats
    )
    expected = collections.Counter(w for line in lines for w, _ in words(line))
    assert counts == dict(expected)
    assert stats.partitions_done == 2 * executor.max_workers
    assert stats.worker_pids <= await worker_pids(executor.client)


async def test_files_are_read_by_the_workers_and_shuffled_through_the_job_directory(
    executor: DaskExecutor, tmp_path: pathlib.Path
) -> None:
    inputs, jobs = tmp_path / "in", tmp_path / "jobs"
    inputs.mkdir()
    jobs.mkdir()
    text = "".join(f"word{n % 13} Other{n % 5}\n" for n in range(3000))
    (inputs / "a.txt").write_text(text)
    (inputs / "b.txt").write_text(text)
    counts = await aiomr.map_reduce_by_key(
        aiomr.sources.files(inputs, split_size=4096),
        words,
        operator.add,
        executor=executor,
        temp_dir=str(jobs),
    )
    expected = collections.Counter(w.lower() for line in text.split("\n") for w in line.split())
    assert counts == {word: 2 * count for word, count in expected.items()}
    assert list(jobs.iterdir()) == []  # the job directory is gone

    lines = await aiomr.map_reduce(
        aiomr.sources.files(inputs, split_size=4096), len, operator.add, executor=executor
    )
    assert lines == len(text) * 2 - 6000  # every character but the newlines


async def test_columnar_batches_run_on_the_cluster(
    executor: DaskExecutor, tmp_path: pathlib.Path
) -> None:
    pa = pytest.importorskip("pyarrow", reason="the arrow extra is not installed")
    pq = pytest.importorskip("pyarrow.parquet")
    words = [f"w{i % 41}" for i in range(20_000)]
    counts = [i % 7 for i in range(20_000)]
    want: collections.Counter[str] = collections.Counter()
    for word, count in zip(words, counts, strict=True):
        want[word] += count
    pq.write_table(
        pa.table({"word": words, "n": counts}), tmp_path / "rows.parquet", row_group_size=3_000
    )
    (tmp_path / "rows.tsv").write_text(
        "".join(f"{w}\t{n}\n" for w, n in zip(words, counts, strict=True))
    )
    per_word = aiomr.Aggregate(by="word", total=("n", "sum"))
    sources = [
        aiomr.sources.parquet(tmp_path / "rows.parquet", split_size=1),
        aiomr.sources.files(
            tmp_path / "rows.tsv", format="tsv", names=["word", "n"], split_size=20_000
        ),
    ]
    for source in sources:
        states = await aiomr.map_reduce(
            source, per_word.map, per_word.merge, mode="batches", executor=executor
        )
        table = per_word.finish(states)
        got = dict(zip(table["word"].to_pylist(), table["total"].to_pylist(), strict=True))
        assert got == want
    # Beyond memory: runs written by the cluster's workers, partitions reduced there.
    stats = aiomr.JobStats()
    ordered = aiomr.Aggregate(by="word", total=("n", "sum"), first=("n", "first"))
    table = await aiomr.aggregate(
        sources[0],
        ordered,
        memory_budget=1_000,
        temp_dir=str(tmp_path),
        executor=executor,
        stats=stats,
    )
    got = dict(zip(table["word"].to_pylist(), table["total"].to_pylist(), strict=True))
    assert got == want
    assert stats.spills > 0
    firsts = dict(zip(table["word"].to_pylist(), table["first"].to_pylist(), strict=True))
    assert firsts == {w: counts[words.index(w)] for w in want}


async def test_ordered_folds_in_input_order(executor: DaskExecutor) -> None:
    text = await aiomr.map_reduce(
        [str(n) for n in range(200)],
        str.upper,
        operator.add,
        initial="<",
        ordered=True,
        chunk_size=9,
        executor=executor,
    )
    assert text == "<" + "".join(str(n) for n in range(200))


async def test_the_name_dask_starts_a_local_cluster_that_closes_with_the_job(
    tmp_path: pathlib.Path,
) -> None:
    executor, owned = resolve_executor("dask", max_workers=1)
    assert isinstance(executor, DaskExecutor)
    assert owned
    assert executor.max_workers == 1
    await executor.aclose()

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    total = await aiomr.map_reduce(
        range(1, 11), square, operator.add, executor="dask", max_workers=1
    )
    assert total == 385
    await wait_for(no_new_processes(before), "the job's cluster to stop")

    # Cancelled while its only worker is busy: the cluster stops all the same.
    job = asyncio.ensure_future(
        aiomr.map_reduce(
            range(4),
            functools.partial(wait_at_gate, str(tmp_path)),
            operator.add,
            executor="dask",
            max_workers=1,
            chunk_size=1,
        )
    )

    async def one_started() -> bool:
        return len(started(tmp_path)) == 1

    await wait_for(one_started, "the worker to start a task")
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    await wait_for(no_new_processes(before), "the cancelled job's cluster to stop")


def no_new_processes(before: set[int]) -> Any:
    async def check() -> bool:
        return not alive({p.pid for p in psutil.Process().children(recursive=True)} - before)

    return check


# Errors ----------------------------------------------------------------------------------------


async def test_a_mapper_error_keeps_its_type_with_the_worker_traceback_as_cause(
    executor: DaskExecutor,
) -> None:
    with pytest.raises(CustomError, match="record 42 is bad") as info:
        await aiomr.map_reduce(
            range(100),
            functools.partial(fail_at, 42),
            operator.add,
            executor=executor,
            chunk_size=10,
        )
    cause = info.value.__cause__
    assert isinstance(cause, aiomr.WorkerTraceback)
    assert "fail_at" in cause.formatted
    assert any("chunk 4 (records [40, 50)" in note for note in info.value.__notes__)
    # The executor keeps serving.
    assert await aiomr.map_reduce(range(1, 11), square, operator.add, executor=executor) == 385


async def test_a_partial_that_cannot_travel_back_is_named(executor: DaskExecutor) -> None:
    with pytest.raises(aiomr.UnpicklableError, match="its partial result cannot be pickled"):
        await aiomr.map_reduce(
            range(4), lambda x: threading.Lock(), lambda a, b: a, executor=executor
        )


async def test_code_that_cannot_be_pickled_fails_before_any_record_is_read(
    executor: DaskExecutor,
) -> None:
    lock = threading.Lock()
    with pytest.raises(TypeError, match=r"mapper .* cannot be pickled"):
        await aiomr.map_reduce(range(4), lambda x: (lock, x)[1], operator.add, executor=executor)


async def test_task_timeout_is_refused(executor: DaskExecutor) -> None:
    with pytest.raises(ValueError, match="task_timeout needs an executor"):
        await aiomr.map_reduce(
            range(4),
            square,
            operator.add,
            executor=executor,
            retry=aiomr.RetryPolicy(task_timeout=5),
        )


async def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="not both"):
        DaskExecutor("tcp://127.0.0.1:8786", client=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_workers must be >= 1"):
        DaskExecutor(max_workers=0)


async def test_a_closed_executor_refuses_work(client: Any) -> None:
    executor = DaskExecutor(client=client)
    await executor.aclose()
    await executor.aclose()  # idempotent
    with pytest.raises(aiomr.ClosedResourceError):
        executor.submit(square, 3)
    assert client.status != "closed"  # a client passed in stays open


# Cancellation ----------------------------------------------------------------------------------


async def test_cancelling_a_job_cancels_its_dask_futures(
    executor: DaskExecutor, tmp_path: pathlib.Path
) -> None:
    client = executor.client
    job = asyncio.ensure_future(
        aiomr.map_reduce(
            range(20),
            functools.partial(wait_at_gate, str(tmp_path)),
            operator.add,
            executor=executor,
            chunk_size=1,
            max_in_flight=20,
        )
    )
    try:
        await wait_for(both_started(tmp_path), "both workers to start a task")

        async def running_there() -> bool:
            # The engine hands the cluster one task per worker; the other 18 wait in the
            # job's own queue (aiomr._scheduler).
            return len(await aiomr_tasks_on_scheduler(client)) >= 2

        await wait_for(running_there, "the scheduler to hold the running tasks")
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job

        async def all_forgotten() -> bool:
            return not await aiomr_tasks_on_scheduler(client)

        # The scheduler forgets every task, and those still queued never run.
        await wait_for(all_forgotten, "the scheduler to forget the cancelled tasks")
    finally:
        # Whatever happened, free the workers: tasks held at the gate would starve the
        # tests that follow on the same cluster.
        job.cancel()
        (tmp_path / "gate").touch()
    assert await aiomr.map_reduce(range(1, 11), square, operator.add, executor=executor) == 385
    assert len(started(tmp_path)) < 20


# Lost workers ----------------------------------------------------------------------------------


async def test_a_worker_killed_mid_job_is_survived(
    executor: DaskExecutor, tmp_path: pathlib.Path
) -> None:
    client = executor.client
    pids = await worker_pids(client)
    stats = aiomr.JobStats()
    job = asyncio.ensure_future(
        aiomr.map_reduce(
            range(12),
            functools.partial(wait_at_gate, str(tmp_path)),
            operator.add,
            executor=executor,
            chunk_size=1,
            stats=stats,
        )
    )
    await wait_for(both_started(tmp_path), "both workers to start a task")
    victim = started(tmp_path)[0][1]
    assert victim in pids
    os.kill(victim, signal.SIGKILL)
    (tmp_path / "gate").touch()
    assert await job == sum(range(12))
    assert stats.records == stats.records_reduced == 12
    assert stats.chunks_done == 12
    assert victim not in await worker_pids(client)


async def test_a_chunk_that_keeps_killing_workers_is_a_broken_worker_error(
    executor: DaskExecutor,
) -> None:
    client = executor.client

    def allow_failures(count: int, dask_scheduler: Any) -> int:
        before: int = dask_scheduler.allowed_failures
        dask_scheduler.allowed_failures = count
        return before

    # Dask gives up on a task after the first worker death, and aiomr's policy takes over.
    before = await client.run_on_scheduler(functools.partial(allow_failures, 0))
    try:
        with pytest.raises(aiomr.BrokenWorkerError) as info:
            await aiomr.map_reduce(
                range(6),
                functools.partial(kill_own_worker_at, 3),
                operator.add,
                executor=executor,
                chunk_size=1,
                retry=aiomr.RetryPolicy(max_attempts=2, backoff=0),
            )
    finally:
        await client.run_on_scheduler(functools.partial(allow_failures, before))
    assert isinstance(info.value.__cause__, distributed.KilledWorker)
    assert any("failed 2 times" in note for note in info.value.__notes__)


# Fetching results --------------------------------------------------------------------------------


async def test_cancelling_one_task_leaves_the_tasks_fetched_with_it_alone(
    executor: DaskExecutor, tmp_path: pathlib.Path
) -> None:
    # The client fetches results that finish together in one request; the task that would
    # have owned it is cancelled here, and the others still get their results.
    for round_ in range(3):
        folder = tmp_path / str(round_)
        folder.mkdir()
        futures = [executor.submit(wait_at_gate, str(folder), x) for x in range(WORKERS)]
        await wait_for(both_started(folder), "both workers to start a task")
        (folder / "gate").touch()
        futures[0].cancel()
        assert await asyncio.gather(*futures[1:]) == list(range(1, WORKERS))


# Engine ----------------------------------------------------------------------------------------


async def test_engine_start_connects_the_executor(cluster: Any) -> None:
    async with DaskExecutor(cluster.scheduler_address) as executor:
        engine = aiomr.Engine(executor)
        assert executor.client is None
        await engine.start()  # what `async with engine` does first
        assert executor.client is not None
        assert executor.max_workers == WORKERS  # the cluster's threads
        assert await engine.map_reduce(range(1, 11), square, operator.add) == 385
        await engine.aclose()


# Combining partials on the workers ----------------------------------------------------------------


def tagged(x: int) -> tuple[int, frozenset[int]]:
    return x, frozenset()


def add_where(a: tuple[int, frozenset[int]], b: tuple[int, frozenset[int]]) -> Any:
    """Add, and remember which processes did."""
    return a[0] + b[0], a[1] | b[1] | {os.getpid()}


def merge_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    merged = dict(a)
    for key, count in b.items():
        merged[key] = merged.get(key, 0) + count
    return merged


def fail_on_combine(a: int, b: int) -> int:
    raise CustomError("cannot combine here")


def gated_from(first_gated: int, directory: str, x: int) -> int:
    return x if x < first_gated else wait_at_gate(directory, x)


@pytest_asyncio.fixture(loop_scope="module")
async def holding(client: Any) -> AsyncIterator[DaskExecutor]:
    """An executor that keeps every partial on the workers (``combine_above=0``)."""
    async with DaskExecutor(client=client, combine_above=0) as made:
        yield made
    await client.wait_for_workers(WORKERS)


async def test_partials_are_combined_on_the_workers(holding: DaskExecutor) -> None:
    stats = aiomr.JobStats()
    total, where = await aiomr.map_reduce(
        range(40), tagged, add_where, executor=holding, chunk_size=1, stats=stats
    )
    assert total == sum(range(40))
    # With one record per chunk, the reducer ran only to combine partials: on the workers.
    assert where
    assert where <= await worker_pids(holding.client)
    assert stats.partials_folded == stats.chunks_done == 40


async def test_partials_are_folded_in_the_caller_when_combining_is_off(client: Any) -> None:
    async with DaskExecutor(client=client, combine_above=None) as executor:
        _, where = await aiomr.map_reduce(
            range(40), tagged, add_where, executor=executor, chunk_size=1
        )
    assert where == {os.getpid()}


async def test_a_job_holds_its_partials_once_one_is_large(client: Any) -> None:
    lines = [" ".join(f"w{n}-{i}" for i in range(60)) for n in range(30)]
    expected = collections.Counter(w for line in lines for w in line.split())

    def counts(line: str) -> dict[str, int]:
        return dict(collections.Counter(line.split()))

    async with DaskExecutor(client=client, combine_above=1024) as executor:
        stats = aiomr.JobStats()
        result = await aiomr.map_reduce(
            lines * 2, counts, merge_counts, executor=executor, chunk_size=3, stats=stats
        )
    assert result == {word: 2 * count for word, count in expected.items()}
    assert stats.partials_folded == stats.chunks_done == 20


async def test_initial_and_ordered_jobs_keep_their_answers(holding: DaskExecutor) -> None:
    total = await aiomr.map_reduce(
        range(30), square, operator.add, initial=1000, executor=holding, chunk_size=4
    )
    assert total == 1000 + sum(x * x for x in range(30))
    text = await aiomr.map_reduce(
        [str(n) for n in range(60)],
        str.upper,
        operator.add,
        ordered=True,
        chunk_size=7,
        executor=holding,
    )
    assert text == "".join(str(n) for n in range(60))


async def test_a_reducer_error_on_a_worker_keeps_its_type(holding: DaskExecutor) -> None:
    with pytest.raises(CustomError, match="cannot combine here") as info:
        await aiomr.map_reduce(range(8), square, fail_on_combine, executor=holding, chunk_size=1)
    assert isinstance(info.value.__cause__, aiomr.WorkerTraceback)
    assert "fail_on_combine" in info.value.__cause__.formatted
    assert any("combining partials on a Dask worker" in note for note in info.value.__notes__)
    assert await aiomr.map_reduce(range(1, 11), square, operator.add, executor=holding) == 385


async def test_a_worker_killed_while_holding_partials_is_survived(
    holding: DaskExecutor, tmp_path: pathlib.Path
) -> None:
    client = holding.client
    stats = aiomr.JobStats()
    # A window of 6 sends chunks 0..5 (ungated) before any gated one: when both workers
    # wait at the gate, at least one partial is held on a worker.
    job = asyncio.ensure_future(
        aiomr.map_reduce(
            range(12),
            functools.partial(gated_from, 6, str(tmp_path)),
            operator.add,
            executor=holding,
            chunk_size=1,
            max_in_flight=6,
            stats=stats,
        )
    )
    await wait_for(both_started(tmp_path), "both workers to reach the gate")
    # Kill the worker that holds the most of the job's partials.
    holders: dict[str, list[str]] = await client.who_has()
    pids: dict[str, int] = await client.run(os.getpid)
    held = collections.Counter(
        address for key, where in holders.items() if key.startswith("aiomr-") for address in where
    )
    victim = pids[held.most_common(1)[0][0]] if held else started(tmp_path)[0][1]
    os.kill(victim, signal.SIGKILL)
    (tmp_path / "gate").touch()
    assert await job == sum(range(12))
    assert stats.chunks_done == 12
    assert victim not in await worker_pids(client)
