"""A job's code: pickled once in the caller, unpickled once per worker.

Every executor that sends code to other processes pickles it here (`dumps_code`). The
process pool stores it in a file (`aiomr.executors._shipping`) and every task carries a
`ShippedCall` instead, which a worker turns back into the job's callable once and keeps
(`load_shipped`).

Keeping the source file of code sent by value
---------------------------------------------
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
from collections import ChainMap, OrderedDict
from collections.abc import Callable
from typing import Any

import cloudpickle

__all__ = ["ShippedCall", "dumps_code", "load_shipped"]

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


_CODE_CACHE: OrderedDict[str, Callable[..., Any]] = OrderedDict()
_CODE_CACHE_SIZE = 32
"""Jobs whose code a worker keeps unpickled; an Engine rarely runs more at once."""


def load_shipped(token: str, path: str) -> Callable[..., Any]:
    """Return the job code stored at ``path``, unpickling it once per worker."""
    fn = _CODE_CACHE.get(token)
    if fn is None:
        with open(path, "rb") as f:
            fn = pickle.load(f)
        _CODE_CACHE[token] = fn
        while len(_CODE_CACHE) > _CODE_CACHE_SIZE:
            _CODE_CACHE.popitem(last=False)
    else:
        _CODE_CACHE.move_to_end(token)
    return fn


class ShippedCall:
    """Stand-in for a job's code inside tasks: loads the real callable once per worker."""

    __slots__ = ("path", "token")

    def __init__(self, token: str, path: str) -> None:
        self.token = token
        self.path = path

    def __call__(self, *args: Any) -> Any:
        return load_shipped(self.token, self.path)(*args)

    def load(self) -> None:
        """Unpickle the job's code now (once per worker), importing what it needs.

        A worker's first task of a job pays for that: importing the mapper's module and
        everything it imports, seconds on a loaded machine. A pool that times tasks calls
        this before it starts the clock (``task_timeout`` times the task, not the import).
        """
        load_shipped(self.token, self.path)

    def __reduce__(self) -> tuple[type[ShippedCall], tuple[str, str]]:
        return (ShippedCall, (self.token, self.path))
