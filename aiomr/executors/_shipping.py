"""Ship a job's code to worker processes once, through a file in a private directory.

A process pool would otherwise pickle the callable with every task, by reference: lambdas,
closures and functions defined in ``__main__`` fail, and a large closure is copied once per
task. `ship_by_file` pickles a job's code once with cloudpickle (by value where needed) into
a file in the pool's private directory (``/dev/shm`` when present, so it never touches a
disk); every task carries a `aiomr._worker.job_code.ShippedCall` instead: a token and a
path, a few dozen bytes. Each worker unpickles the code on its first task of the job and
caches it (`aiomr._worker.job_code.load_shipped`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from typing import Any

from .._worker.job_code import ShippedCall, dumps_code
from ._base import ShippedCode

__all__ = ["private_directory", "ship_by_file"]

_PREFIX = "aiomr-code-"


class _FileShippedCode(ShippedCode):
    def __init__(self, token: str, path: str) -> None:
        super().__init__(ShippedCall(token, path))
        self._path = path

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)


def private_directory() -> str:
    """Create a directory for one pool's shipped code and bookkeeping (in memory where
    possible).

    Its name carries the caller's process id: a caller killed outright (SIGKILL, the OOM
    killer) cannot remove it, so each new one removes those of callers no longer alive.
    """
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    _remove_orphans(base or tempfile.gettempdir())
    return tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=base)


def _remove_orphans(base: str) -> None:
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        owner = name.removeprefix(_PREFIX).split("-", 1)[0]
        if not name.startswith(_PREFIX) or not owner.isdigit():
            continue
        try:
            os.kill(int(owner), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
        except OSError:  # alive, but another user's
            continue


def ship_by_file(fn: Callable[..., Any], directory: str) -> ShippedCode:
    """Pickle ``fn`` once into ``directory`` and return a token-carrying stand-in."""
    try:
        data = dumps_code(fn)
    except Exception as exc:
        raise TypeError(f"{_describe(fn)} cannot be pickled for worker processes: {exc}") from exc
    token = uuid.uuid4().hex
    path = os.path.join(directory, f"{token}.pkl")
    with open(path, "wb") as f:
        f.write(data)
    return _FileShippedCode(token, path)


def _describe(fn: Callable[..., Any]) -> str:
    inner = getattr(fn, "func", None)
    args = getattr(fn, "args", ())
    if inner is not None and args:
        parts = ", ".join(repr(a) for a in args if callable(a))
        return f"the job's code ({parts})" if parts else "the job's code"
    return repr(fn)
