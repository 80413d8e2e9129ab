"""A vectorised hash of key columns, the same in every process: which partition a key goes to.

pyarrow has no hash kernel, so the hash is computed with numpy over the columns' buffers:
strings and binaries as a polynomial over their bytes, numbers and times by their value
(every integer width as a 64-bit integer, ``-0.0`` as ``0.0``, every NaN as one NaN),
dictionaries by their decoded values, nulls as one constant; several key columns are mixed
in order. Each row costs a few numpy operations over its bytes, never a Python call.

Only determinism matters for correctness: rows with equal keys get equal hashes in every
worker and every run, so a key's partial states all meet in one partition. Distinct keys
that collide merely share a partition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .imports import require

__all__ = ["hash_keys", "partition_of"]

_SLICE_BYTES = 128 << 10
"""Bytes of strings hashed at once. The polynomial needs about 40 bytes of scratch per
byte: slices this small stay in the CPU cache (7x faster here than 8 MiB slices) and keep each
numpy call, which may hold the GIL, to about a millisecond."""
_MULTIPLIER = 0x100000001B3  # odd: every power of it is odd, so no byte is ever dropped
_NULL = 0x9E3779B97F4A7C15
_LEVEL_SALT = 0xD6E8FEB86659FD93


def _np() -> Any:
    return require("numpy", "a key-based columnar aggregation")


def _mix(values: Any) -> Any:
    """Spread every input bit over the output's (murmur3's 64-bit finaliser), in place."""
    np = _np()
    values ^= values >> np.uint64(33)
    values *= np.uint64(0xFF51AFD7ED558CCD)
    values ^= values >> np.uint64(33)
    values *= np.uint64(0xC4CEB9FE1A85EC53)
    values ^= values >> np.uint64(33)
    return values


def _powers(count: int) -> Any:
    """``_MULTIPLIER ** k`` modulo 2**64 for k in [0, count)."""
    np = _np()
    powers = np.full(max(count, 1), _MULTIPLIER, dtype=np.uint64)
    powers[0] = 1
    return np.cumprod(powers, dtype=np.uint64)


def _hash_binary(array: Any) -> Any:
    """Hash each value of a string or binary array (nulls give anything: masked later)."""
    np = _np()
    pa = require("pyarrow", "a key-based columnar aggregation")
    large = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
    width = np.int64 if large else np.int32
    rows = len(array)
    _, offsets_buffer, data_buffer = array.buffers()[:3]
    offsets = np.frombuffer(offsets_buffer, dtype=width)[array.offset : array.offset + rows + 1]
    offsets = offsets.astype(np.int64)
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else None
    out = np.empty(rows, dtype=np.uint64)
    first = 0
    while first < rows:  # slices of about _SLICE_BYTES, at least one row each
        limit = offsets[first] + _SLICE_BYTES
        last = max(first + 1, int(np.searchsorted(offsets, limit, side="right")) - 1)
        last = min(last, rows)
        out[first:last] = _polynomial(data, offsets[first : last + 1])
        first = last
    return out


def _polynomial(data: Any, offsets: Any) -> Any:
    np = _np()
    starts = offsets[:-1] - offsets[0]
    lengths = np.diff(offsets)
    total = int(offsets[-1] - offsets[0])
    sums = np.zeros(len(lengths), dtype=np.uint64)
    if total and data is not None:
        values = data[offsets[0] : offsets[-1]].astype(np.uint64)
        position = np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)
        terms = np.append(values * _powers(int(lengths.max()))[position], np.uint64(0))
        sums = np.add.reduceat(terms, starts)
        sums[lengths == 0] = 0  # reduceat gives the next term for an empty range
    return _mix(sums ^ (lengths.astype(np.uint64) * np.uint64(_NULL)))


def _hash_array(array: Any, name: str) -> Any:
    """Hash each value of one key column (a ``pyarrow.Array``)."""
    np = _np()
    pa = require("pyarrow", "a key-based columnar aggregation")
    pc = require("pyarrow.compute", "a key-based columnar aggregation")
    kind = array.type
    if pa.types.is_dictionary(kind):
        return _hash_array(array.cast(kind.value_type), name)
    if pa.types.is_decimal(kind):
        return _hash_array(array.cast(pa.string()), name)
    if pa.types.is_null(kind):
        return np.zeros(len(array), dtype=np.uint64)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _hash_binary(array)
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return _hash_binary(array)
    if pa.types.is_fixed_size_binary(kind):
        return _hash_binary(array.cast(pa.binary()))
    if pa.types.is_interval(kind):  # a fixed-width value of 16 bytes: hashed as its bytes
        width = kind.bit_width // 8
        return _hash_binary(array.view(pa.binary(width)).cast(pa.binary()))
    if pa.types.is_string_view(kind) or pa.types.is_binary_view(kind):
        wide = pa.large_string() if pa.types.is_string_view(kind) else pa.large_binary()
        return _hash_binary(array.cast(wide))
    if pa.types.is_floating(kind):
        values = pc.fill_null(array.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False)
        values = np.where(values == 0.0, 0.0, values)  # -0.0 == 0.0
        values = np.where(np.isnan(values), np.nan, values)  # one NaN
        return _mix(values.astype(np.float64).view(np.uint64).copy())
    if pa.types.is_boolean(kind):
        array = array.cast(pa.uint8())
    elif pa.types.is_temporal(kind):
        array = array.view(pa.int64()) if kind.bit_width == 64 else array.view(pa.int32())
    elif not pa.types.is_integer(kind):
        raise TypeError(
            f"cannot partition by key column {name!r} of type {kind}: key columns must be "
            "strings, binaries, numbers, booleans, dates or times"
        )
    values = pc.fill_null(array, 0).to_numpy(zero_copy_only=False)
    return _mix(values.astype(np.int64).view(np.uint64).copy())


def hash_keys(table: Any, keys: Sequence[str], level: int = 0) -> Any:
    """A ``numpy.uint64`` hash of each row's key columns; ``level`` salts it, so rows of one
    partition spread again over the partitions of a further level."""
    np = _np()
    rows = table.num_rows
    hashed = np.full(rows, _LEVEL_SALT * (level + 1) % (1 << 64), dtype=np.uint64)
    for name in keys:
        column = table[name]
        array = column.combine_chunks() if hasattr(column, "combine_chunks") else column
        values = _hash_array(array, name)
        if array.null_count:
            values[array.is_null().to_numpy(zero_copy_only=False)] = np.uint64(_NULL)
        hashed *= np.uint64(_MULTIPLIER)
        hashed ^= values
        hashed = _mix(hashed)
    return hashed


def partition_of(table: Any, keys: Sequence[str], partitions: int, level: int = 0) -> Any:
    """The partition, in ``[0, partitions)``, of each row of ``table`` (a ``numpy`` array)."""
    np = _np()
    return (hash_keys(table, keys, level) % np.uint64(partitions)).astype(np.int64)
