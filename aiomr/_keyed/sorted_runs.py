"""Sorted runs in a spill file: write them as pickled batches, merge them back by sort key.

The machinery under `aiomr._keyed.spill.KeyedStore` and its
`aiomr._keyed.spill_file.SpillFile`; all of it runs in one thread of a worker.

Why batch pickling
    One ``pickle.dump`` per record would cross into C once per record; a list of up to
    `BATCH_RECORDS` records costs one call. Batches are also capped in estimated bytes, so
    reading one batch from each of the runs of a merge stays near the budget. An accumulator
    larger than that cap is written *out of line*, right after its batch, and read only when the
    consumer asks for it: the heap then holds just its key, so a hot key that holds a third of
    all records never sits in memory more than one run's portion at a time.

Collisions
    Equality decides identity, not the sort key. Records with equal sort keys arrive together;
    the first key of such a block is the current group, and records whose key differs (a hash
    collision) are set aside in a small dict and handed out as their own groups after the
    current one. Only colliding keys are materialised, and collisions of a 32-bit hash are
    rare. Keys equal under ``==`` in different runs (``1`` and ``1.0``) hash alike and merge.
"""

from __future__ import annotations

import heapq
import os
import pickle
import shutil
from collections.abc import Iterable, Iterator
from typing import IO, Any

from .order import follows, unorderable
from .sizes import estimate_size

__all__ = [
    "BATCH_RECORDS",
    "Merge",
    "Run",
    "Slice",
    "Span",
    "Values",
    "discard",
    "write_run",
]

BATCH_RECORDS = 1000
"""Records per pickled batch: enough that per-call overhead vanishes, few enough that a batch
of tiny records stays small."""
Span = tuple[int, int]
"""A run's ``[start, end)`` byte offsets in the spill file."""


def write_run(file: IO[bytes], records: Iterable[tuple[Any, ...]], batch_bytes: int) -> Span:
    """Append sorted ``(sortkey, key, acc)`` records as pickled batches; return their span.

    A record whose accumulator is estimated above ``batch_bytes`` goes into its batch as
    ``(sortkey, key)``, ends the batch, and has its accumulator pickled on its own right after.
    On failure the file is cut back to where the run began.
    """
    dump, protocol = pickle.dump, pickle.HIGHEST_PROTOCOL
    start = file.seek(0, os.SEEK_END)
    try:
        batch: list[tuple[Any, ...]] = []
        held = 0
        for record in records:
            size = estimate_size(record[2])
            if size > batch_bytes:
                batch.append(record[:2])
                dump(batch, file, protocol)
                dump(record[2], file, protocol)
                batch, held = [], 0
                continue
            batch.append(record)
            held += size + estimate_size(record[1])
            if held >= batch_bytes or len(batch) >= BATCH_RECORDS:
                dump(batch, file, protocol)
                batch, held = [], 0
        if batch:
            dump(batch, file, protocol)
        return start, file.tell()
    except BaseException:
        file.seek(start)
        file.truncate()
        raise


def discard(files: list[IO[bytes]], directory: str) -> None:
    for file in files:
        file.close()
    shutil.rmtree(directory, ignore_errors=True)


class Slice:
    """Read bytes ``[start, end)`` of a file that other slices share, for ``pickle.load``.

    Every read seeks first, so any number of runs read one unbuffered handle in turn (all of
    this is single-threaded); the unpickler reads a whole frame (up to 64 KiB) per call.
    """

    __slots__ = ("_end", "_file", "_pos")

    def __init__(self, file: IO[bytes], span: Span) -> None:
        self._file, (self._pos, self._end) = file, span

    def read(self, size: int = -1) -> bytes:
        left = self._end - self._pos
        size = left if size < 0 or size > left else size
        self._file.seek(self._pos)
        data = self._file.read(size)
        while len(data) < size and (more := self._file.read(size - len(data))):
            data += more  # a short read, rare on regular files
        self._pos += len(data)
        return data

    def readline(self) -> bytes:  # required by pickle; unused by the binary protocols
        line = b""
        while not line.endswith(b"\n") and (char := self.read(1)):
            line += char
        return line


