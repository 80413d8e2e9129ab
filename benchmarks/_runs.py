"""What the benchmarks that run each contender in a process of its own share.

Their contenders record every ``aiomr-*`` directory they make (to check none outlives the
run) and their own CPU time; their reports take medians over runs that may have failed
(NaN) and print per-run figures.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from typing import Any

import _common

__all__ = ["median_of", "na", "own_cpu", "per_run", "record_aiomr_directories"]


def record_aiomr_directories(created: list[str]) -> Callable[[str, tuple[Any, ...]], None]:
    """Return an audit hook that appends every ``aiomr-*`` directory made in this process."""

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if (
            event == "os.mkdir"
            and isinstance(args[0], str)
            and args[2] in (None, -1)
            and os.path.basename(args[0]).startswith("aiomr-")
        ):
            created.append(os.path.abspath(args[0]))

    return hook


def own_cpu() -> float:
    """CPU seconds of this process alone (its threads included, its children not)."""
    t = os.times()
    return t.user + t.system


def median_of(values: Iterable[float | None]) -> float:
    """The median of the figures that are there (not None, not NaN); NaN when none is."""
    there = [v for v in values if v is not None and not math.isnan(v)]
    return _common.median(there) if there else math.nan


def na(value: float, spec: str, unit: str = "") -> str:
    """Format ``value`` with ``spec`` and ``unit``, or ``n/a`` for NaN."""
    return "n/a" if math.isnan(value) else f"{value:{spec}}{unit}"


def per_run(values: list[int]) -> str:
    """A median and the per-run values: ``2 (2, 2, 3)``."""
    if not values:
        return "n/a"
    return f"{_common.median(values):g} ({', '.join(str(v) for v in values)})"
