"""A key hash that is the same in every process and every run.

Python's ``hash()`` of ``str`` and ``bytes`` is salted per process (PYTHONHASHSEED), so two
workers would send the same word to different partitions. `stable_hash` instead hashes a
canonical encoding of the key with CRC-32 (C speed, and plenty for spreading keys over a few
dozen partitions; collisions are resolved by equality, never assumed away).

Keys that compare equal hash equal, as for ``hash()``: ``1``, ``1.0``, ``True``,
``Decimal(1)`` and an ``IntEnum`` member of value 1 share one encoding. Supported key types:
``str``, ``bytes``, numbers, ``None``, their subclasses (enums), and tuples or frozensets of
them (nested). Other types fall back to their pickle, which is stable only for types whose
pickle is deterministic; `stable_hash` raises `TypeError` for unhashable keys.
"""

from __future__ import annotations

import contextlib
import itertools
import numbers
import operator
import pickle
import struct
import zlib
from collections.abc import Iterator
from typing import Any

__all__ = ["stable_hash", "stable_hashes"]

_crc32 = zlib.crc32
_STR_SEED = _crc32(b"s")
"""CRC-32 of `_encode`'s tag for a str: continuing from it hashes ``b"s" + text`` without
building that bytes object."""
_utf8 = operator.methodcaller("encode", "utf-8", "surrogatepass")


def _encode(key: Any) -> bytes:
    kind = type(key)
    if kind is str:
        text: str = key
        return b"s" + text.encode("utf-8", "surrogatepass")
    if kind is bytes:
        data: bytes = key
        return b"b" + data
    if kind is int or kind is bool:
        return b"i" + str(int(key)).encode()
    if kind is float:
        if key.is_integer():
            return b"i" + str(int(key)).encode()
        return b"f" + struct.pack("<d", key)
    if key is None:
        return b"n"
    # Subclasses (StrEnum and IntEnum members, named tuples) equal their plain values and
    # must hash as them. ``str.__str__`` gives the plain value whatever ``__str__`` the
    # subclass defines.
    if isinstance(key, str):
        return _encode(str.__str__(key))
    if isinstance(key, bytes):
        return b"b" + bytes(key)
    if isinstance(key, int):
        return b"i" + str(int(key)).encode()
    if isinstance(key, numbers.Number) and not isinstance(key, complex):
        # Decimal, Fraction, NumPy scalars: equal to an int or a float, they must hash as one.
        with contextlib.suppress(TypeError, ValueError, OverflowError):
            if key == int(key):  # type: ignore[call-overload]
                return b"i" + str(int(key)).encode()  # type: ignore[call-overload]
        with contextlib.suppress(TypeError, ValueError, OverflowError):
            if key == float(key):  # type: ignore[arg-type]
                return _encode(float(key))  # type: ignore[arg-type]
    if isinstance(key, tuple):
        parts = [_encode(item) for item in key]
        return b"t" + b"".join(struct.pack("<I", len(p)) + p for p in parts)
    if isinstance(key, frozenset):
        return b"z" + struct.pack("<Q", sum(_crc32(_encode(item)) for item in key))
    hash(key)  # unhashable keys fail here, with Python's own message
    return b"p" + pickle.dumps(key, protocol=4)


def stable_hash(key: Any) -> int:
    """Return a 32-bit hash of ``key`` that is identical across processes and runs."""
    if type(key) is str:  # the common case, kept short; the same bytes as `_encode`'s
        return _crc32(key.encode("utf-8", "surrogatepass"), _STR_SEED)
    return _crc32(_encode(key))


def stable_hashes(keys: list[Any]) -> Iterator[int]:
    """`stable_hash` of each of ``keys``, in order, lazily.

    When every key is a ``str`` (a word count's), the hashes are computed in C, with no
    Python call per key.
    """
    if set(map(type, keys)) == {str}:
        return map(_crc32, map(_utf8, keys), itertools.repeat(_STR_SEED))
    return map(stable_hash, keys)
