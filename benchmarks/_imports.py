"""Import the checkout's aiomr, and import a contender's names before its clock starts.

Kept apart from ``_common`` and light: a contender's program imports it, and worker
processes started with ``forkserver`` or ``spawn`` import that program again.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    # Let the scripts import the checkout's aiomr without installing it.
    sys.path.insert(0, str(REPO_ROOT))


def import_names(names: Iterable[str]) -> None:
    """Import each dotted name: a module, or a module's attribute (``aiomr.map_reduce``).

    A contender's imports happen before its clock starts. A package that imports its public
    names on first use (aiomr does) loads its code when a name is looked up, not at
    ``import``: naming the functions the contender calls loads what a script's
    ``from ... import`` lines at its top would.
    """
    for name in names:
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                value: Any = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                if cut == 1:
                    raise
                continue
            for attribute in parts[cut:]:
                value = getattr(value, attribute)
            break