class Run:
    """Cursor over one sorted run: the head record, and its accumulator on demand."""

    __slots__ = ("_batch", "_file", "_owed", "_pos", "head", "index")

    def __init__(self, index: int, batch: list[Any], file: Slice | None) -> None:
        self.index = index  # breaks sort-key ties: older runs first keeps values in add order
        self.head: tuple[Any, ...] | None = None
        self._batch, self._pos, self._file, self._owed = batch, -1, file, False
        self.advance()

    def acc(self) -> Any:
        """Return the head's accumulator; call at most once per head."""
        head = self.head
        assert head is not None
        if len(head) == 3:
            return head[2]
        self._owed = False
        assert self._file is not None
        return pickle.load(self._file)

    def advance(self) -> None:
        """Move to the next record, skipping an out-of-line accumulator nobody asked for."""
        if self._owed:
            pickle.load(self._file)  # type: ignore[arg-type]  # owed implies a file
        batch, pos = self._batch, self._pos
        if pos >= 0:
            batch[pos] = None  # drop the consumed record now, not with the whole batch
        pos += 1
        while pos >= len(batch):
            try:
                if self._file is None:
                    raise EOFError
                batch, pos = pickle.load(self._file), 0
            except EOFError:
                self.head, self._batch, self._owed = None, [], False
                return
        self._batch, self._pos = batch, pos
        self.head = head = batch[pos]
        self._owed = len(head) == 2


class Merge:
    """K-way merge of runs by sort key; ties come out oldest run first.

    ``ordered``: the sort keys are the keys themselves (``sort=True``), and each one the
    merge hands out is checked to follow the one before (`aiomr._keyed.order.follows`), so keys
    that are not totally ordered raise instead of coming out twice. Hashes need no check.
    """

    __slots__ = ("heap", "ordered")

    def __init__(self, runs: list[Run], *, ordered: bool = False) -> None:
        self.ordered = ordered
        self.heap = [(run.head[0], run.index, run) for run in runs if run.head is not None]
        try:
            heapq.heapify(self.heap)
        except TypeError as exc:
            raise unorderable([entry[0] for entry in self.heap]) from exc

    def top(self) -> Run | None:
        return self.heap[0][2] if self.heap else None

    def advance(self) -> None:
        heap = self.heap
        last, _, run = heap[0]
        run.advance()
        if run.head is None:
            heapq.heappop(heap)
        else:
            try:
                heapq.heapreplace(heap, (run.head[0], run.index, run))
            except TypeError as exc:
                raise unorderable([run.head[0], *(entry[0] for entry in heap)]) from exc
        if self.ordered and heap:
            follows(last, heap[0][0])

    def records(self) -> Iterator[tuple[Any, Any, Any]]:
        while (run := self.top()) is not None:
            head = run.head
            assert head is not None
            yield head[0], head[1], run.acc()
            self.advance()


class Values(Iterator[Any]):
    """Lazy accumulators of one group; sets aside records of colliding keys it passes."""

    __slots__ = ("_aside", "_key", "_merge", "_sortkey", "stale")

    def __init__(self, merge: Merge, sortkey: Any, key: Any, aside: dict[Any, list[Any]]):
        self._merge, self._sortkey, self._key, self._aside = merge, sortkey, key, aside
        self.stale = False  # set once the group's records are behind the merge

    def _next_run(self) -> Run | None:
        merge, sortkey, key = self._merge, self._sortkey, self._key
        heap = merge.heap  # read directly: this loop runs once per record
        while not self.stale and heap:
            head_sortkey, _, run = heap[0]
            if not (head_sortkey is sortkey or head_sortkey == sortkey):
                break
            head = run.head
            assert head is not None
            if head[1] is key or head[1] == key:
                return run
            self._aside.setdefault(head[1], []).append(run.acc())
            merge.advance()
        self.stale = True
        return None

    def __next__(self) -> Any:
        run = self._next_run()
        if run is None:
            raise StopIteration
        acc = run.acc()
        self._merge.advance()
        return acc

    def skip_rest(self) -> None:
        """Pass the group's remaining records without loading them, then go stale."""
        while self._next_run() is not None:
            self._merge.advance()
