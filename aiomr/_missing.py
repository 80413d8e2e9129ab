"""The "no value" sentinel, in a module of its own so that worker-side code can use it.

A key-based job's spec carries ``initial=MISSING`` into the workers; the marker pickles by
name, so it is the same object there (``is MISSING`` holds on both sides).
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["MISSING"]


class _Missing:
    __slots__ = ()

    def __reduce__(self) -> str:
        return "MISSING"  # unpickles as this module's singleton

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final[Any] = _Missing()
"""Marks "no value": no ``initial`` given, or nothing folded yet."""
