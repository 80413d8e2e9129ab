"""An error names the record it was raised at, for every source kind and every kind of job.

Ranges are half-open everywhere: ``records [512, 768)`` holds records 512 to 767.
"""

from __future__ import annotations

import asyncio
import operator
import pathlib
import re
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aiomr
from aiomr.sources import files, lines
from aiomr.sources._file_splits import plan_splits

BAD = 637


class Bad(Exception):
    pass


def fail_at_bad(x: int) -> int:
    if x == BAD:
        raise Bad(x)
    return x


def add_unless_bad(a: int, b: int) -> int:
    if b == BAD:
        raise Bad(b)
    return a + b


def fail_on_bad_line(line: str) -> int:
    if line == f"line {BAD}":
        raise Bad(line)
    return 1


def pairs_failing_at_bad(x: int) -> Iterator[tuple[int, int]]:
    if x == BAD:
        raise Bad(x)
    yield x % 10, 1


def pairs_broken_at_bad(x: int) -> list[tuple[int, ...]]:
    return [(x,)] if x == BAD else [(x % 10, 1)]


def aiomr_note(exc: BaseException) -> str:
    """The note aiomr added to a task's error, without the process id."""
    notes = [note for note in getattr(exc, "__notes__", []) if note.startswith("aiomr: ")]
    assert len(notes) == 1, notes
    return re.sub(r" \(pid \d+\)$", "", notes[0])


def numbers(kind: str, n: int) -> object:
    if kind == "list":
        return list(range(n))
    if kind == "generator":
        return (x for x in range(n))

    async def agen() -> AsyncIterator[int]:
        for x in range(n):
            yield x

    return agen()


CHUNK_2 = "chunk 2 (records [512, 768) of the source)"


@pytest.mark.parametrize("kind", ["list", "generator", "async generator"])
@pytest.mark.parametrize("part", ["mapper", "reducer"])
async def test_map_reduce_names_the_record(engine: aiomr.Engine, kind: str, part: str) -> None:
    mapper, reducer = (fail_at_bad, operator.add) if part == "mapper" else (int, add_unless_bad)
    with pytest.raises(Bad) as caught:
        await engine.map_reduce(numbers(kind, 2000), mapper, reducer, chunk_size=256)  # type: ignore[arg-type]
    assert (
        aiomr_note(caught.value)
        == f"aiomr: raised by user code at record {BAD} of the source, in {CHUNK_2}"
    )
    assert isinstance(caught.value.__cause__, aiomr.WorkerTraceback)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 400),
    chunk_size=st.integers(1, 64),
    bad=st.integers(0, 399),
    part=st.sampled_from(["mapper", "reducer"]),
)
def test_the_named_record_is_the_failing_one(n: int, chunk_size: int, bad: int, part: str) -> None:
    bad = bad % n

    def mapper(x: int) -> list[int]:
        if part == "mapper" and x == bad:
            raise Bad(x)
        return [x]

    def reducer(a: list[int], b: list[int]) -> list[int]:
        if part == "reducer" and b == [bad]:
            raise Bad(b)
        return a + b

    async def run() -> None:
        await aiomr.map_reduce(range(n), mapper, reducer, chunk_size=chunk_size, executor="inline")

    first = bad - bad % chunk_size
    if part == "reducer" and bad == first:
        return  # the first value of a chunk is not folded into anything there
    with pytest.raises(Bad) as caught:
        asyncio.run(run())
    chunk = f"chunk {first // chunk_size} (records [{first}, {min(first + chunk_size, n)}) of the source)"
    assert (
        aiomr_note(caught.value)
        == f"aiomr: raised by user code at record {bad} of the source, in {chunk}"
    )
    assert "_aiomr_record" not in caught.value.__dict__  # the exception is the user's, as raised


def write_lines(path: pathlib.Path, count: int, first: int = 0) -> pathlib.Path:
    path.write_text("".join(f"line {i}\n" for i in range(first, first + count)))
    return path


