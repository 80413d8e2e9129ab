"""The optional columnar libraries, imported on first use, each with its install hint.

aiomr never imports pyarrow, Polars or pandas unless a job uses them. A job that needs one
that is not installed fails at once, naming what needed it and the extra that installs it:
``aiomr.sources.parquet needs pyarrow: pip install 'aiomr[arrow]'``.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

__all__ = ["EXTRAS", "check_installed", "require"]

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
    "adbc_driver_postgresql": "postgres-arrow",
}
"""The extra of aiomr that installs each optional module."""


def require(module: str, needed_by: str) -> ModuleType:
    """Import ``module``; if it is missing, raise `ImportError` naming ``needed_by`` and the
    extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise _missing(module, needed_by) from exc


def check_installed(module: str, needed_by: str) -> None:
    """Raise `ImportError` as `require` does if ``module`` is not installed, without
    importing it: for the caller's event loop, where only the workers need the module."""
    if importlib.util.find_spec(module.partition(".")[0]) is None:
        raise _missing(module, needed_by)


def _missing(module: str, needed_by: str) -> ImportError:
    top = module.partition(".")[0]
    extra = EXTRAS.get(module, EXTRAS.get(top, top))
    return ImportError(
        f"{needed_by} needs {top}, which is not installed: pip install 'aiomr[{extra}]'"
    )
