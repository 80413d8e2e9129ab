"""What runs on the Dask workers: the job's code held by a plugin, and the task itself.

Imported by every worker of the cluster (tasks name `run_task` and `DaskCall` by module), so
it holds only what the workers need; the executor is `aiomr.executors._dask`.
"""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Callable
from typing import Any

import cloudpickle
import distributed
from distributed.diagnostics.plugin import WorkerPlugin

from ._dask_tree import Held, hold_large

__all__ = ["CodePlugin", "DaskCall", "Unsendable", "dumps", "run_task"]

_STORED: dict[str, bytes] = {}
"""Pickled code of the jobs registered on this worker, by token (filled by `CodePlugin`)."""
_LOADED: dict[str, Callable[..., Any]] = {}
"""The same code, unpickled on its first task here."""


class CodePlugin(WorkerPlugin):
    """Hold one job's pickled code on every worker of the cluster, present and future."""

    def __init__(self, token: str, data: bytes) -> None:
        self.token = token
        self.data = data

    def setup(self, worker: distributed.Worker) -> None:
        _STORED[self.token] = self.data

    def teardown(self, worker: distributed.Worker) -> None:
        _STORED.pop(self.token, None)
        _LOADED.pop(self.token, None)


class DaskCall:
    """Stand-in for a job's code inside tasks: a token that names the plugin's bytes."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, *args: Any) -> Any:
        fn = _LOADED.get(self.token)
        if fn is None:
            try:
                data = _STORED[self.token]
            except KeyError:
                raise LookupError(
                    f"the code of job {self.token} is not on this worker: it was released"
                ) from None
            fn = _LOADED[self.token] = pickle.loads(data)
        return fn(*args)

    def __reduce__(self) -> tuple[type[DaskCall], tuple[str]]:
        return (DaskCall, (self.token,))


def dumps(value: Any) -> bytes:
    """Pickle ``value`` with the fastest protocol; by value what only ``__main__`` defines.

    Plain pickle refers to classes and functions by module and name, and a Dask worker's
    ``__main__`` is not the caller's: those go by value through cloudpickle, which also
    lets the caller recognise its own classes when they come back.
    """
    try:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        data = b"__main__"
    if b"__main__" in data:
        data = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return data


class Unsendable:
    """What a task sends back when its result cannot be pickled: the error and where."""

    def __init__(self, message: str, formatted: str) -> None:
        self.message = message
        self.formatted = formatted


def _sendback_result(result: Any) -> bytes:
    # The dispatcher tells a result that could not travel back from a record that could not
    # travel out by this function's name in the worker's traceback, as for the stdlib pool.
    try:
        return dumps(result)
    except Exception as exc:
        return dumps(Unsendable(f"{type(exc).__name__}: {exc}", traceback.format_exc()))


def run_task(call: Callable[..., Any], payload: bytes, hold_above: int | None) -> bytes | Held:
    """The Dask task: unpickle the arguments, run the job's code, pickle its result.

    With ``hold_above``, a partial that pickles to more bytes stays here (`Held`).
    """
    result = call(*pickle.loads(payload))
    if hold_above is not None:
        held = hold_large(result, hold_above, dumps)
        if held is not None:
            return held
    return _sendback_result(result)
