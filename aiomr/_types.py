"""Type variables and the mapper's mode, shared by the job functions' signatures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Literal, TypeAlias, TypeVar

__all__ = ["A", "BATCH_FORMATS", "BatchFormat", "K", "Mode", "R", "T", "V"]

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

Mode: TypeAlias = Literal["record", "chunk", "blocks", "batches"]
"""``"record"``: the mapper sees one record; ``"chunk"``: a list of records; ``"blocks"`` (file
sources only): an iterator over a split's raw ``bytes`` blocks; ``"batches"`` (columnar sources
only): one record batch at a time, in the job's ``batch_format``."""

BatchFormat: TypeAlias = Literal["arrow", "polars", "pandas"]
"""What a ``mode="batches"`` mapper receives: a ``pyarrow.RecordBatch``, a
``polars.DataFrame`` or a ``pandas.DataFrame``."""
BATCH_FORMATS: tuple[BatchFormat, ...] = ("arrow", "polars", "pandas")

PairsMapper: TypeAlias = (
    Callable[[R], Iterable[tuple[K, V]]]
    | Callable[[R], Awaitable[Iterable[tuple[K, V]]]]
    | Callable[[R], AsyncIterator[tuple[K, V]]]
)
"""A key-based job's mapper: ``record -> (key, value) pairs``, a plain function or
generator, an ``async def`` function returning the pairs, or an async generator yielding
them."""
