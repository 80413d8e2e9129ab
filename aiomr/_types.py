"""Type variables and protocols for the callables users hand to aiomr."""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from typing import Literal, Protocol, TypeAlias, TypeVar

__all__ = [
    "A",
    "K",
    "Mapper",
    "Mode",
    "R",
    "Reducer",
    "Source",
    "T",
    "V",
]

R = TypeVar("R")
"""A record, as the source yields it."""
V = TypeVar("V")
"""A mapped value or partial result."""
A = TypeVar("A")
"""An accumulator."""
K = TypeVar("K")
"""A key of a key-based job."""
T = TypeVar("T")
"""The result of a group reducer."""

R_contra = TypeVar("R_contra", contravariant=True)
V_co = TypeVar("V_co", covariant=True)

Mode: TypeAlias = Literal["record", "chunk", "blocks"]
"""``"record"``: the mapper sees one record; ``"chunk"``: a list of records; ``"blocks"`` (file
sources only): an iterator over a split's raw ``bytes`` blocks."""

Source: TypeAlias = Iterable[R] | AsyncIterable[R]
"""Anything aiomr can pull records from: a plain or an asynchronous iterable."""


class Mapper(Protocol[R_contra, V_co]):
    """Turn one record (or, in chunk mode, one list of records) into a value."""

    def __call__(self, record: R_contra, /) -> V_co: ...


class Reducer(Protocol[V]):
    """Combine two values into one; must be associative (and commutative unless ordered)."""

    def __call__(self, left: V, right: V, /) -> V: ...
