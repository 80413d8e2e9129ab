"""Markers that stay one object across processes, and the "no value" marker `MISSING`.

A marker crosses to the workers inside shipped code and back inside results; ``is`` must
still hold there. A `Marker` pickles as a reference to the module attribute that holds it,
so unpickling gives that module's own object, never a copy.
"""

from __future__ import annotations

import importlib
from typing import Any, Final

__all__ = ["MISSING", "Marker"]


def _find(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


class Marker:
    """A named singleton; create each one once, as ``NAME = Marker(__name__, "NAME")``."""

    __slots__ = ("_module", "_name")

    def __init__(self, module: str, name: str) -> None:
        self._module = module
        self._name = name

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (_find, (self._module, self._name))

    def __repr__(self) -> str:
        return self._name


MISSING: Final[Any] = Marker(__name__, "MISSING")
"""Marks "no value": no ``initial`` given, or nothing folded yet."""
