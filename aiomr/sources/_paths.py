"""Turn paths, globs and directories into a sorted list of files; recognise compression."""

from __future__ import annotations

import bz2
import glob
import gzip
import lzma
import os
import stat
from collections.abc import Callable, Iterable
from typing import IO, Any

__all__ = ["COMPRESSED", "PathsLike", "expand_paths", "open_binary", "is_compressed"]

PathsLike = str | os.PathLike[str] | Iterable[str | os.PathLike[str]]
"""One path, glob or directory, or several."""

COMPRESSED: dict[str, Callable[..., Any]] = {
    ".gz": gzip.open,
    ".bz2": bz2.open,
    ".xz": lzma.open,
}
"""Suffixes decompressed transparently, and how."""

_GLOB_CHARS = frozenset("*?[")


def is_compressed(path: str) -> bool:
    """Whether ``path`` names a file that aiomr decompresses while reading."""
    return os.path.splitext(path)[1].lower() in COMPRESSED


def open_binary(path: str) -> IO[bytes]:
    """Open ``path`` for reading bytes, decompressing gzip, bzip2 and xz by suffix."""
    opener = COMPRESSED.get(os.path.splitext(path)[1].lower())
    if opener is None:
        return open(path, "rb")
    stream: IO[bytes] = opener(path, "rb")
    return stream


def _one(item: str | os.PathLike[str]) -> list[str]:
    path = os.fspath(item)
    try:  # one stat per path: a job over thousands of small files names each one
        mode: int | None = os.stat(path).st_mode
    except (OSError, ValueError):
        mode = None
    if mode is None and not _GLOB_CHARS.isdisjoint(path):
        matches = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
        if not matches:
            raise FileNotFoundError(f"{path}: no file matches this pattern")
        return matches
    if mode is not None and stat.S_ISDIR(mode):
        found: list[str] = []
        for root, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found.extend(os.path.join(root, f) for f in files if not f.startswith("."))
        return sorted(found)
    if mode is None:
        raise FileNotFoundError(f"{path}: no such file or directory")
    return [path]


def expand_paths(paths: PathsLike) -> list[str]:
    """Return every file named by ``paths``, in a stable order.

    A directory stands for the files below it (hidden ones skipped), a pattern with ``*``,
    ``?`` or ``[`` for the files it matches (``**`` recurses). Raises `FileNotFoundError`
    naming the first path that matches nothing; `TypeError` when ``paths`` is not a path or
    an iterable of paths. Blocking: call it off the event loop.
    """
    items: list[Any]
    if isinstance(paths, str | os.PathLike):
        items = [paths]
    elif isinstance(paths, Iterable):
        items = list(paths)
    else:
        raise TypeError(
            f"paths must be a path or an iterable of paths, got {type(paths).__qualname__}"
        )
    files: list[str] = []
    for item in items:
        if not isinstance(item, str | os.PathLike):
            raise TypeError(f"paths must be str or os.PathLike, got {type(item).__qualname__}")
        files.extend(_one(item))
    return files
