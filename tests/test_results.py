"""Result helpers: top(k), JSON Lines and CSV writers."""

from __future__ import annotations

import collections
import csv
import json
import operator
import pathlib
from collections.abc import AsyncIterator

import pytest

import aiomr


def test_top_matches_counter_most_common() -> None:
    counts = collections.Counter(
        ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"] * 3
    )
    counts.update(["fox"] * 5)
    assert aiomr.top(counts, 3) == counts.most_common(3)
    assert aiomr.top(list(counts.items()), 0) == []
    with pytest.raises(ValueError, match="k must be >= 0"):
        aiomr.top(counts, -1)


async def test_write_jsonl_and_csv_from_a_mapping_and_a_stream(tmp_path: pathlib.Path) -> None:
    data = {f"key,{i}": i * i for i in range(2500)}
    jsonl = tmp_path / "out.jsonl"
    assert await aiomr.write_jsonl(str(jsonl), data) == 2500
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert {row["key"]: row["value"] for row in rows} == data

    async def pairs() -> AsyncIterator[tuple[str, int]]:
        for item in data.items():
            yield item

    path = tmp_path / "out.csv"
    assert await aiomr.write_csv(str(path), pairs()) == 2500
    with path.open(newline="") as f:
        read = list(csv.reader(f))
    assert read[0] == ["key", "value"]
    assert {k: int(v) for k, v in read[1:]} == data


async def test_stream_a_key_based_job_into_a_file(tmp_path: pathlib.Path) -> None:
    spec = aiomr.ReduceByKey(lambda n: [(n % 10, n)], operator.add)
    async with aiomr.open_by_key(range(1000), spec, sort=True, executor="inline") as pairs:
        assert await aiomr.write_csv(str(tmp_path / "sums.csv"), pairs, header=None) == 10
    lines = (tmp_path / "sums.csv").read_text().splitlines()
    assert lines[0] == f"0,{sum(range(0, 1000, 10))}"
