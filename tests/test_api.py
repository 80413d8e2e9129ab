"""aiomr.map_reduce end to end: the seed cases, every executor, arguments and errors."""

from __future__ import annotations

import asyncio
import concurrent.futures
import operator
import threading
from collections.abc import AsyncIterator

import pytest

import aiomr
from aiomr.executors import ProcessExecutor

FOUR_LINES = [
    "I know what I know",
    "I know that I know",
    "I don't know much",
    "They don't know much",
]
FOUR_LINES_COUNTS = {"I": 5, "know": 6, "what": 1, "that": 1, "don't": 2, "much": 2, "They": 1}


def square(x: int) -> int:
    return x * x


def map_frequencies(chunk: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in chunk:
        for word in line.split(" "):
            counts[word] = counts.get(word, 0) + 1
    return counts


def merge_dictionaries(first: dict[str, int], second: dict[str, int]) -> dict[str, int]:
    merged = dict(first)
    for key, value in second.items():
        merged[key] = merged.get(key, 0) + value
    return merged


async def test_squares_of_one_to_ten_sum_to_385() -> None:
    assert await aiomr.map_reduce(range(1, 11), square, operator.add) == 385


async def test_chunk_mode_word_frequencies(engine: aiomr.Engine) -> None:
    for chunk_size in (1, 2, 3, None):
        result = await engine.map_reduce(
            FOUR_LINES, map_frequencies, merge_dictionaries, mode="chunk", chunk_size=chunk_size
        )
        assert result == FOUR_LINES_COUNTS


async def test_ordered_concatenation(engine: aiomr.Engine) -> None:
    letters = "abcdefg"
    result = await engine.map_reduce(letters, str, operator.add, ordered=True, chunk_size=1)
    assert result == "abcdefg"


@pytest.mark.parametrize("executor", ["process", "thread", "inline"])
async def test_every_named_executor(executor: aiomr.executors.ExecutorSpec) -> None:
    result = await aiomr.map_reduce(
        range(1000), square, operator.add, executor=executor, max_workers=2, chunk_size=37
    )
    assert result == sum(x * x for x in range(1000))


async def test_concurrent_futures_executors_are_used_and_left_running() -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as threads:
        assert await aiomr.map_reduce(range(100), square, operator.add, executor=threads) == 328350
        assert threads.submit(lambda: 1).result() == 1
    with concurrent.futures.ProcessPoolExecutor(2) as processes:
        result = await aiomr.map_reduce(
            range(100), lambda x: x + 1, operator.add, executor=processes
        )
        assert result == 5050
        assert processes.submit(abs, -3).result() == 3


async def test_lambdas_and_closures_in_worker_processes(engine: aiomr.Engine) -> None:
    offset = 7
    lock = threading.Lock()  # unpicklable, but only the caller-side reducer closes over it

    def add_locked(a: int, b: int) -> int:
        with lock:
            return a + b

    # The reducer also runs in the workers, so it must travel: use a lambda there instead.
    result = await engine.map_reduce(range(10), lambda x: x + offset, lambda a, b: a + b)
    assert result == sum(range(10)) + 10 * offset
    assert add_locked(1, 2) == 3


async def test_initial_is_folded_once_not_per_chunk(engine: aiomr.Engine) -> None:
    result = await engine.map_reduce(range(10), square, operator.add, initial=100, chunk_size=3)
    assert result == 100 + 285
    text = await engine.map_reduce(
        "bcd", str, operator.add, initial="a", ordered=True, chunk_size=1
    )
    assert text == "abcd"


async def test_empty_source_returns_initial_or_raises(engine: aiomr.Engine) -> None:
    assert await engine.map_reduce([], square, operator.add, initial=0) == 0
    with pytest.raises(aiomr.EmptySourceError, match="no records and no initial"):
        await engine.map_reduce([], square, operator.add)
    with pytest.raises(ValueError, match="no records"):  # it is a ValueError too
        await engine.map_reduce(iter(()), square, operator.add)


async def test_async_generator_source_is_pulled_and_closed(engine: aiomr.Engine) -> None:
    closed = asyncio.Event()

    async def numbers() -> AsyncIterator[int]:
        try:
            for i in range(5000):
                yield i
        finally:
            closed.set()

    assert await engine.map_reduce(numbers(), square, operator.add) == sum(
        i * i for i in range(5000)
    )
    assert closed.is_set()


async def test_stats_describe_the_job(engine: aiomr.Engine) -> None:
    stats = aiomr.JobStats()
    await engine.map_reduce(range(1000), square, operator.add, chunk_size=100, stats=stats)
    assert stats.records == 1000
    assert stats.chunks == stats.chunks_done == stats.partials_folded == 10
    assert stats.chunk_sizes == [(0, 100)]
    assert stats.in_flight == 0
    assert stats.task_seconds > 0
    assert stats.wall_seconds >= stats.task_seconds_max
    assert stats.worker_pids
    assert all(pid > 0 for pid in stats.worker_pids)


class TestArguments:
    """Bad arguments fail before any record is read, with exact messages."""

    @staticmethod
    def counting_source(pulled: list[int]) -> object:
        def gen() -> object:
            for i in range(10):
                pulled.append(i)
                yield i

        return gen()

    @pytest.mark.parametrize(
        ("kwargs", "error", "message"),
        [
            ({"chunk_size": 0}, ValueError, "chunk_size must be >= 1"),
            ({"chunk_size": 1.5}, TypeError, "chunk_size must be an int or None, got 1.5"),
            ({"max_in_flight": 0}, ValueError, "max_in_flight must be >= 1"),
            (
                {"mode": "rows"},
                ValueError,
                "mode must be 'record', 'chunk', 'blocks' or 'batches', got 'rows'",
            ),
            ({"ordered": "yes"}, TypeError, "ordered must be a bool, got 'yes'"),
            ({"executor": "gpu"}, ValueError, "executor must be one of 'process', 'thread'"),
            ({"executor": 3}, TypeError, "executor must be 'process', 'thread', 'inline'"),
            ({"max_workers": 0}, ValueError, "max_workers must be >= 1"),
        ],
    )
    async def test_bad_knobs(self, kwargs: dict[str, object], error: type, message: str) -> None:
        pulled: list[int] = []
        with pytest.raises(error, match=r"^" + message.replace("(", r"\(").replace(")", r"\)")):
            await aiomr.map_reduce(
                self.counting_source(pulled),  # type: ignore[arg-type]
                square,
                operator.add,
                **kwargs,  # type: ignore[arg-type]
            )
        assert pulled == []

    async def test_non_callables(self) -> None:
        with pytest.raises(TypeError, match=r"^mapper must be callable, got int$"):
            await aiomr.map_reduce([1], 3, operator.add, executor="inline")  # type: ignore[call-overload]
        with pytest.raises(TypeError, match=r"^reducer must be callable, got str$"):
            await aiomr.map_reduce([1], square, "+", executor="inline")  # type: ignore[call-overload]

    async def test_source_must_be_iterable(self) -> None:
        with pytest.raises(
            TypeError, match=r"^source must be an Iterable or an AsyncIterable, got int$"
        ):
            await aiomr.map_reduce(42, square, operator.add, executor="inline")  # type: ignore[call-overload]

    async def test_unpicklable_mapper_fails_before_work(self, engine: aiomr.Engine) -> None:
        lock = threading.Lock()
        pulled: list[int] = []
        with pytest.raises(TypeError, match=r"^mapper <function .*<lambda>.* cannot be pickled"):
            await engine.map_reduce(
                self.counting_source(pulled),  # type: ignore[arg-type]
                lambda x: (lock, x)[1],
                operator.add,
            )
        assert pulled == []


class Boom(Exception):
    """A user exception with extra state, to check it survives the trip."""

    def __init__(self, record: int) -> None:
        super().__init__(f"boom at {record}")
        self.record = record


def explode_at_seven(x: int) -> int:
    if x == 7:
        raise Boom(x)
    return x


class Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()


def raise_unpicklable(x: int) -> int:
    raise Unpicklable()


class TestErrors:
    async def test_mapper_exception_keeps_type_traceback_and_chunk(
        self, engine: aiomr.Engine
    ) -> None:
        with pytest.raises(Boom) as info:
            await engine.map_reduce(range(20), explode_at_seven, operator.add, chunk_size=5)
        exc = info.value
        assert exc.record == 7
        assert isinstance(exc.__cause__, aiomr.WorkerTraceback)
        assert "explode_at_seven" in exc.__cause__.formatted
        assert "raise Boom(x)" in exc.__cause__.formatted
        assert any("chunk 1 (records [5, 10) of the source)" in note for note in exc.__notes__)

    @pytest.mark.parametrize("executor", ["thread", "inline"])
    async def test_in_process_exceptions_keep_their_live_traceback(self, executor: str) -> None:
        with pytest.raises(Boom) as info:
            await aiomr.map_reduce(
                range(20),
                explode_at_seven,
                operator.add,
                chunk_size=5,
                executor=executor,  # type: ignore[arg-type]
            )
        assert info.traceback[-1].name == "explode_at_seven"
        assert any("chunk 1" in note for note in info.value.__notes__)

    async def test_unpicklable_exception_is_described(self, engine: aiomr.Engine) -> None:
        with pytest.raises(aiomr.UnpicklableError, match="Unpicklable: holds a lock") as info:
            await engine.map_reduce(range(3), raise_unpicklable, operator.add)
        assert isinstance(info.value, TypeError)

    async def test_reducer_exception_in_caller_fold(self, engine: aiomr.Engine) -> None:
        def picky(a: int, b: int) -> int:
            if a > 100:
                raise OverflowError("too big")
            return a + b

        with pytest.raises(OverflowError, match="too big") as info:
            await engine.map_reduce(range(100), lambda x: x, picky, chunk_size=10)
        assert info.value.__notes__

    async def test_engine_stays_usable_after_a_failed_job(self, engine: aiomr.Engine) -> None:
        with pytest.raises(Boom):
            await engine.map_reduce(range(20), explode_at_seven, operator.add, chunk_size=2)
        assert await engine.map_reduce(range(1, 11), square, operator.add) == 385


async def test_function_defined_in_main_runs_in_worker_processes(tmp_path: object) -> None:
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(str(tmp_path)) / "job.py"
    script.write_text(
        "import operator, aiomr\n"
        "def cube(x):\n"
        "    return x ** 3\n"
        "async def main():\n"
        "    return await aiomr.map_reduce(range(10), cube, operator.add, max_workers=2)\n"
        "if __name__ == '__main__':\n"
        "    print(aiomr.run(main()))\n"
    )
    import os

    here = str(pathlib.Path(aiomr.__file__).resolve().parent.parent)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": here},
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert out.decode().strip() == "2025"


async def test_owned_pool_workers_are_gone_after_the_call() -> None:
    from tests.conftest import alive

    stats = aiomr.JobStats()
    await aiomr.map_reduce(range(100), square, operator.add, max_workers=2, stats=stats)
    assert stats.worker_pids
    assert alive(stats.worker_pids) == []


async def test_shared_executor_is_not_closed_by_map_reduce(
    process_executor: ProcessExecutor,
) -> None:
    await aiomr.map_reduce(range(10), square, operator.add, executor=process_executor)
    assert not process_executor.closed
    assert await aiomr.map_reduce(range(10), square, operator.add, executor=process_executor) == 285


async def test_exception_class_defined_in_main_keeps_its_type(tmp_path: object) -> None:
    import os
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(str(tmp_path)) / "job.py"
    script.write_text(
        "import operator, aiomr\n"
        "class Rejected(Exception):\n"
        "    pass\n"
        "def check(x):\n"
        "    if x == 3:\n"
        "        raise Rejected(f'record {x}')\n"
        "    return x\n"
        "async def main():\n"
        "    try:\n"
        "        await aiomr.map_reduce(range(10), check, operator.add, max_workers=2)\n"
        "    except Rejected as exc:\n"
        "        return f'caught {exc}'\n"
        "if __name__ == '__main__':\n"
        "    print(aiomr.run(main()))\n"
    )
    here = str(pathlib.Path(aiomr.__file__).resolve().parent.parent)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": here},
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert out.decode().strip() == "caught record 3"
