"""Checks of arguments that several parts of the API share."""

from __future__ import annotations

__all__ = ["check_seconds"]


def check_seconds(name: str, value: object, *, optional: bool = False) -> None:
    """Raise unless ``value`` is a number of seconds above zero (or ``None``, if optional).

    A bool is refused although it is an int (``timeout=True`` is a mistake, not one second),
    and so is NaN, which is not above zero.
    """
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "a number or None" if optional else "a number"
        raise TypeError(f"{name} must be {kind} of seconds, got {value!r}")
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
