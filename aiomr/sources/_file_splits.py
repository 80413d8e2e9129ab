"""Byte-range input splits: the caller sends coordinates, each worker reads its own range.

Cutting (`SplitCutter`, on a helper thread, one split at a time as the job asks for them):
every local uncompressed file is cut into ranges of about ``split_size`` bytes, each boundary
moved forward to just after the next record end (a read of a few kilobytes per boundary), so
every range holds whole records and every record belongs to exactly one range. A record ends
at a newline; a CSV record only at a newline after an even number of quote characters since
the start of the file (a quoted field may hold newlines), so cutting CSV counts the quotes of
every byte before each boundary: one extra read of the file by the caller, in C
(`bytes.count`), at disk or page-cache speed. Files smaller than ``split_size`` are packed
together, several per split, so a directory of small files does not cost one task each. A
compressed file cannot be cut: it is one split, decompressed by the worker that reads it.
The size, modification time and identity of every file are recorded as it is planned, and
checked by the worker that reads it (see `aiomr.sources._segments`).

Reading: `aiomr.sources._split_reader.SplitReader` in the worker.
"""

from __future__ import annotations

import codecs
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from .._types import BatchFormat
from ._locate import COUNT_BLOCK
from ._parse import Format, Parser, make_parser
from ._paths import PathsLike, expand_paths, is_compressed
from ._segments import BLOCK_SIZE, Segment, Split, read_blocks, stamp_of
from ._split_reader import SplitReader
from ._split_source import SplitSource

__all__ = [
    "BLOCK_SIZE",
    "FileSource",
    "Segment",
    "Split",
    "SplitCutter",
    "SplitReader",
    "files",
    "plan_splits",
    "read_blocks",
]

_PROBE = 64 * 1024
"""Bytes read at a boundary to find the next newline (more if a line is longer)."""
AUTO_SPLITS_PER_WORKER = 4
"""With ``split_size=None``, aim for this many splits per worker: enough to balance uneven
ranges, few enough that per-split merging stays cheap."""
MIN_AUTO_SPLIT = 1 << 20
MAX_AUTO_SPLIT = 64 << 20


