"""The optional columnar libraries, imported on first use, each with its install hint.

aiomr never imports pyarrow, Polars or pandas unless a job uses them. A job that needs one
that is not installed fails at once, naming what needed it and the extra that installs it:
``aiomr.sources.parquet needs pyarrow: pip install 'aiomr[arrow]'``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "require"]

EXTRAS = {
    "pyarrow": "arrow",
    "pyarrow.dataset": "arrow",
    "pyarrow.parquet": "arrow",
    "pyarrow.compute": "arrow",
    "pyarrow.acero": "arrow",
    "pyarrow.ipc": "arrow",
    "numpy": "arrow",
    "polars": "polars",
    "pandas": "pandas",
}
"""The extra of aiomr that installs each optional module."""


def require(module: str, needed_by: str) -> ModuleType:
    """Import ``module``; if it is missing, raise `ImportError` naming ``needed_by`` and the
    extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.partition(".")[0]
        extra = EXTRAS.get(module, top)
        raise ImportError(
            f"{needed_by} needs {top}, which is not installed: pip install 'aiomr[{extra}]'"
        ) from exc
