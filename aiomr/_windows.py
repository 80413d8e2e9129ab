"""Windows over endless sources: a result per window of records, by count or by time.

::

    source ─► reader task ─► bounded queue ─► pane jobs (one map-reduce per pane, on the
                                               engine's workers, one at a time)
                                                   │ pane results
                                                   ▼
                               window = fold of the last size/slide panes ─► async for

A window of ``size`` (records or seconds) that moves by ``slide`` is cut into panes of
``slide``; each pane is reduced once, by the workers, and each window folds its panes (so a
record is mapped once, however many windows it belongs to). Tumbling windows are the case
``slide == size``: one pane per window. Time windows go by arrival time: a pane closes when
its time is up, whether records came or not.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import functools
import itertools
import time
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._exceptions import EmptySourceError
from ._sentinels import MISSING

__all__ = ["Window", "WindowSpec", "windows"]

S = TypeVar("S")

_QUEUE_SIZE = 10_000
"""Records read ahead of the pane being reduced, at most."""
_BATCH = 1024
"""Records pulled from a plain iterable per helper-thread hop."""


@dataclass(frozen=True, slots=True)
class Window(Generic[S]):
    """The result of one window."""

    value: S
    """The reduction of the window's mapped records (``initial`` for an empty one)."""
    records: int
    """Records in the window."""
    start: float
    """Count windows: the position of the window's first record in the source; time windows:
    when the window opened (``time.time()``)."""
    end: float
    """Count windows: the position just past its last record; time windows: when it closed."""


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Window size and slide, in records (``by="count"``) or seconds (``by="time"``)."""

    size: float
    slide: float
    by: str

    def __post_init__(self) -> None:
        if self.by not in ("count", "time"):
            raise ValueError(f"by must be 'count' or 'time', got {self.by!r}")
        for name in ("size", "slide"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
            if self.by == "count" and not isinstance(value, int):
                raise ValueError(f"{name} must be a whole number of records, got {value!r}")
        panes = self.size / self.slide
        if self.slide > self.size or abs(panes - round(panes)) > 1e-9:
            raise ValueError(
                f"size must be a whole multiple of slide (size={self.size}, slide={self.slide})"
            )

    @property
    def panes(self) -> int:
        """Panes per window."""
        return round(self.size / self.slide)


class _End:
    """Marks the end of the source in the queue."""


async def _read(source: AsyncIterable[Any] | Iterable[Any], queue: asyncio.Queue[Any]) -> None:
    """Move the source's records into ``queue``; then the end marker, unless cancelled."""
    try:
        if isinstance(source, AsyncIterable):
            async for record in source:
                await queue.put(record)
        else:  # pulled in batches on a helper thread: a blocking iterator stays off the loop
            iterator = iter(source)
            while batch := await asyncio.to_thread(list, itertools.islice(iterator, _BATCH)):
                for record in batch:
                    await queue.put(record)
    except asyncio.CancelledError:
        raise
    except BaseException:
        await queue.put(_End)  # the pane waiting for records stops; `windows` raises this
        raise
    await queue.put(_End)


class _Pane:
    """Feed one pane's records to its job from the queue, until the pane is full or over."""

    def __init__(self, queue: asyncio.Queue[Any], spec: WindowSpec, closes_at: float) -> None:
        self._queue = queue
        self._spec = spec
        self._closes_at = closes_at
        self.records = 0
        self.source_ended = False

    async def __aiter__(self) -> AsyncGenerator[Any, None]:
        loop = asyncio.get_running_loop()
        while True:
            if self._spec.by == "count" and self.records >= self._spec.slide:
                return
            if self._spec.by == "time":
                left = self._closes_at - loop.time()
                if left <= 0:
                    return
                try:
                    record = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    return
            else:
                record = await self._queue.get()
            if record is _End:
                self.source_ended = True
                return
            self.records += 1
            yield record


async def windows(
    run_job: Callable[[AsyncIterable[Any]], Any],
    source: AsyncIterable[Any] | Iterable[Any],
    reducer: Callable[[Any, Any], Any],
    spec: WindowSpec,
    initial: Any,
) -> AsyncGenerator[Window[Any], None]:
    """Yield one `Window` per window of ``source``; ``run_job(records)`` reduces a pane."""
    queue: asyncio.Queue[Any] = asyncio.Queue(_QUEUE_SIZE)
    reader = asyncio.create_task(_read(source, queue))
    loop = asyncio.get_running_loop()
    panes: collections.deque[tuple[Any, int, float, float]] = collections.deque(maxlen=spec.panes)
    position = 0
    opened = loop.time()
    clock = time.time() - opened  # loop time to wall-clock time
    try:
        while True:
            pane = _Pane(queue, spec, opened + spec.slide)
            try:
                value = await run_job(pane)
            except EmptySourceError:
                value = MISSING
            start: float
            end: float
            if spec.by == "count":
                start, end = position, position + pane.records
            else:
                start, end = clock + opened, clock + opened + spec.slide
            position += pane.records
            opened += spec.slide
            if pane.records == 0 and pane.source_ended:
                return
            panes.append((value, pane.records, start, end))
            full = len(panes) == spec.panes
            if full or pane.source_ended:
                window = await _fold(panes, reducer, initial)
                if window is not None:
                    yield window
            if pane.source_ended:
                return
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader  # raises what the source raised, if it failed


async def _fold(
    panes: collections.deque[tuple[Any, int, float, float]],
    reducer: Callable[[Any, Any], Any],
    initial: Any,
) -> Window[Any] | None:
    """Fold the panes' results into the window's, off the loop; ``None`` if it is empty."""
    values = [value for value, *_ in panes if value is not MISSING]
    records = sum(count for _, count, _, _ in panes)
    start, end = panes[0][2], panes[-1][3]
    if not values:
        return None if initial is MISSING else Window(initial, records, start, end)
    if len(values) == 1:
        return Window(values[0], records, start, end)
    # The first pane's result is copied: a reducer that updates its first argument in place
    # must not change a pane that later windows fold again.
    first, rest = copy.copy(values[0]), values[1:]
    value = await asyncio.to_thread(functools.reduce, reducer, rest, first)
    return Window(value, records, start, end)
