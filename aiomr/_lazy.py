"""Public names imported on first use (PEP 562), for the package and its subpackages.

A worker process imports ``aiomr`` (and ``aiomr.sources``) on its way to the task code it
runs. Were the package's ``__init__`` to import every public name, each worker would load the
event loop's side, the executors and the database drivers it never uses: most of a worker's
start-up time. With this, ``import aiomr`` loads nothing until a name is asked for.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, where: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return the module ``__getattr__`` and ``__dir__`` of ``package``.

    ``where`` maps each public name to the module it comes from, relative to ``package``;
    ``"."`` marks a subpackage of that name. A name is imported once, then kept in the
    package's namespace, so later lookups never come here again.
    """
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if module == ".":
            value: Any = importlib.import_module(f"{package}.{name}")
        else:
            value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    return __getattr__, __dir__
