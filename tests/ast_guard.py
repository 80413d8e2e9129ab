"""Serialise `ast.parse` in the test process while Dask clusters run threads in it.

CPython 3.11 keeps the recursion counter of the C-to-Python AST conversion (what
`ast.parse` does after parsing) in interpreter-wide state, not per thread, and resets it at
the start of each conversion. The conversion is C code that holds the GIL, but when one of
its allocations runs the garbage collector, finalizers run Python code: the GIL can pass to
another thread, or a finalizer on the same thread can log a traceback, and either may start
a conversion of its own in the middle of the first. The first then fails with
``SystemError: AST constructor recursion depth mismatch``. Later releases keep the counter
per thread; the tests run on 3.11.

Here, while a cluster runs, `ast.parse` is called:

* by pytest's assertion rewriting, when a module is imported late (inside a function): pytest
  rewrites test modules and every module of a distribution that registers a pytest plugin
  (hypothesis, anyio, pytest-asyncio...), and Hypothesis imports many of its modules on
  first use, in the middle of a test. On a clean clone no rewritten module is cached yet,
  so each of these imports parses its source;
* by `traceback` on 3.11, to place the ``^^^^`` markers under each line, whenever any
  thread formats a traceback: distributed logging an exception on its event loop's thread
  (`tests/test_properties.py` runs its cluster in a thread), pytest reporting a failure;
* by `ast.literal_eval`, which Dask's configuration uses on environment variables.

Importing up front what those late imports would load cannot cover tracebacks, and would
have to follow every release of Hypothesis. Instead, `ast.parse` runs under one lock (no
two threads convert at once) with the garbage collector paused (nothing runs in the middle
of a conversion, on this thread or another), which covers every caller in this process. The clusters the tests start import this module into
their workers too (``preload``): a worker formats a traceback on its task's thread when a
mapper fails, while its event loop's thread may be logging one.
"""

from __future__ import annotations

import ast
import functools
import gc
import sys
import threading
from typing import Any

_LOCK = threading.RLock()


def _install() -> None:
    original = ast.parse
    if getattr(original, "_aiomr_serialised", False) or sys.version_info >= (3, 12):
        return

    @functools.wraps(original)
    def parse(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            collecting = gc.isenabled()
            gc.disable()
            try:
                return original(*args, **kwargs)
            finally:
                if collecting:
                    gc.enable()

    parse._aiomr_serialised = True  # type: ignore[attr-defined]
    ast.parse = parse  # type: ignore[assignment]


_install()
