"""What the ``aiomr`` command loads: the user's Job class, and aiomr's own version.

A job is imported the way Python itself would run it: ``aiomr run jobs.py:Job`` as
``python jobs.py`` would (the file's directory first on ``sys.path``, so a sibling module
imports), ``aiomr run pkg.jobs:Job`` as ``python -m pkg.jobs`` would (the current directory
first). Worker processes get the caller's ``sys.path`` when they start (multiprocessing
sends it to every new process), so the same modules import there; the job file itself
travels by value, as it cannot be imported by name.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys

import cloudpickle

from .._jobclass import Job

__all__ = ["UsageError", "load_job", "version"]


class UsageError(Exception):
    """Bad arguments or unreadable input: one line on stderr, exit status 2."""


def _search_first(directory: str) -> None:
    """Put ``directory`` first on ``sys.path`` (once)."""
    if directory in sys.path:
        sys.path.remove(directory)
    sys.path.insert(0, directory)


def load_job(target: str) -> type[Job]:
    """Load ``FILE.py:NAME`` or ``package.module:NAME``, an `aiomr.Job` subclass."""
    where, sep, name = target.rpartition(":")
    if not sep or not where or not name:
        raise UsageError(f"{target}: expected FILE_OR_MODULE:JOB, e.g. jobs.py:WordCount")
    if where.endswith(".py") or os.sep in where:
        if not os.path.isfile(where):
            raise UsageError(f"{where}: no such file")
        path = os.path.abspath(where)  # tracebacks and workers find it from anywhere
        _search_first(os.path.dirname(path))
        module_name = "aiomr_user_" + os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise UsageError(f"{where}: cannot be imported")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        # Workers cannot import a file by path: ship its code by value.
        cloudpickle.register_pickle_by_value(module)
    else:
        _search_first(os.getcwd())
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise UsageError(f"{where}: cannot import: {exc}") from None
    job = getattr(module, name, None)
    if not (isinstance(job, type) and issubclass(job, Job)):
        raise UsageError(f"{target}: not an aiomr.Job subclass")
    return job


def version() -> str:
    """aiomr's version: from the installed package's metadata, else the one the package
    itself declares (a source tree on ``PYTHONPATH``, not installed)."""
    try:
        return importlib.metadata.version("aiomr")
    except importlib.metadata.PackageNotFoundError:
        from .. import __version__

        return __version__
