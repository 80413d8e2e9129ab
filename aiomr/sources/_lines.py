"""Stream the lines of files through the caller, in large blocks, without blocking the loop.

Each file is read in blocks of ``block_size`` bytes through aiofiles (one thread hop per block,
never per line); gzip, bzip2 and xz files are decompressed on the same helper thread. A block is
cut after its last newline, decoded once and split into lines in C, so a line never straddles
two decodes (newline bytes cannot occur inside a multi-byte character of an ASCII-compatible
encoding such as UTF-8 or Latin-1).

The source tracks where every line came from (file and line number): aiomr's chunker pulls
whole batches with `LineSource.read_batch` and keeps those origins, so a malformed line is
reported as ``file:line``.
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

import aiofiles

from .._exceptions import RecordError
from ._parse import Format, Parser, make_parser
from ._paths import PathsLike, expand_paths, is_compressed, open_binary

__all__ = ["DEFAULT_BLOCK_SIZE", "LineSource", "Origin", "lines"]

DEFAULT_BLOCK_SIZE = 128 << 10
"""Bytes per read: large enough that the thread hop per block is noise (128 KiB = ~6,000
n-gram lines), small enough that decoding and splitting a block, which happens on the event
loop in one C call each, is short (0.22 ms; 2.8 ms for 1 MiB, which put the n-gram key-value
job's loop lag p99 near 10 ms against 5-6 ms at 128 KiB, at the same speed)."""

T = TypeVar("T", str, bytes)

Origin = tuple[int, str, int]
"""``(index in the batch, path, line number)`` where a run of consecutive lines starts."""


class LineSource(Generic[T]):
    """The lines of one or more files, as an async iterator (see `lines`).

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
        self.parser = parser
        """Applied to each line in the workers (not here), when set."""
        self._file: Any = None
        self._file_index = -1
        self._path = ""
        self._line = 0  # lines of the current file handed out so far
        self._rest = b""
        self._pending: list[Any] = []
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

    def __aiter__(self) -> AsyncIterator[T]:
        self.claim()
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        try:
            while True:
                batch, _ = await self.read_batch(65_536)
                if not batch:
                    return
                for line in batch:
                    yield line
        finally:
            await self.aclose()

    async def read_batch(self, limit: int) -> tuple[list[T], list[Origin]]:
        """Return up to ``limit`` lines and where runs of them start; empty at the end."""
        out: list[T] = []
        if self._closed:
            return out, []
        origins: list[Origin] = []
        while len(out) < limit:
            if self._pending_at >= len(self._pending) and not await self._fill():
                break
            take = self._pending[self._pending_at : self._pending_at + (limit - len(out))]
            path, first = self._pending_origin
            origins.append((len(out), path, first + self._pending_at))
            self._pending_at += len(take)
            out.extend(take)
        return out, origins

    async def _fill(self) -> bool:
        """Load the next block's lines into the pending list; False at the end of all files."""
        while True:
            if self._done:
                return False
            if self._file is None and not await self._next_file():
                self._done = True
                return False
            block = await self._read()
            if block:
                data = self._rest + block
                cut = data.rfind(b"\n") + 1
                if cut == 0:
                    self._rest = data
                    continue
                self._rest = data[cut:]
                chunk = data[: cut - 1]
            elif self._rest:
                chunk, self._rest = self._rest, b""
            else:
                await self._close_file()
                continue
            lines = self._split(chunk)
            self._pending = lines
            self._pending_at = 0
            self._pending_origin = (self._path, self._line + 1)
            self._line += len(lines)
            return True

    def _split(self, chunk: bytes) -> list[Any]:
        # The chunk's final newline is already cut off: a "\r" before it ends a CRLF line.
        if chunk.endswith(b"\r"):
            chunk = chunk[:-1]
        if self.encoding is None:
            if b"\r" in chunk:
                chunk = chunk.replace(b"\r\n", b"\n")
            return chunk.split(b"\n")
        try:
            text = chunk.decode(self.encoding, self.errors)
        except UnicodeDecodeError as exc:
            line = self._line + chunk.count(b"\n", 0, exc.start) + 1
            raise RecordError(
                f"{self._path}:{line}: cannot decode as {self.encoding}: {exc.reason} "
                f"(byte {exc.object[exc.start : exc.start + 1]!r})"
            ) from exc
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        return text.split("\n")

    async def _next_file(self) -> bool:
        if self._paths is None:
            self._paths = await asyncio.to_thread(expand_paths, self._paths_arg)
        self._file_index += 1
        if self._file_index >= len(self._paths):
            return False
        self._path = self._paths[self._file_index]
        self._line = 0
        self._rest = b""
        if is_compressed(self._path):
            self._file = await asyncio.to_thread(open_binary, self._path)
        else:
            self._file = await aiofiles.open(self._path, "rb")
        return True

    async def _read(self) -> bytes:
        if isinstance(self._file, aiofiles.threadpool.binary.AsyncBufferedReader):
            data: bytes = await self._file.read(self.block_size)
            return data
        read: Callable[[int], bytes] = self._file.read
        return await asyncio.to_thread(read, self.block_size)

    async def _close_file(self) -> None:
        file, self._file = self._file, None
        if file is None:
            return
        if isinstance(file, aiofiles.threadpool.binary.AsyncBufferedReader):
            await file.close()
        else:
            await asyncio.to_thread(file.close)

    async def aclose(self) -> None:
        """Close the open file, if any; read nothing more. Idempotent."""
        self._done = True
        self._closed = True
        await self._close_file()


def lines(
    paths: PathsLike,
    *,
    encoding: str | None = "utf-8",
    errors: str = "strict",
    format: Format | None = None,
    fields: int | None = None,
    convert: Callable[[Any], Any] | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> LineSource[Any]:
    """Stream the lines of files through the caller, as an async iterator.

    ```python
    import aiomr

    async def main() -> None:
        async for line in aiomr.sources.lines("logs/*.log.gz"):
            ...
    ```

    As a job's source, the lines travel to the workers in chunks; prefer `files` for local
    files, where each worker reads its own byte range and the caller sends only coordinates.
    `lines` is for what `files` cannot split: compressed files read as one stream, files on
    mounts the workers cannot see, or a caller that must look at every line.

    Args:
        paths: a path, a glob (``*``, ``?``, ``[``, ``**``) or a directory (its files,
            recursively, hidden ones skipped), or a list of them; read in that order.
        encoding: decode lines with it; ``None`` yields ``bytes``.
        errors: what to do with undecodable bytes, as for `bytes.decode` (``"strict"``
            raises `aiomr.RecordError` naming the file and line).
        format: ``"tsv"``, ``"csv"`` or ``"jsonl"`` to parse each line into a record in the
            workers, before the mapper; malformed lines raise `aiomr.RecordError`.
        fields: for TSV and CSV, the number of fields every row must have.
        convert: applied to each parsed row in the workers.
        block_size: bytes per read.

    Lines come without their line ending (``\\n`` or ``\\r\\n``). A missing file raises
    `FileNotFoundError` on the first read.
    """
    parser = make_parser(format, fields, convert)
    if parser is not None and encoding is None:
        raise ValueError("format= parses text: give an encoding")
    source: LineSource[Any] = LineSource(
        paths, encoding=encoding, errors=errors, block_size=block_size, parser=parser
    )
    return source
