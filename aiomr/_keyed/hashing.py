"""A key hash that is the same in every process and every run.

Python's ``hash()`` of ``str`` and ``bytes`` is salted per process (PYTHONHASHSEED), so two
workers would send the same word to different partitions. `stable_hash` instead hashes a
canonical encoding of the key with CRC-32 (C speed, and plenty for spreading keys over a few
dozen partitions; collisions are resolved by equality, never assumed away).

Keys that compare equal hash equal, as for ``hash()``. Numbers are encoded by Python's own
numeric hash, which is not salted and which the language makes equal for equal numbers of
every type: ``1``, ``1.0``, ``True``, ``1+0j``, ``Decimal(1)``, ``Fraction(1)`` and an
``IntEnum`` member of value 1 share one encoding, and an int of any size costs one pass over
its digits (no decimal string). Supported key types: ``str``, ``bytes``, numbers, ``None``,
their subclasses (enums), and tuples or frozensets of them (nested). Other types fall back to
their pickle, which is stable only for types whose pickle is deterministic; `stable_hash`
raises `TypeError` for unhashable keys.

NaN keys are refused (`NotEqualToItself`): a NaN is not equal to itself, so a dict keeps two
NaN objects apart unless they are the very same object, and after pickling they never are.
No answer could then be what a dict in the caller would give, so there is none.
"""

from __future__ import annotations

import itertools
import math
import numbers
import operator
import pickle
import struct
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["NotEqualToItself", "refuse_nan", "stable_hash", "stable_hashes"]

_crc32 = zlib.crc32
_STR_SEED = _crc32(b"s")
"""CRC-32 of `_encode`'s tag for a str: continuing from it hashes ``b"s" + text`` without
building that bytes object."""
_NUMBER_SEED = _crc32(b"h")
"""The same for a number's tag."""
_utf8 = operator.methodcaller("encode", "utf-8", "surrogatepass")
_pack_hash = struct.Struct("<q").pack
"""A numeric hash as 8 bytes: ``hash()`` of a number fits a signed 64-bit int on 64-bit
builds (`sys.hash_info.width`), where the hash is the value modulo the Mersenne prime
2**61 - 1."""
_PLAIN = frozenset({str, bytes, int, bool, type(None)})
"""Key types that cannot hold a NaN."""


class NotEqualToItself(ValueError):
    """A key is, or holds, a NaN; ``part`` is the NaN."""

    def __init__(self, part: Any) -> None:
        super().__init__(f"{part!r} is not equal to itself")
        self.part = part


def _number(hashed: int) -> bytes:
    return b"h" + _pack_hash(hashed)


def _rational_hash(numerator: int, denominator: int) -> int:
    """Python's hash of the number ``numerator / denominator``, as `fractions` computes it."""
    modulus = 2**61 - 1
    try:
        inverse = pow(denominator, -1, modulus)
    except ValueError:  # the denominator is a multiple of the modulus: hashed as infinity
        hashed = 314159
    else:
        hashed = abs(numerator) % modulus * inverse % modulus
    hashed = hashed if numerator >= 0 else -hashed
    return -2 if hashed == -1 else hashed


def _other_number(key: Any) -> bytes | None:
    """Encode a number of another type than int, float and complex (Decimal, Fraction,
    NumPy scalars) as the int, float or complex it equals; None if it equals none."""
    if key != key:
        raise NotEqualToItself(key)
    ratio = getattr(key, "as_integer_ratio", None)
    if ratio is not None:
        try:
            numerator, denominator = ratio()
        except (OverflowError, ValueError, TypeError):  # an infinity
            pass
        else:
            return _number(_rational_hash(numerator, denominator))
    for convert in (int, float, complex):
        try:
            plain = convert(key)
            if key == plain:
                return _encode(plain)
        except (TypeError, ValueError, OverflowError):
            continue
    return None


def _encode(key: Any) -> bytes:
    kind = type(key)
    if kind is str:
        text: str = key
        return b"s" + text.encode("utf-8", "surrogatepass")
    if kind is bytes:
        data: bytes = key
        return b"b" + data
    if kind is int or kind is bool:
        return _number(hash(key))
    if kind is float:
        if key != key:
            raise NotEqualToItself(key)
        return _number(hash(key))
    if key is None:
        return b"n"
    # Subclasses (StrEnum and IntEnum members, named tuples) equal their plain values and
    # must hash as them. ``str.__str__`` gives the plain value whatever ``__str__`` the
    # subclass defines; ``int.__hash__`` and the like ignore an overridden ``__hash__``.
    if isinstance(key, str):
        return _encode(str.__str__(key))
    if isinstance(key, bytes):
        return b"b" + bytes(key)
    if isinstance(key, int):
        return _number(int.__hash__(key))
    if isinstance(key, float):
        if math.isnan(key):
            raise NotEqualToItself(key)
        return _number(float.__hash__(key))
    if isinstance(key, complex):
        if math.isnan(key.real) or math.isnan(key.imag):
            raise NotEqualToItself(key)
        return _number(complex.__hash__(key))
    if isinstance(key, numbers.Number):
        encoded = _other_number(key)
        if encoded is not None:
            return encoded
    if isinstance(key, tuple):
        parts = [_encode(item) for item in key]
        return b"t" + b"".join(struct.pack("<I", len(p)) + p for p in parts)
    if isinstance(key, frozenset):
        return b"z" + struct.pack("<Q", sum(_crc32(_encode(item)) for item in key))
    hash(key)  # unhashable keys fail here, with Python's own message
    return b"p" + pickle.dumps(key, protocol=4)


def stable_hash(key: Any) -> int:
    """Return a 32-bit hash of ``key`` that is identical across processes and runs.

    Raises `NotEqualToItself` for a key that is or holds a NaN.
    """
    if type(key) is str:  # the common case, kept short; the same bytes as `_encode`'s
        return _crc32(key.encode("utf-8", "surrogatepass"), _STR_SEED)
    return _crc32(_encode(key))


def stable_hashes(keys: list[Any]) -> Iterator[int]:
    """`stable_hash` of each of ``keys``, in order, lazily.

    When every key is a ``str`` (a word count's), or every key an ``int``, the hashes are
    computed in C, with no Python call per key.
    """
    kinds = set(map(type, keys))
    if kinds == {str}:
        return map(_crc32, map(_utf8, keys), itertools.repeat(_STR_SEED))
    if kinds == {int}:
        return map(_crc32, map(_pack_hash, map(hash, keys)), itertools.repeat(_NUMBER_SEED))
    return map(stable_hash, keys)


def _scan(key: Any) -> None:
    if isinstance(key, numbers.Number) and not isinstance(key, int):
        if isinstance(key, complex):
            if math.isnan(key.real) or math.isnan(key.imag):
                raise NotEqualToItself(key)
        elif key != key:
            raise NotEqualToItself(key)
    elif isinstance(key, tuple | frozenset):
        for item in key:
            if type(item) not in _PLAIN:
                _scan(item)


def refuse_nan(keys: Iterable[Any]) -> None:
    """Raise `NotEqualToItself` if a key of ``keys`` is or holds a NaN.

    What `stable_hashes` checks as it hashes, for keys that are not hashed (one partition).
    Keys of types that cannot hold a NaN (a word count's) cost one pass in C.
    """
    keys = keys if isinstance(keys, list) else list(keys)
    if set(map(type, keys)) <= _PLAIN:
        return
    for key in keys:
        if type(key) not in _PLAIN:
            _scan(key)
