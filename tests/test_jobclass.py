"""The class-based Job: mrjob-style methods, hooks and several steps."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import aiomr

TEXT = ["The cat sat", "the hat", "A cat, a hat"]


class WordCount(aiomr.Job):
    def mapper(self, _: None, line: str) -> Iterator[tuple[str, int]]:
        for word in line.replace(",", " ").split():
            yield word.lower(), 1

    def combiner(self, word: str, counts: Iterator[int]) -> Iterator[tuple[str, int]]:
        yield word, sum(counts)

    def reducer(self, word: str, counts: Iterator[int]) -> Iterator[tuple[str, int]]:
        yield word, sum(counts)


class MostCommonWord(WordCount):
    """Two steps: count words, then pick the most common one."""

    def steps(self) -> list[aiomr.Step]:
        return [
            aiomr.Step(mapper=self.mapper, combiner=self.combiner, reducer=self.reducer),
            aiomr.Step(mapper=self.to_one_key, reducer=self.pick_max),
        ]

    def to_one_key(self, word: str, count: int) -> Iterator[tuple[None, tuple[int, str]]]:
        yield None, (count, word)

    def pick_max(self, _: None, pairs: Iterator[tuple[int, str]]) -> Iterator[tuple[str, int]]:
        count, word = max(pairs)
        yield word, count


class InMapperCombining(aiomr.Job):
    """mapper_init/mapper_final hooks: count in the task, emit once at its end."""

    def mapper_init(self) -> None:
        self.seen: dict[str, int] = {}

    def mapper(self, _: None, line: str) -> Iterator[tuple[str, int]]:
        for word in line.split():
            self.seen[word] = self.seen.get(word, 0) + 1
        return iter(())

    def mapper_final(self) -> Iterator[tuple[str, int]]:
        yield from self.seen.items()

    def reducer_init(self) -> None:
        self.keys = 0

    def reducer(self, word: str, counts: Iterator[int]) -> Iterator[tuple[str, int]]:
        self.keys += 1
        yield word, sum(counts)

    def reducer_final(self) -> Iterator[tuple[str, int]]:
        yield "#keys-in-partition", self.keys


async def test_word_count_job(engine: aiomr.Engine) -> None:
    pairs = await WordCount().run(TEXT * 10, engine=engine, sort=True, chunk_size=4)
    assert pairs == [("a", 20), ("cat", 20), ("hat", 20), ("sat", 10), ("the", 20)]


async def test_two_step_job_owns_its_pool() -> None:
    assert await MostCommonWord().run(TEXT * 3, max_workers=2) == [("the", 6)]


async def test_init_and_final_hooks(engine: aiomr.Engine) -> None:
    pairs = await InMapperCombining().run(["x y", "y z", "z z"], engine=engine, chunk_size=2)
    counts = {k: v for k, v in pairs if k != "#keys-in-partition"}
    assert counts == {"x": 1, "y": 2, "z": 3}
    per_partition = [v for k, v in pairs if k == "#keys-in-partition"]
    assert sum(per_partition) == 3  # one per distinct word, across the partitions


async def test_combiner_must_keep_its_key() -> None:
    class Renaming(WordCount):
        def combiner(self, word: str, counts: Iterator[int]) -> Iterator[tuple[str, int]]:
            yield word.upper(), sum(counts)

    with pytest.raises(ValueError, match="a combiner must keep the key it was given"):
        await Renaming().run(TEXT, executor="inline")


def test_step_needs_a_mapper_or_reducer() -> None:
    with pytest.raises(ValueError, match="a Step needs a mapper, a reducer, or both"):
        aiomr.Step()


class ReturnsAPair(WordCount):
    def reducer(self, word: str, counts: Iterator[int]) -> Iterator[tuple[str, int]]:
        return word, sum(counts)  # type: ignore[return-value]  # a tuple, not pairs


class ReturnsNothing(WordCount):
    def reducer_final(self) -> Iterator[tuple[str, int]]:
        return None  # type: ignore[return-value]


class ReturnsAList(WordCount):
    def reducer(self, word: str, counts: Iterator[int]) -> Iterator[tuple[str, int]]:
        return iter([[word, sum(counts)]])  # type: ignore[list-item]  # lists of two are pairs


@pytest.mark.parametrize("executor", ["inline", "process"])
async def test_a_reducer_that_does_not_yield_pairs_fails_instead_of_answering_wrong(
    executor: str,
) -> None:
    # Two-letter words: unpacked, each would pass for a (key, value) pair.
    with pytest.raises(
        aiomr.MapperOutputError,
        match=r"^reducer ReturnsAPair\.reducer must yield \(key, value\) pairs, but for key "
        r"'\w\w' it yielded '\w\w'",
    ) as caught:
        await ReturnsAPair().run(["ab cd ab"], executor=executor)  # type: ignore[arg-type]
    assert any("unusable key-value output in partition" in n for n in caught.value.__notes__)
    with pytest.raises(
        aiomr.MapperOutputError,
        match=r"^reducer_final ReturnsNothing\.reducer_final must yield \(key, value\) pairs "
        r"or return an iterable of them, but it returned None",
    ):
        await ReturnsNothing().run(["ab cd ab"], executor=executor)  # type: ignore[arg-type]
    pairs = await ReturnsAList().run(["ab cd ab"], executor=executor, sort=True)  # type: ignore[arg-type]
    assert pairs == [("ab", 2), ("cd", 1)]
