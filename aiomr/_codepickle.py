"""Pickle a job's code for its workers, keeping the source file of code sent by value.

Every executor that sends code to other processes pickles it here (`dumps_code`).

cloudpickle sends functions it cannot import by name (lambdas, closures, anything defined in
the caller's ``__main__`` or registered with ``register_pickle_by_value``) by value, code
object and all. From cloudpickle 3 on, it replaces each code object's file name with
``"<dynamic-code>"`` (to make its output the same wherever the function was defined), and a
worker's traceback then reads ``File "<dynamic-code>", line 7`` with no source line. The
pickler below reduces code objects as cloudpickle does, then puts the real file name back
when the worker rebuilds them, so `traceback` finds the file through `linecache` and shows
the line. cloudpickle 2 kept the name: there the restoring changes nothing.
"""

from __future__ import annotations

import io
import pickle
import types
from collections import ChainMap
from collections.abc import Callable
from typing import Any

import cloudpickle

__all__ = ["dumps_code"]

_REDUCE_CODE: Callable[[types.CodeType], tuple[Any, tuple[Any, ...]]] | None = (
    cloudpickle.Pickler.dispatch_table.get(types.CodeType)
)
"""cloudpickle's own reducer for code objects."""


def _code_with_filename(make: Callable[..., types.CodeType], args: Any, filename: str) -> Any:
    """Rebuild a code object as cloudpickle would, with its real file name (in a worker)."""
    return make(*args).replace(co_filename=filename)


def _reduce_code(code: types.CodeType) -> tuple[Any, tuple[Any, ...]]:
    assert _REDUCE_CODE is not None
    make, args = _REDUCE_CODE(code)
    return _code_with_filename, (make, args, code.co_filename)


class _CodePickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle's pickler, with code objects that keep their file name."""

    if _REDUCE_CODE is not None:
        dispatch_table = ChainMap(
            {types.CodeType: _reduce_code}, cloudpickle.Pickler.dispatch_table
        )


def dumps_code(obj: Any) -> bytes:
    """Pickle ``obj`` (a job's code) with cloudpickle, at the fastest protocol.

    Raises whatever pickling raises; callers say which executor the code was for.
    """
    with io.BytesIO() as file:
        _CodePickler(file, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
        return file.getvalue()
