"""Check the functions a job is given, before any worker starts and any record is read.

Workers call a job's functions as plain functions, with no event loop. An ``async def``
mapper would return a coroutine that nobody awaits (Python warns "coroutine ... was never
awaited") and the job would fail later with a confusing `TypeError`; a generator function
where a value is expected returns a generator object, which a reducer may well fold into a
wrong answer without any error. Both are refused up front, with what to do instead.

What counts is what calling the object runs: a function, a bound method, the function inside
a `functools.partial` (nested ones too), or the ``__call__`` of a callable object.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Literal

__all__ = ["MAPPER_HINT", "check_function"]

MAPPER_HINT = (
    " (a mapper that yields several (key, value) pairs per record belongs in "
    "aiomr.map_reduce_by_key)"
)
"""What a generator mapper of `aiomr.map_reduce` was probably meant for."""

Kind = Literal["plain", "generator", "coroutine", "async generator"]


def check_function(
    name: str,
    fn: object,
    *,
    yields: bool = False,
    returns: str | None = "its result",
    hint: str = "",
    where: str = "in workers",
    coroutines: bool = False,
) -> None:
    """Raise `TypeError` unless workers can call ``fn`` as the job expects.

    Args:
        name: what the argument is called, for the message (``"mapper"``).
        fn: the object given.
        yields: the place takes a generator function (it yields pairs); otherwise a
            generator function is refused too.
        returns: what a plain ``fn`` returns there, for the message; ``None`` for a hook
            whose result is not used.
        hint: added to the message when a generator function is refused.
        where: where aiomr calls ``fn``, for the message.
        coroutines: the place takes an ``async def`` function (a mapper: its coroutines
            run on an event loop in each worker).
    """
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__qualname__}")
    kind = kind_of(fn)
    if kind == "coroutine" and coroutines:
        return
    if kind == "coroutine":
        raise TypeError(
            f"{name} {describe(fn)} is an async def function: aiomr calls it {where}, "
            "where no event loop runs, so it would only make a coroutine that is never "
            "awaited; make it a plain def (run the async part in the caller, before or "
            "after the job)"
        )
    if kind == "async generator" and coroutines and yields:
        return  # a key-based job's mapper: the pairs it yields
    if kind == "async generator" and coroutines:
        raise TypeError(
            f"{name} {describe(fn)} is an async generator function: this job's mapper "
            "gives one value per record; make it an async def function that returns it"
        )
    if kind == "async generator":
        instead = "a plain def or generator" if yields else "a plain def"
        raise TypeError(
            f"{name} {describe(fn)} is an async generator function: aiomr calls it "
            f"{where}, where no event loop runs; make it {instead} (run the async part in "
            "the caller, before or after the job)"
        )
    if kind == "generator" and not yields and returns is None:
        raise TypeError(
            f"{name} {describe(fn)} is a generator function: calling it only makes a "
            "generator, so its body would never run; make it a plain def"
        )
    if kind == "generator" and not yields:
        raise TypeError(
            f"{name} {describe(fn)} is a generator function: calling it only makes a "
            f"generator, which aiomr would take as {returns}; make it a plain def that "
            f"returns {returns}{hint}"
        )


def kind_of(fn: object) -> Kind:
    """What calling ``fn`` runs: a plain function, a generator, a coroutine, an async
    generator."""
    target = _unwrapped(fn)
    if not isinstance(target, type) and not (
        inspect.isfunction(target) or inspect.ismethod(target) or inspect.isbuiltin(target)
    ):
        call = inspect.getattr_static(type(target), "__call__", None)  # a callable object
        if call is not None:
            target = _unwrapped(call)
    if inspect.iscoroutinefunction(target):
        return "coroutine"
    if inspect.isasyncgenfunction(target):
        return "async generator"
    if inspect.isgeneratorfunction(target):
        return "generator"
    return "plain"


def _unwrapped(fn: Any) -> Any:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def describe(fn: object) -> str:
    """Name ``fn`` for a message: its qualified name, what a partial wraps, or its class."""
    if isinstance(fn, functools.partial):
        return f"functools.partial({describe(fn.func)})"
    name = getattr(fn, "__qualname__", None)
    if isinstance(name, str) and not isinstance(fn, type):
        return name
    if isinstance(fn, type):
        return f"class {fn.__qualname__}"
    return f"{type(fn).__qualname__}.__call__ (of a {type(fn).__qualname__} object)"
