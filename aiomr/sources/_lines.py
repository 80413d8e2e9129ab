"""Stream the records of files through the caller, in large blocks, without blocking the loop.

Each file is read in blocks of ``block_size`` bytes, one helper-thread hop per block (never
per line); gzip, bzip2 and xz files are decompressed on the same helper thread, and so is
the cutting: a block is cut after its last record end, and the records before it are split
apart in C (`aiomr.sources._streamed`). A record longer than a block costs time linear in
its length.

As a job's source the records stay raw ``bytes``: the workers decode and parse them
(`aiomr.sources._decode`), so the event loop never decodes, and a record that does not
decode is a bad record like any other. Iterated directly (``async for``), the source decodes
each block's records on the helper thread that reads them, and parses them on a helper
thread too when it has a format.

The source tracks where every record came from (file and line number): a job takes whole
batches with `LineSource.take` (`aiomr.sources.Source`) and keeps those origins, so a
malformed record is reported as ``path:LINE``.

A file is read up to the size it had when opened: a line being appended meanwhile is not
read half-written. A file that ends before that size (truncated while read) raises
`aiomr.BrokenInputError`, as does compressed data that is cut short or corrupt.
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Generic, TypeVar

from .._exceptions import RecordError
from ._decode import HeadedRecord, RecordDecoder
from ._locate import locate
from ._parse import Format, Parser, make_parser
from ._paths import PathsLike, expand_paths
from ._source import Batch, Origin, Source
from ._streamed import StreamedFile

__all__ = ["DEFAULT_BLOCK_SIZE", "LineSource", "Origin", "lines"]

DEFAULT_BLOCK_SIZE = 128 << 10
"""Bytes per read: large enough that the thread hop per block is noise (128 KiB = ~6,000
n-gram lines), small enough that splitting a block, which holds the GIL for one C call, is
short."""

T = TypeVar("T", str, bytes)


class LineSource(Source, Generic[T]):
    """The records of one or more files, as an async iterator (see `lines`).

    Cancellation: closing (``aclose``) at any point closes the open file.
    """

    def __init__(
        self,
        paths: PathsLike,
        *,
        encoding: str | None,
        errors: str,
        block_size: int,
        parser: Parser | None,
    ) -> None:
        if block_size < 1:
            raise ValueError("block_size must be >= 1")
        if encoding is not None:
            codecs.lookup(encoding)  # LookupError now, not in the middle of a job
        self._paths_arg = paths
        self._paths: list[str] | None = None
        self.encoding = encoding
        self.errors = errors
        self.block_size = block_size
        self.format_parser = parser
        """The parser of ``format=``, if any."""
        self.parser: RecordDecoder | None = None
        """Decodes and parses the raw records of `read_batch` in the workers; ``None`` when
        they are the records (bytes, no format)."""
        if encoding is not None or parser is not None:
            self.parser = RecordDecoder(encoding, errors, parser)
        self._quoted = parser is not None and parser.format == "csv"
        self._file: StreamedFile | None = None
        self._file_index = -1
        self._path = ""
        self._line = 0  # lines of the current file handed out so far
        self._names: tuple[Any, ...] | None = None  # the current file's header
        self._seen = False  # the current file's header was read
        self._decode_here = False  # iterated by the caller: records are decoded as read
        self._pending: list[Any] = []
        self._pending_lines: list[int] | None = None  # line of each record, when not in a row
        self._pending_at = 0
        self._pending_origin: tuple[str, int] = ("", 0)
        self._done = False
        self._closed = False
        self._claimed = False

    @property
    def paths(self) -> list[str] | None:
        """The files, once the source has expanded its paths (on first read)."""
        return self._paths

    def claim(self) -> None:
        """Mark the source as read by a job; raise `ValueError` if one already did.

        A source of lines is an iterator, read once like a file object: a second job over it
        would silently see nothing, so it is refused instead.
        """
        if self._claimed:
            raise ValueError(
                "this aiomr.sources.lines(...) source was already read by an earlier job; "
                "a source of lines is read once: call aiomr.sources.lines(...) again"
            )
        self._claimed = True

    def open_batches(self) -> LineSource[T]:
        """Start a job's reading: claim the source (see `claim`) and take from it."""
        self.claim()
        return self

    async def take(self, limit: int) -> Batch:
        """Take up to ``limit`` raw records and where they come from (see `read_batch`)."""
        records, origins = await self.read_batch(limit)
        return Batch(records, tuple(origins), last=len(records) < limit)

    def __aiter__(self) -> AsyncIterator[T]:
        self.claim()
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        # Read by the caller itself: records are decoded on the helper thread that reads
        # them, one block at a time, and parsed there too when there is a format.
        self._decode_here = self.encoding is not None
        parser = self.format_parser
        text_parser = RecordDecoder(None, self.errors, parser) if parser is not None else None
        try:
            while True:
                if self._pending_at >= len(self._pending) and not await self._fill():
                    return
                batch, origins = await self.read_batch(len(self._pending) - self._pending_at)
                if text_parser is not None:
                    batch = await self._parsed(text_parser, batch, origins)
                for record in batch:
                    yield record
        finally:
            await self.aclose()

    async def _parsed(
        self, parser: RecordDecoder, batch: list[Any], origins: list[Origin]
    ) -> list[Any]:
        """Parse a batch of decoded records on a helper thread."""
        try:
            return await asyncio.to_thread(parser.parse_many, batch)
        except RecordError as exc:
            if exc.index is None:
                raise
            where = _origin_of(origins, exc.index)
            raise locate(exc, where) from exc.__cause__ or exc

    async def read_batch(self, limit: int) -> tuple[list[Any], list[Origin]]:
        """Return up to ``limit`` raw records and where runs of them start; empty at the end.

        Raw records are ``bytes`` (or `HeadedRecord` for files with a header): what
        ``parser`` turns into records in the workers.
        """
        out: list[Any] = []
        if self._closed:
            return out, []
        origins: list[Origin] = []
        while len(out) < limit:
            if self._pending_at >= len(self._pending) and not await self._fill():
                break
            take = self._pending[self._pending_at : self._pending_at + (limit - len(out))]
            path, first = self._pending_origin
            if self._pending_lines is None:
                origins.append((len(out), path, first + self._pending_at))
            else:  # records over several lines: a run ends at each of them
                lines = self._pending_lines
                previous = -2
                for k in range(self._pending_at, self._pending_at + len(take)):
                    if lines[k] != previous + 1:
                        origins.append((len(out) + k - self._pending_at, path, first + lines[k]))
                    previous = lines[k]
            self._pending_at += len(take)
            out.extend(take)
        return out, origins

    async def _fill(self) -> bool:
        """Load the next block's records into the pending list; False at the end of all files."""
        while True:
            if self._done:
                return False
            if self._file is None and not await self._next_file():
                self._done = True
                return False
            file = self._file
            assert file is not None
            try:
                block = await asyncio.to_thread(file.read_records, self.block_size)
            except RecordError as exc:  # decoded here: index is the line in the block
                if exc.index is None:
                    raise
                where = f"{self._path}:{self._line + 1 + exc.index}"
                raise locate(exc, where) from exc.__cause__ or exc
            records, starts = block.records, block.starts
            if not records:
                if block.at_end:
                    await self._close_file()
                continue
            first = self._line + 1
            self._line += block.lines
            if self._needs_header():
                records, starts, first = self._take_header(records, starts, first)
                if not records:
                    continue
            pending: list[Any] = records
            if self._names is not None:
                names = self._names
                pending = [HeadedRecord(names, record) for record in records]
            self._pending = pending
            self._pending_lines = starts
            self._pending_at = 0
            self._pending_origin = (self._path, first)
            return True

    def _needs_header(self) -> bool:
        parser = self.format_parser
        return parser is not None and parser.header and self._names is None and not self._seen

    def _take_header(
        self, records: list[bytes], starts: list[int] | None, first: int
    ) -> tuple[list[bytes], list[int] | None, int]:
        """Check the file's header (its first record) and take it off ``records``."""
        parser = self.format_parser
        assert parser is not None
        header: Any = records[0]
        try:
            if self.encoding is not None and isinstance(header, bytes):
                header = RecordDecoder(self.encoding, self.errors, None).decode_many([header])[0]
            names = parser.read_header(header)
        except RecordError as exc:
            raise locate(exc, f"{self._path}:{first}") from exc.__cause__ or exc
        self._seen = True
        if parser.names is None:
            self._names = names
        if starts is None:
            return records[1:], None, first + 1
        return records[1:], starts[1:], first

    async def _next_file(self) -> bool:
        if self._paths is None:
            self._paths = await asyncio.to_thread(expand_paths, self._paths_arg)
        self._file_index += 1
        if self._file_index >= len(self._paths):
            return False
        self._path = self._paths[self._file_index]
        self._line = 0
        self._names = None
        self._seen = False
        decoding = (self.encoding, self.errors) if self._decode_here and self.encoding else None
        self._file = await asyncio.to_thread(StreamedFile, self._path, self._quoted, decoding)
        return True

    async def _close_file(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            await asyncio.to_thread(file.close)

    async def aclose(self) -> None:
        """Close the open file, if any; read nothing more. Idempotent."""
        self._done = True
        self._closed = True
        await self._close_file()


def _origin_of(origins: list[Origin], index: int) -> str:
    for first, path, line in reversed(origins):
        if first <= index:
            return f"{path}:{line + index - first}"
    return f"record {index}"


def lines(
    paths: PathsLike,
    *,
    encoding: str | None = "utf-8",
    errors: str = "strict",
    format: Format | None = None,
    fields: int | None = None,
    convert: Callable[[Any], Any] | None = None,
    header: bool = False,
    names: Sequence[Any] | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> LineSource[Any]:
    """Stream the lines (or parsed records) of files through the caller, as an async iterator.

    ```python
    import aiomr

    async def main() -> None:
        async for line in aiomr.sources.lines("logs/*.log.gz"):
            ...
    ```

    As a job's source, the raw records travel to the workers in chunks and are decoded and
    parsed there; prefer `files` for local files, where each worker reads its own byte range
    and the caller sends only coordinates. `lines` is for what `files` cannot split:
    compressed files read as one stream, files on mounts the workers cannot see, or a caller
    that must look at every record.

    Args:
        paths: a path, a glob (``*``, ``?``, ``[``, ``**``) or a directory (its files,
            recursively, hidden ones skipped), or a list of them; read in that order.
        encoding: decode records with it; ``None`` yields ``bytes``.
        errors: what to do with undecodable bytes, as for `bytes.decode` (``"strict"``
            raises `aiomr.RecordError` naming the file and line, or skips the record under
            ``on_error="skip"``).
        format: ``"tsv"``, ``"csv"`` or ``"jsonl"`` to parse each record (in the workers,
            for a job); malformed records raise `aiomr.RecordError`. A CSV record may hold
            newlines in quoted fields.
        fields: for TSV and CSV, the number of fields every row must have.
        convert: applied to each parsed row.
        header: TSV and CSV: the first record of every file names the fields; rows
            become dicts.
        names: TSV and CSV: the field names (rows become dicts); with ``header=True``,
            the header every file must have.
        block_size: bytes per read.

    Records come without their line ending (``\\n`` or ``\\r\\n``). A missing file raises
    `FileNotFoundError` on the first read.
    """
    parser = make_parser(format, fields, convert, header, names)
    if parser is not None and encoding is None and parser.format != "tsv":
        raise ValueError(
            f"format={parser.format!r} parses text: give an encoding "
            "(with encoding=None only format='tsv' splits bytes)"
        )
    source: LineSource[Any] = LineSource(
        paths, encoding=encoding, errors=errors, block_size=block_size, parser=parser
    )
    return source