async def test_lines_name_file_and_line(engine: aiomr.Engine, tmp_path: pathlib.Path) -> None:
    path = write_lines(tmp_path / "a.txt", 2000)
    with pytest.raises(Bad) as caught:
        await engine.map_reduce(lines(path), fail_on_bad_line, operator.add, chunk_size=256)
    assert aiomr_note(caught.value) == (
        f"aiomr: raised by user code at {path}:{BAD + 1}, in chunk 2 ({path} lines [513, 769))"
    )


async def test_a_chunk_over_two_files_names_both(
    engine: aiomr.Engine, tmp_path: pathlib.Path
) -> None:
    first = write_lines(tmp_path / "a.txt", 300)
    second = write_lines(tmp_path / "b.txt", 400, first=BAD - 4)
    with pytest.raises(Bad) as caught:
        await engine.map_reduce(
            lines([first, second]), fail_on_bad_line, operator.add, chunk_size=256
        )
    assert aiomr_note(caught.value) == (
        f"aiomr: raised by user code at {second}:5, "
        f"in chunk 1 ({first} lines [257, 301), {second} lines [1, 213))"
    )


async def test_a_malformed_line_is_named_as_such(
    engine: aiomr.Engine, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "t.tsv"
    path.write_text("a\t1\n" * 600 + "b\n" + "c\t2\n" * 10)
    with pytest.raises(aiomr.RecordError) as caught:
        await engine.map_reduce(
            lines(path, format="tsv", fields=2), len, operator.add, chunk_size=256
        )
    assert str(caught.value).startswith(f"{path}:601: ")
    assert aiomr_note(caught.value) == (
        f"aiomr: malformed input at {path}:601, in chunk 2 ({path} lines [513, 612))"
    )


SPLIT_NOTE = re.compile(
    r"aiomr: raised by user code at record (\d+) of the split, in split (\d+) \(.+\)"
)


@pytest.mark.parametrize("keyed", [False, True], ids=["map_reduce", "map_reduce_by_key"])
async def test_a_split_names_the_record_in_it(
    engine: aiomr.Engine, tmp_path: pathlib.Path, keyed: bool
) -> None:
    path = write_lines(tmp_path / "a.txt", 2000)
    source = files(path, split_size=4000)
    spec = aiomr.ReduceByKey(lambda line: [(fail_on_bad_line(line), 1)], operator.add)
    job = (
        engine.run_by_key(source, spec)
        if keyed
        else engine.map_reduce(source, fail_on_bad_line, operator.add)
    )
    with pytest.raises(Bad) as caught:
        await job
    found = SPLIT_NOTE.fullmatch(aiomr_note(caught.value))
    assert found is not None, aiomr_note(caught.value)
    index, number = map(int, found.groups())
    (segment,) = plan_splits([str(path)], 4000)[number].segments
    split_lines = path.read_bytes()[segment.start : segment.end].decode().splitlines()
    assert split_lines[index] == f"line {BAD}"


async def test_undecodable_input_in_a_split_names_its_own_place(
    engine: aiomr.Engine, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"good\n" * 10 + b"\xff\xfe bad\n" + b"good\n" * 10)
    with pytest.raises(aiomr.RecordError, match=r"a\.txt:11 \(byte 50\): cannot decode") as caught:
        await engine.map_reduce(files(path), len, operator.add)
    note = aiomr_note(caught.value)
    assert note.startswith("aiomr: malformed input in split 0 (")  # no record: the error says
    assert str(path) in note


@pytest.mark.parametrize("on_error", ["raise", "skip"])
@pytest.mark.parametrize("keyed", [False, True], ids=["map_reduce", "run_by_key"])
async def test_input_that_cannot_be_read_is_not_called_user_code(
    engine: aiomr.Engine, tmp_path: pathlib.Path, keyed: bool, on_error: str
) -> None:
    path = tmp_path / "a.txt.gz"
    path.write_bytes(b"not gzip at all\n")
    job = (
        engine.run_by_key(
            files(path), aiomr.ReduceByKey(pairs_failing_at_bad, operator.add), on_error=on_error
        )
        if keyed
        else engine.map_reduce(files(path), len, operator.add, on_error=on_error)  # type: ignore[arg-type]
    )
    with pytest.raises(aiomr.BrokenInputError, match="Not a gzipped file") as caught:
        await job
    note = aiomr_note(caught.value)
    assert note.startswith("aiomr: raised while reading the input in split 0 ("), note


async def test_key_value_jobs_name_the_record(engine: aiomr.Engine) -> None:
    with pytest.raises(Bad) as caught:
        await engine.run_by_key(
            range(2000), aiomr.ReduceByKey(pairs_failing_at_bad, operator.add), chunk_size=256
        )
    assert (
        aiomr_note(caught.value)
        == f"aiomr: raised by user code at record {BAD} of the source, in {CHUNK_2}"
    )

    with pytest.raises(
        aiomr.MapperOutputError, match=r"for record 637 \(637\) it yielded \(637,\)"
    ) as bad_pair:
        await engine.run_by_key(
            range(2000), aiomr.ReduceByKey(pairs_broken_at_bad, operator.add), chunk_size=256
        )
    assert (
        aiomr_note(bad_pair.value)
        == f"aiomr: unusable key-value output at record {BAD} of the source, in {CHUNK_2}"
    )


@pytest.mark.parametrize("keyed", [False, True], ids=["map_reduce", "run_by_key"])
async def test_a_reducer_failing_in_a_skipping_job_names_the_record(
    engine: aiomr.Engine, keyed: bool
) -> None:
    spec = aiomr.ReduceByKey(lambda x: [(0, x)], add_unless_bad)
    job = (
        engine.run_by_key(range(2000), spec, chunk_size=256, on_error="skip")
        if keyed
        else engine.map_reduce(range(2000), int, add_unless_bad, chunk_size=256, on_error="skip")
    )
    with pytest.raises(Bad) as caught:
        await job
    assert aiomr_note(caught.value) == (
        f"aiomr: raised by user code at record {BAD} of the source, in {CHUNK_2}"
    )


class FailingAtBad(aiomr.Job):
    def mapper(self, _: None, x: int) -> Iterator[tuple[int, int]]:
        if x == BAD:
            raise Bad(x)
        yield x % 3, x

    def reducer(self, key: int, values: Iterator[int]) -> Iterator[tuple[int, int]]:
        yield key, sum(values)


class FailingInSecondStep(FailingAtBad):
    def steps(self) -> list[aiomr.Step]:
        return [aiomr.Step(mapper=self.mapper, reducer=self.reducer), aiomr.Step(mapper=self.pick)]

    def pick(self, key: int, total: int) -> Iterator[tuple[int, int]]:
        if key == 1:
            raise Bad(key)
        yield key, total


class FailingAtTheEnd(FailingAtBad):
    def mapper_final(self) -> Iterator[tuple[int, int]]:
        raise Bad("final")
        yield  # a generator


async def test_job_steps_name_the_record(engine: aiomr.Engine) -> None:
    with pytest.raises(Bad) as caught:
        await FailingAtBad().run(range(2000), engine=engine, chunk_size=256)
    assert (
        aiomr_note(caught.value)
        == f"aiomr: raised by user code at record {BAD} of the source, in {CHUNK_2}"
    )

    with pytest.raises(Bad) as second:
        await FailingInSecondStep().run(range(600), engine=engine, chunk_size=256)
    note = aiomr_note(second.value)
    assert re.fullmatch(
        r"aiomr: raised by user code at pair [012] of the output of step 0, "
        r"in chunk 0 \(pairs \[0, 3\) of the output of step 0\)",
        note,
    ), note

    with pytest.raises(Bad) as final:
        await FailingAtTheEnd().run(range(600), engine=engine, chunk_size=256)
    assert re.fullmatch(
        r"aiomr: raised by user code in chunk \d \(records \[\d+, \d+\) of the source\)",
        aiomr_note(final.value),
    )
