"""Arrow IPC files (Feather v2) and streams read by the workers, record batches per task.

The caller reads only each file's footer (how many record batches, which schema) and cuts
every file into ranges of record batches of about ``split_size`` bytes; a stream, which has
no footer, is one split. Each worker memory-maps its file and reads its batches itself
(`aiomr._columnar.ipc_reader`). No row passes through the caller.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._columnar.imports import require
from .._columnar.ipc_reader import IpcReader, IpcSplit
from ._file_splits import auto_split_size
from ._parquet import DEFAULT_BATCH_SIZE, check_columns_argument, check_filter
from ._paths import PathsLike, expand_paths
from ._segments import stamp_of
from ._split_source import SplitSource

__all__ = ["ArrowSource", "arrow"]


@dataclass(frozen=True, slots=True)
class _File:
    path: str
    batches: int | None
    """Record batches in the file; ``None`` for a stream."""
    size: int
    stamp: tuple[int, int, int]


class ArrowPlan:
    """The files an Arrow source's splits will read, cut into ranges of batches on demand."""

    def __init__(self, files: list[_File]) -> None:
        self._files = files
        self._file = 0
        self._batch = 0
        self._count = 0
        self.total: int | None = sum(f.size for f in files)

    def cut(self, size: int) -> IpcSplit | None:
        """The next split: about ``size`` bytes of one file's record batches (at least one),
        or a whole stream; ``None`` at the end."""
        while self._file < len(self._files):
            f = self._files[self._file]
            if f.batches is None or f.batches == 0:
                self._file += 1
                if f.batches == 0:
                    continue  # a file without batches has no rows
                return self._split(f, 0, None, f.size)
            # Batches are not measured: a file's batches are taken as equal in size.
            take = max(1, -(-f.batches * size // max(f.size, 1)))
            first, stop = self._batch, min(self._batch + take, f.batches)
            if stop >= f.batches:
                self._file, self._batch = self._file + 1, 0
            else:
                self._batch = stop
            return self._split(f, first, stop, f.size * (stop - first) // f.batches)
        return None

    def _split(self, f: _File, first: int, stop: int | None, size: int) -> IpcSplit:
        split = IpcSplit(self._count, f.path, first, stop, size, f.size, f.stamp)
        self._count += 1
        return split


class ArrowSource(SplitSource):
    """Arrow IPC files and streams read by the workers (see `arrow`)."""

    record_noun = ("row", "the Arrow files")

    def __init__(
        self,
        paths: PathsLike,
        *,
        columns: Sequence[str] | None,
        filter: Any,
        batch_size: int,
        split_size: int | None,
    ) -> None:
        require("pyarrow.ipc", "aiomr.sources.arrow")
        self.columns = check_columns_argument(columns)
        self.filter = check_filter(filter)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if split_size is not None and split_size < 1:
            raise ValueError("split_size must be >= 1")
        self.paths_arg = paths
        self.split_size = split_size
        self.reader: IpcReader = IpcReader(self.columns, self.filter, batch_size)

    def cutter(self, workers: int) -> tuple[ArrowPlan, int]:
        """Read the files' footers and plan their batches (blocking); return the plan and
        the split size for ``workers`` workers."""
        files = [self._file(os.path.abspath(path)) for path in expand_paths(self.paths_arg)]
        plan = ArrowPlan(files)
        size = self.split_size
        if size is None:
            size = auto_split_size(plan.total or 0, workers)
        return plan, size

    def batch_reader(self) -> IpcReader:
        """The reader itself: it reads record batches."""
        return self.reader

    def _file(self, path: str) -> _File:
        pa = require("pyarrow", "aiomr.sources.arrow")
        ipc = require("pyarrow.ipc", "aiomr.sources.arrow")
        stat = os.stat(path)
        try:
            with pa.memory_map(path) as source:
                try:
                    reader = ipc.open_file(source)
                    batches: int | None = reader.num_record_batches
                    schema = reader.schema
                except pa.ArrowInvalid:  # no footer: perhaps a stream
                    source.seek(0)
                    schema = ipc.open_stream(source).schema
                    batches = None
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"aiomr.sources.arrow: {path} is not an Arrow IPC file or stream: {exc}"
            ) from exc
        missing = [c for c in self.columns or () if c not in schema.names]
        if missing:
            raise ValueError(
                f"aiomr.sources.arrow: no column {missing[0]!r} in {path}; "
                f"it has {', '.join(schema.names)}"
            )
        return _File(path, batches, stat.st_size, stamp_of(stat))


def arrow(
    paths: PathsLike,
    *,
    columns: Sequence[str] | None = None,
    filter: Any = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    split_size: int | None = None,
) -> ArrowSource:
    """Read Arrow IPC files (Feather v2) and streams in the workers, record batches per task.

    ```python
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.feather as feather

    import aiomr
    from aiomr.sources import arrow


    def total(batch: pa.RecordBatch) -> int:
        return pc.sum(batch["count"]).as_py() or 0


    async def main() -> None:
        table = pa.table({"word": ["a", "b", "a"], "count": [1, 2, 3]})
        feather.write_feather(table, "counts.feather")
        source = arrow("counts.feather", columns=["count"])
        print(await aiomr.map_reduce(source, total, lambda a, b: a + b, mode="batches"))  # 6


    if __name__ == "__main__":
        aiomr.run(main())
    ```

    The caller reads only each file's footer and plans ranges of record batches; each
    worker memory-maps its file and reads its batches itself (without a copy where the
    file is not compressed), and hands the mapper their rows: as record batches
    (``mode="batches"``, in the job's ``batch_format``) or as dicts (``mode="record"``,
    ``mode="chunk"``). A file in the stream format (no footer) is read whole by one task.

    Args:
        paths: a file, a glob (``data/*.arrow``), a directory (every file below it), or an
            iterable of these; every file must be Arrow IPC, in the file or stream format.
        columns: the columns to hand over; ``None``: all.
        filter: a ``pyarrow.compute.Expression`` rows must match, applied in the worker.
        batch_size: rows per record batch, at most (longer batches are sliced, not copied).
        split_size: bytes per task, whole record batches of one file; ``None``: sized for
            the workers.

    Requires pyarrow (``pip install 'aiomr[arrow]'``); without it this raises `ImportError`
    with that hint.
    """
    return ArrowSource(
        paths, columns=columns, filter=filter, batch_size=batch_size, split_size=split_size
    )
