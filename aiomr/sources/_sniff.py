"""Tell text files from binary ones by their first bytes, as ``grep -I`` and git do.

A file is taken as binary when its first `SNIFF_BYTES` bytes hold a NUL byte. Text in
ASCII-compatible encodings (UTF-8, Latin-1, ...) never contains one; compiled code, images,
archives and most other binary formats have one within their first few kilobytes (headers,
offsets and padding are full of zeros). UTF-16 text has NULs too and is taken as binary,
which is right for a job that reads lines as UTF-8. Compressed files (gzip, bzip2, xz) are
judged by their decompressed bytes.

Blocking: call these off the event loop.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence

from ._paths import open_binary

__all__ = ["SNIFF_BYTES", "is_binary", "split_binary"]

SNIFF_BYTES = 8192
"""Bytes read from the start of each file (what git reads to the same end): enough to cross
the header of common binary formats, little enough that sniffing a directory of thousands
of files costs one small read each."""

_SNIFF_THREADS = 8
"""Files sniffed at once: each read is short, so a few threads hide the disk's latency."""


def is_binary(path: str) -> bool:
    """Whether ``path`` looks binary: a NUL byte in its first `SNIFF_BYTES` bytes.

    Raises `OSError` naming the file when it cannot be read (or decompressed).
    """
    try:
        with open_binary(path) as f:
            head = f.read(SNIFF_BYTES)
    except (OSError, EOFError) as exc:  # EOFError: a compressed file cut short
        raise OSError(f"{path}: cannot read: {exc}") from exc
    return b"\0" in head


def split_binary(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """Return ``(text, binary)``: the paths that look like text, and those that look binary,
    each in the order given."""
    if len(paths) <= 1:
        verdicts = [is_binary(path) for path in paths]
    else:
        with concurrent.futures.ThreadPoolExecutor(_SNIFF_THREADS) as threads:
            verdicts = list(threads.map(is_binary, paths))
    text = [path for path, binary in zip(paths, verdicts, strict=True) if not binary]
    binary = [path for path, looks in zip(paths, verdicts, strict=True) if looks]
    return text, binary
