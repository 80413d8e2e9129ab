"""Turn whatever a job was given into a `Source`: the one place that looks at its type.

A `Source` (files, lines, queries, one a user wrote) describes itself. Plain iterables and
async iterables get an adapter here, which takes their records up to ``n`` at a time:

* **Lists, tuples and ranges** are sliced on the event loop: no user code runs.
* **Other iterables** may block or run user code, so they are pulled on one helper thread.
* **Async iterables** must be pulled on the loop. They are pulled in slices that take about
  `PULL_SLICE_SECONDS` and the loop gets a turn between slices, so a fast async generator
  cannot stall other tasks while a large chunk fills.

A plain iterable may name its records in messages with a ``record_noun`` attribute, as a
`Source` does, e.g. ``("pair", "the output of step 0")``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ._source import DEFAULT_NOUN, Batch, Source

__all__ = ["PULL_SLICE_SECONDS", "describe"]

PULL_SLICE_SECONDS = 0.002
"""Longest stretch an async iterable is pulled without yielding to the loop."""


def describe(source: object) -> Source:
    """Return what a job reads ``source`` through: itself if it is a `Source`, else an adapter.

    Takes nothing from ``source`` yet (a job starts reading with `Source.open_batches`), so
    entry points call it to check a source before anything else happens.

    Raises:
        TypeError: ``source`` is neither a `Source`, an iterable nor an async iterable.
    """
    if isinstance(source, Source):
        noun = source.record_noun
        if not _is_noun(noun):
            raise TypeError(
                f"{type(source).__qualname__}.record_noun must be two strings, "
                f'like ("row", "the query"), got {noun!r}'
            )
        return source
    if isinstance(source, list | tuple | range):
        return _Slices(source)
    if isinstance(source, AsyncIterable):
        return _AsyncPull(source)
    if isinstance(source, Iterable):
        return _ThreadPull(source)
    raise TypeError(
        f"source must be an Iterable or an AsyncIterable, got {type(source).__qualname__}"
    )


def _is_noun(noun: object) -> bool:
    return isinstance(noun, tuple) and len(noun) == 2 and all(isinstance(n, str) for n in noun)


def _noun_of(source: object) -> tuple[str, str]:
    """The ``record_noun`` a plain iterable carries, if it is a valid one."""
    noun = getattr(source, "record_noun", None)
    return noun if isinstance(noun, tuple) and len(noun) == 2 else DEFAULT_NOUN


class _Slices(Source):
    """A list, tuple or range: sliced in place, on the loop."""

    def __init__(self, sequence: Sequence[Any]) -> None:
        self.record_noun = _noun_of(sequence)
        self._sequence = sequence
        self._position = 0

    def open_batches(self) -> _Slices:
        return self

    async def take(self, limit: int) -> Batch:
        part = self._sequence[self._position : self._position + limit]
        self._position += len(part)
        records = part if isinstance(part, list) else list(part)
        return Batch(records, last=len(records) < limit)

    async def aclose(self) -> None:
        pass


class _ThreadPull(Source):
    """Any other iterable: pulled on a helper thread, since ``next`` may block."""

    def __init__(self, iterable: Iterable[Any]) -> None:
        self.record_noun = _noun_of(iterable)
        self._iterable = iterable
        self._iterator: Iterator[Any] | None = None
        self._thread: ThreadPoolExecutor | None = None

    def open_batches(self) -> _ThreadPull:
        self._iterator = iter(self._iterable)
        return self

    async def take(self, limit: int) -> Batch:
        iterator = self._iterator
        assert iterator is not None, "open_batches() first"
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="aiomr-source")
        loop = asyncio.get_running_loop()
        records = await loop.run_in_executor(
            self._thread, lambda: list(itertools.islice(iterator, limit))
        )
        return Batch(records, last=len(records) < limit)

    async def aclose(self) -> None:
        """Close the iterator if it can be closed (a generator); let the thread go."""
        try:
            close: Any = getattr(self._iterator, "close", None)
            if close is not None:
                # ValueError, "generator already executing": a pull cancelled mid-way
                # still runs on the helper thread; the generator ends with it.
                with contextlib.suppress(ValueError):
                    close()
        finally:
            if self._thread is not None:
                self._thread.shutdown(wait=False)


class _AsyncPull(Source):
    """An async iterable: pulled on the loop, in slices of `PULL_SLICE_SECONDS`."""

    def __init__(self, iterable: AsyncIterable[Any]) -> None:
        self.record_noun = _noun_of(iterable)
        self._iterable = iterable
        self._iterator: AsyncIterator[Any] | None = None
        self._slice = 1024

    def open_batches(self) -> _AsyncPull:
        self._iterator = aiter(self._iterable)
        return self

    async def take(self, limit: int) -> Batch:
        iterator = self._iterator
        assert iterator is not None, "open_batches() first"
        records: list[Any] = []
        append = records.append
        while len(records) < limit:
            want = min(limit - len(records), self._slice)
            started = time.perf_counter()
            pulled = 0
            async for record in iterator:
                append(record)
                pulled += 1
                if pulled >= want:
                    break
            else:
                return Batch(records, last=True)
            elapsed = time.perf_counter() - started
            # Keep each slice near PULL_SLICE_SECONDS of loop time.
            if elapsed > 0:
                wanted = int(pulled * PULL_SLICE_SECONDS / elapsed)
                self._slice = max(16, min(wanted, self._slice * 4, 1 << 20))
            if len(records) < limit:
                await asyncio.sleep(0)
        return Batch(records)

    async def aclose(self) -> None:
        """Close the iterator if it can be closed (an async generator)."""
        aclose: Any = getattr(self._iterator, "aclose", None)
        if aclose is not None:
            await aclose()
