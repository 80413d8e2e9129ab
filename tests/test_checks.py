"""Durations given to the API: numbers of seconds above zero, named in the error."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

import aiomr
from aiomr._checks import check_seconds


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, ValueError),
        (-0.5, ValueError),
        (math.nan, ValueError),
        (True, TypeError),
        ("1", TypeError),
        (None, TypeError),
    ],
)
def test_a_duration_must_be_a_number_above_zero(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"^grace must be"):
        check_seconds("grace", value)


@pytest.mark.parametrize("value", [None, 1, 0.001, 1e9])
def test_a_duration_that_may_be_none(value: object) -> None:
    check_seconds("grace", value, optional=True)


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("task_timeout", lambda value: aiomr.RetryPolicy(task_timeout=value)),
        ("split_seconds", lambda value: aiomr.Engine("inline", split_seconds=value)),
    ],
)
@pytest.mark.parametrize(("value", "error"), [(True, TypeError), (0, ValueError)])
def test_the_api_checks_its_durations(
    name: str, make: Callable[[object], object], value: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match=rf"^{name} must be"):
        make(value)
