"""What a job reads: files of the data directory, checked, or an upload spooled to disk.

Both end as paths the workers open themselves (`aiomr.sources.files`): the service sends
them only byte ranges, and never holds a whole upload in memory (it goes to disk as it
arrives).

The data directory is the only part of the disk a request can name. A path is refused
when it is absolute (``400``), when it resolves outside the directory, through ``..`` or
a symbolic link (``403``, whether or not the target exists, so the answer tells nothing
about the rest of the disk), or when it holds glob characters, which `aiomr.sources.files`
would expand (``400``). A directory stands for the regular files below it, each checked
the same way.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
from collections.abc import AsyncIterable

import aiofiles
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

__all__ = ["resolve_data_path", "spool_chunks", "spool_upload"]

_GLOB_CHARS = frozenset("*?[")
_WRITE_BYTES = 1024 * 1024
"""Bytes gathered before one write: one thread hop of aiofiles per MiB, not per packet."""


async def resolve_data_path(data_dir: pathlib.Path, requested: object) -> list[str]:
    """Return the files ``requested`` names inside ``data_dir``, or raise `HTTPException`.

    Runs the file system calls on a helper thread. The files are returned resolved, with
    every symbolic link followed, so the workers open exactly what was checked.
    """
    if not isinstance(requested, str) or not requested.strip():
        raise HTTPException(400, "path must be a non-empty string")
    if "\x00" in requested:
        raise HTTPException(400, "path must not contain NUL characters")
    if pathlib.PurePosixPath(requested).is_absolute() or pathlib.PureWindowsPath(requested).drive:
        raise HTTPException(400, "path must be relative to the data directory")
    if _GLOB_CHARS.intersection(requested):
        raise HTTPException(400, "path must not contain glob characters (*, ?, [)")
    return await asyncio.to_thread(_resolve, data_dir, requested)


def _resolve(data_dir: pathlib.Path, requested: str) -> list[str]:
    root = data_dir.resolve()
    target = (root / requested).resolve()
    if not target.is_relative_to(root):
        raise HTTPException(403, f"{requested}: outside the data directory")
    if target.is_file():
        return [str(target)]
    if not target.is_dir():
        raise HTTPException(404, f"{requested}: no such file in the data directory")
    found: list[str] = []
    for folder, dirs, names in os.walk(target):
        # Hidden entries are skipped, as aiomr.sources.files does for a directory.
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            entry = pathlib.Path(folder, name)
            resolved = entry.resolve()
            if not resolved.is_relative_to(root):
                shown = entry.relative_to(root)
                raise HTTPException(403, f"{shown}: links outside the data directory")
            if resolved.is_file():
                found.append(str(resolved))
    if not found:
        raise HTTPException(400, f"{requested}: the directory holds no files")
    return found


async def spool_chunks(chunks: AsyncIterable[bytes], path: pathlib.Path) -> int:
    """Write ``chunks`` to a new file at ``path``; return the bytes written.

    The size limit is enforced upstream, by the ``receive`` channel the chunks come from
    (`examples.service.limits.BodyLimit`); here they only go to disk, a MiB at a time.
    """
    written = 0
    pending: list[bytes] = []
    pending_bytes = 0
    async with aiofiles.open(path, "xb") as f:
        async for chunk in chunks:
            pending.append(chunk)
            pending_bytes += len(chunk)
            if pending_bytes >= _WRITE_BYTES:
                await f.write(b"".join(pending))
                written += pending_bytes
                pending.clear()
                pending_bytes = 0
        if pending:
            await f.write(b"".join(pending))
            written += pending_bytes
    return written


async def spool_upload(upload: UploadFile, path: pathlib.Path) -> int:
    """Copy an uploaded file (already spooled by the form parser) to ``path``."""

    async def blocks() -> AsyncIterable[bytes]:
        while block := await upload.read(_WRITE_BYTES):
            yield block

    return await spool_chunks(blocks(), path)
