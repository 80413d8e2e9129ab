"""Work with key-based results: the most common keys, JSON Lines and CSV files."""

from __future__ import annotations

import csv
import heapq
import io
import json
import operator
from collections.abc import AsyncIterable, Iterable, Mapping
from typing import Any, TypeVar

import aiofiles

__all__ = ["top", "write_csv", "write_jsonl"]

K = TypeVar("K")
V = TypeVar("V")

_WRITE_BATCH = 1024
"""Rows formatted per write: one thread hop of aiofiles per batch, not per row."""

Pairs = Mapping[Any, Any] | Iterable[tuple[Any, Any]] | AsyncIterable[tuple[Any, Any]]


def top(results: Mapping[K, V] | Iterable[tuple[K, V]], k: int) -> list[tuple[K, V]]:
    """Return the ``k`` pairs with the largest values, largest first (ties by first seen).

    Like `collections.Counter.most_common`, for any mapping or iterable of pairs:

        >>> top({"a": 3, "b": 7, "c": 5}, 2)
        [('b', 7), ('c', 5)]
    """
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {k!r}")
    if k < 0:
        raise ValueError("k must be >= 0")
    pairs = results.items() if isinstance(results, Mapping) else results
    return heapq.nlargest(k, pairs, key=operator.itemgetter(1))


async def _batches(pairs: Pairs) -> AsyncIterable[list[tuple[Any, Any]]]:
    batch: list[tuple[Any, Any]] = []
    if isinstance(pairs, AsyncIterable):
        async for pair in pairs:
            batch.append(pair)
            if len(batch) >= _WRITE_BATCH:
                yield batch
                batch = []
    else:
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        for pair in items:
            batch.append(pair)
            if len(batch) >= _WRITE_BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


async def write_jsonl(path: str, pairs: Pairs, *, key: str = "key", value: str = "value") -> int:
    """Write each pair as one JSON object per line, ``{"key": ..., "value": ...}``.

    Accepts a mapping, an iterable or an async iterable of pairs (the stream of
    `aiomr.open_by_key`); writes through aiofiles in batches. Returns the rows written.

    Cancellation: the file is left partly written; write to a temporary name and rename it
    if readers must never see a partial file.
    """
    count = 0
    async with aiofiles.open(path, "w", encoding="utf-8") as f:
        async for batch in _batches(pairs):
            lines = [json.dumps({key: k, value: v}, ensure_ascii=False) for k, v in batch]
            await f.write("\n".join(lines) + "\n")
            count += len(batch)
    return count


async def write_csv(
    path: str, pairs: Pairs, *, header: tuple[str, str] | None = ("key", "value")
) -> int:
    """Write each pair as one CSV row, after an optional header row; return the rows written.

    Accepts what `write_jsonl` accepts. Values are written with `csv`'s quoting.

    Cancellation: as for `write_jsonl`.
    """
    count = 0
    async with aiofiles.open(path, "w", encoding="utf-8", newline="") as f:
        if header is not None:
            await f.write(_csv_rows([header]))
        async for batch in _batches(pairs):
            await f.write(_csv_rows(batch))
            count += len(batch)
    return count


def _csv_rows(rows: Iterable[tuple[Any, Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()
