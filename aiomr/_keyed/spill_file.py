"""The sorted runs one `aiomr._keyed.spill.KeyedStore` spilled: one file, merge passes, removal.

One file for all runs
    Runs are appended to one file and read back by byte range through one unbuffered handle,
    so a tiny budget that spills thousands of runs creates no more files (creating a file
    costs more than writing a small run) and holds at most three file descriptors whatever
    the count. Each merge pass writes a new file and deletes the old one. How runs are
    written and merged back: `aiomr._keyed.sorted_runs`.

Merge passes
    More than `MAX_FAN_IN` runs are first merged, oldest first, into bigger runs, which bounds
    the heap and the batches held in memory (one per run). Each pass rewrites every record
    once (log_FAN_IN(runs) passes), and runs stay in age order, so ties still resolve oldest
    first.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from collections.abc import Callable, Generator, Iterator
from typing import IO, Any

from .sorted_runs import Merge, Run, Slice, Span, Values, discard, write_run

__all__ = ["MAX_FAN_IN", "MIN_BATCH_BYTES", "SpillFile"]

MAX_FAN_IN = 64
"""Runs merged at once. More would hold more batches in memory at once; fewer, more passes."""
MIN_BATCH_BYTES = 4096
"""Floor of the per-batch byte cap (``memory_budget // MAX_FAN_IN``), so tiny budgets still
write batches of several records."""


class SpillFile:
    """Hold the sorted runs of one store in one temporary file, and merge them back.

    Args:
        memory_budget: the store's budget, which caps the bytes of each batch written
            (``memory_budget // MAX_FAN_IN``, at least `MIN_BATCH_BYTES`).
        directory: where the private temporary directory goes; the system default if None.
        ordered: the runs are sorted by key, and every merge checks they stay in order.

    Nothing touches the disk before the first `write`. `discard` removes every file; so does
    dropping the object unclosed, or the interpreter's exit.
    """

    def __init__(self, *, memory_budget: int, directory: str | None, ordered: bool) -> None:
        self._batch_bytes = max(MIN_BATCH_BYTES, memory_budget // MAX_FAN_IN)
        self._directory = directory
        self._ordered = ordered
        self._file: IO[bytes] | None = None  # runs go into one file, per merge pass
        self._runs: list[Span] = []
        self._serial = 0
        self._tempdir: str | None = None
        self._writers: list[IO[bytes]] = []  # every file open for writing, shared with cleanup
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def __bool__(self) -> bool:
        """Whether any run was written (and not yet discarded)."""
        return bool(self._runs)

    def write(self, records: list[tuple[Any, Any, Any]]) -> int:
        """Append ``records``, sorted by sort key, as one run; return the bytes it took."""
        # One file for all runs: creating a file per run costs more than writing a small run.
        if self._file is None:
            self._file = self._new_file()
        start, end = span = write_run(self._file, records, self._batch_bytes)
        self._runs.append(span)
        return end - start

    def groups(
        self, remainder: Callable[[], list[tuple[Any, Any, Any]]] | None
    ) -> Generator[tuple[Any, Iterator[Any]], None, None]:
        """Yield each key of the runs once, with a lazy iterator over its accumulators.

        ``remainder``, when given, returns the store's in-memory records, merged as the
        newest run once the merge passes are done. An iterator is valid until the next
        group is requested; whatever of it was not consumed is skipped.
        """
        values: Values | None = None
        try:
            # Merge passes until one merge can take every run. The heap then holds one batch
            # per run, near the budget in all.
            while len(self._runs) > MAX_FAN_IN:
                self._merge_pass()
            with self._reader() as raw:
                runs = [Run(i, [], Slice(raw, span)) for i, span in enumerate(self._runs)]
                if remainder is not None:
                    runs.append(Run(len(runs), remainder(), None))
                merge = Merge(runs, ordered=self._ordered)
                while (run := merge.top()) is not None:
                    assert run.head is not None
                    sortkey, key = run.head[0], run.head[1]
                    aside: dict[Any, list[Any]] = {}
                    values = Values(merge, sortkey, key, aside)
                    yield key, values
                    values.skip_rest()
                    for other, accs in aside.items():
                        yield other, iter(accs)
        finally:
            if values is not None:
                values.stale = True  # its runs are gone: a later next() ends it, not crashes it

    def discard(self) -> None:
        """Forget the runs, close and remove every file and the directory; idempotent."""
        self._runs = []
        if self._finalizer is not None:
            self._finalizer()  # runs once: closes the files, removes them and the directory

    def _new_file(self) -> IO[bytes]:
        if self._tempdir is None:
            self._tempdir = tempfile.mkdtemp(prefix="aiomr-spill-", dir=self._directory)
            # Also cleans up if the store is dropped unclosed, or at interpreter exit.
            self._finalizer = weakref.finalize(self, discard, self._writers, self._tempdir)
        self._serial += 1
        path = os.path.join(self._tempdir, f"runs-{self._serial}.pickle")
        file = open(path, "w+b")  # noqa: SIM115 - closed by discard, whatever happens
        self._writers.append(file)
        return file

    def _reader(self) -> IO[bytes]:
        assert self._file is not None
        self._file.flush()
        return open(self._file.name, "rb", buffering=0)

    def _merge_pass(self) -> None:
        """Merge consecutive groups of MAX_FAN_IN runs into one run each, in a new file."""
        out = self._new_file()
        spans = []
        with self._reader() as raw:
            for i in range(0, len(self._runs), MAX_FAN_IN):
                group = self._runs[i : i + MAX_FAN_IN]
                runs = [Run(j, [], Slice(raw, span)) for j, span in enumerate(group)]
                merge = Merge(runs, ordered=self._ordered)
                spans.append(write_run(out, merge.records(), self._batch_bytes))
        assert self._file is not None
        self._file.close()
        self._writers.remove(self._file)
        os.remove(self._file.name)
        self._file, self._runs = out, spans