def auto_split_size(total: int, workers: int) -> int:
    """Bytes per split for ``total`` bytes on ``workers`` workers, when none is given.

    At least `AUTO_SPLITS_PER_WORKER` splits per worker, none over `MAX_AUTO_SPLIT`, and a
    multiple of ``workers`` splits of equal size: with 15 splits on 2 workers, one worker
    would sit idle through the last round, and a short last split wastes the same way.
    """
    workers = max(1, workers)
    count = max(workers * AUTO_SPLITS_PER_WORKER, -(-total // MAX_AUTO_SPLIT))
    count = -(-count // workers) * workers
    return max(MIN_AUTO_SPLIT, -(-total // count))


def _next_line_start(f: IO[bytes], position: int, size: int) -> int:
    """Return the offset just after the first newline at or after ``position``."""
    f.seek(position)
    while position < size:
        data = f.read(_PROBE)
        if not data:
            break
        cut = data.find(b"\n")
        if cut >= 0:
            return int(position + cut + 1)
        position += len(data)
    return size


def _next_record_start(
    f: IO[bytes], start: int, odd: bool, position: int, size: int
) -> tuple[int, bool]:
    """Return the offset just after the first CSV record end at or after ``position``, and
    the quote parity there; ``odd`` is the parity of the quotes before ``start``."""
    f.seek(start)
    at = start
    while at < position:  # the quotes up to the boundary: the one full read of the file
        data = f.read(min(COUNT_BLOCK, position - at))
        if not data:
            break
        odd ^= bool(data.count(b'"') & 1)
        at += len(data)
    while at < size:
        data = f.read(_PROBE)
        if not data:
            break
        begin = 0
        while (newline := data.find(b"\n", begin)) >= 0:
            odd ^= bool(data.count(b'"', begin, newline) & 1)
            begin = newline + 1
            if not odd:
                return at + begin, False
        odd ^= bool(data.count(b'"', begin) & 1)
        at += len(data)
    return size, odd


class SplitCutter:
    """Cut ``paths`` into record-aligned splits one at a time, each of the size asked then.

    `cut` is blocking (it reads a few kilobytes at a boundary; for CSV, ``quoted``, every
    byte before it): call it on a helper thread. Cutting lazily lets a job size each split by
    what the earlier ones took (see `aiomr._chunker.ChunkSizer.split_bytes`); with one size
    throughout it cuts exactly what `plan_splits` plans.
    """

    def __init__(self, paths: list[str], *, quoted: bool = False) -> None:
        self._paths = paths
        stats = [os.stat(path) for path in paths]
        self._sizes = [stat.st_size for stat in stats]
        self._stamps = [stamp_of(stat) for stat in stats]
        self._quoted = quoted
        self._file = 0
        self._offset = 0
        self._odd = False  # CSV: the parity of the quotes before _offset in the file
        self._count = 0
        self.total = sum(self._sizes)
        """Bytes on disk the splits will cover (compressed files count their file size)."""

    def cut(self, split_size: int) -> Split | None:
        """Return the next split of about ``split_size`` bytes, or ``None`` at the end.

        Files smaller than ``split_size`` are packed together while they fit; a larger file
        is cut into ranges of ``split_size``, each ending just after a record; a compressed
        file is a split of its own.
        """
        packed: list[Segment] = []
        packed_bytes = 0
        while self._file < len(self._paths):
            path, size = self._paths[self._file], self._sizes[self._file]
            stamp = self._stamps[self._file]
            if self._offset == 0:  # at the start of a file: pack it, or cut it
                if is_compressed(path):
                    if packed:
                        break
                    self._file += 1
                    return self._split((Segment(path, 0, -1, size, stamp),))
                if size == 0:
                    self._file += 1
                    continue
                if size < split_size:
                    if packed and packed_bytes + size > split_size:
                        break
                    packed.append(Segment(path, 0, size, size, stamp))
                    packed_bytes += size
                    self._file += 1
                    continue
                if packed:
                    break
            start = self._offset
            if size - start <= split_size:
                end = size
            else:
                with open(path, "rb") as f:
                    boundary = start + split_size - 1
                    if self._quoted:
                        end, self._odd = _next_record_start(f, start, self._odd, boundary, size)
                    else:
                        end = _next_line_start(f, boundary, size)
            self._offset = end
            if end >= size:
                self._file, self._offset, self._odd = self._file + 1, 0, False
            return self._split((Segment(path, start, end, size, stamp),))
        return self._split(tuple(packed)) if packed else None

    def _split(self, segments: tuple[Segment, ...]) -> Split:
        split = Split(self._count, segments)
        self._count += 1
        return split


def plan_splits(paths: list[str], split_size: int, *, quoted: bool = False) -> list[Split]:
    """Cut ``paths`` into record-aligned splits of about ``split_size`` bytes (blocking)."""
    cutter = SplitCutter(paths, quoted=quoted)
    return list(iter(lambda: cutter.cut(split_size), None))


class FileSource(SplitSource):
    """Files read by the workers themselves, in record-aligned byte ranges (see `files`)."""

    def __init__(
        self,
        paths: PathsLike,
        *,
        split_size: int | None,
        encoding: str | None,
        errors: str,
        parser: Parser | None,
    ) -> None:
        if split_size is not None and split_size < 1:
            raise ValueError("split_size must be >= 1")
        if encoding is not None:
            codecs.lookup(encoding)
        self.paths_arg = paths
        self.split_size = split_size
        self.reader: SplitReader = SplitReader(encoding, errors, parser)
        self.types: dict[str, Any] | None = None
        """``mode="batches"``: the Arrow types of some columns, the others inferred."""
        self.columns: list[str] | None = None
        """``mode="batches"``: the columns the batches hold; ``None``: all."""

    def cutter(self, workers: int) -> tuple[SplitCutter, int]:
        """Expand the paths (blocking); return a cutter for them and the split size to use
        for ``workers`` workers: ``split_size``, or `auto_split_size` of the total."""
        cutter = SplitCutter(expand_paths(self.paths_arg), quoted=self.reader.quoted)
        size = self.split_size
        if size is None:
            size = auto_split_size(cutter.total, workers)
        return cutter, size

    def batch_reader(self) -> Any:
        """For TSV, CSV and JSON Lines: a reader of record batches through pyarrow
        (`aiomr._columnar.text_reader`); ``None`` for plain lines."""
        parser = self.reader.parser
        if parser is None:
            return None
        from .._columnar.imports import require
        from .._columnar.text_reader import TextBatchReader

        require("pyarrow.csv", "mode='batches' over files")
        if not isinstance(self.paths_arg, str | os.PathLike | list | tuple):
            raise TypeError(
                "mode='batches' needs the paths as a path or a list of paths, "
                f"got {type(self.paths_arg).__qualname__}"
            )
        return TextBatchReader(self.reader, self.paths_arg, self.types, self.columns)

    def task_body(
        self,
        mode: str,
        mapper: Callable[[Any], Any],
        reducer: Callable[[Any, Any], Any],
        on_error: str,
        batch_format: BatchFormat = "arrow",
    ) -> Callable[[Any, int], Any]:
        """As for `SplitSource`; ``mode="blocks"`` hands the mapper checked blocks."""
        if mode != "blocks":
            return super().task_body(mode, mapper, reducer, on_error, batch_format)
        parser = self.reader.parser
        if parser is not None and parser.format != "tsv":
            raise ValueError(
                f"mode='blocks' hands the mapper raw bytes and checks only TSV lines; "
                f"format={parser.format!r} records are checked by parsing them: "
                "use mode='record' or mode='chunk'"
            )
        checked = parser is not None and (parser.fields is not None or parser.header)
        if on_error != "raise" and not checked:
            raise ValueError(
                f"on_error={on_error!r} with mode='blocks' needs a source that checks every "
                "line of a block before the mapper sees it: "
                "aiomr.sources.files(..., format='tsv', fields=N) (or header=True)"
            )
        from ._file_blocks import map_file_blocks

        return functools.partial(map_file_blocks, self.reader, mapper, on_error != "raise")


def files(
    paths: PathsLike,
    *,
    split_size: int | None = None,
    encoding: str | None = "utf-8",
    errors: str = "strict",
    format: Format | None = None,
    fields: int | None = None,
    convert: Callable[[Any], Any] | None = None,
    header: bool = False,
    names: Sequence[Any] | None = None,
    types: Mapping[str, Any] | None = None,
    columns: Sequence[str] | None = None,
) -> FileSource:
    """Read local files as records, each worker reading its own byte ranges.

    The fast path for files on a disk the workers can see: the caller only cuts the files
    into record-aligned ranges and sends their coordinates; workers open, read, decode and
    parse. The caller's memory and CPU stay flat whatever the input size.

    ```python
    import operator, aiomr

    def words(line: str):
        for word in line.split():
            yield word, 1

    async def main() -> None:
        counts = await aiomr.map_reduce_by_key(aiomr.sources.files("books/"), words, operator.add)
    ```

    With ``mode="record"`` (the default) the mapper sees one line (or parsed row) at a time;
    with ``mode="chunk"`` a list of them (one block, about 64 KiB of input); with
    ``mode="blocks"`` (`aiomr.map_reduce` only) an iterator over the split's raw ``bytes``
    blocks, each ending at a line end, for hand-tuned loops: with ``format="tsv"`` and
    ``fields=N`` (or a header) every line of every block is checked first, and
    ``on_error="skip"`` cuts bad lines out.

    Args:
        paths: paths, globs or directories, as for `aiomr.sources.lines`.
        split_size: bytes per split; ``None`` aims at four splits per worker (between 1 and
            64 MiB), a multiple of the workers in all, of even size, and on a shared
            `aiomr.Engine` at most what its ``split_seconds`` reads. Smaller files are
            packed several per split; compressed files (gzip, bzip2, xz) are one split
            each, decompressed by the worker.
        encoding: decode records with it; ``None`` gives ``bytes`` (and, with
            ``format="tsv"``, rows of ``bytes`` fields).
        errors: as for `bytes.decode`; ``"strict"`` raises `aiomr.RecordError` naming the
            record as ``path:LINE (byte OFFSET)``.
        format: ``"tsv"``, ``"csv"`` or ``"jsonl"`` to parse each record in the workers,
            as for `aiomr.sources.lines`; CSV records may hold newlines in quoted fields.
        fields: for TSV and CSV, the number of fields every row must have.
        convert: applied to each parsed row in the workers.
        header: TSV and CSV: the first record of every file names the fields; rows
            become dicts.
        names: TSV and CSV: the field names (rows become dicts); with ``header=True``,
            the header every file must have.
        types: ``mode="batches"`` only: the Arrow types of some columns, by name, as
            ``pyarrow.DataType`` or a name such as ``"string"`` or ``"int64"``; the others
            are inferred from the top of the first file (see
            [columnar batches](concepts/columnar.md)).
        columns: ``mode="batches"`` only: the columns the batches hold; the others' values
            are never converted. ``None``: all.

    A file that is smaller than planned, replaced, or rewritten in place by the time a
    worker reads it raises `aiomr.BrokenInputError`; one that grew is read as planned.
    """
    parser = make_parser(format, fields, convert, header, names)
    if parser is not None and encoding is None and parser.format != "tsv":
        raise ValueError(
            f"format={parser.format!r} parses text: give an encoding "
            "(with encoding=None only format='tsv' splits bytes)"
        )
    if types is not None:
        if parser is None:
            raise ValueError("types= names the columns of TSV, CSV or JSON Lines: give a format")
        if not isinstance(types, Mapping) or not all(isinstance(k, str) for k in types):
            raise TypeError(f"types must map column names to Arrow types, got {types!r}")
        types = dict(types)
    if columns is not None:
        if parser is None:
            raise ValueError("columns= names columns of TSV, CSV or JSON Lines: give a format")
        if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
            raise TypeError(f"columns must be a sequence of column names, got {columns!r}")
        columns = list(columns)
        if parser.names is not None and (missing := set(columns) - set(map(str, parser.names))):
            raise ValueError(f"no column {sorted(missing)[0]!r} among names= {list(parser.names)}")
    source = FileSource(
        paths, split_size=split_size, encoding=encoding, errors=errors, parser=parser
    )
    source.types = types
    source.columns = columns
    return source
