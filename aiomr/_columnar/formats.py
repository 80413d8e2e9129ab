"""A batch as a batch mapper asked for it (``batch_format``), converted in the worker.

``"arrow"`` hands the `pyarrow.RecordBatch` as read; ``"polars"`` a `polars.DataFrame`
made from it without copying where Arrow allows (`polars.from_arrow`); ``"pandas"`` a
`pandas.DataFrame` (`pyarrow.RecordBatch.to_pandas`, which copies most types).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._types import BatchFormat
from .imports import require

__all__ = ["converter"]


def _as_arrow(batch: Any) -> Any:
    return batch


def _as_polars(batch: Any) -> Any:
    polars = require("polars", 'batch_format="polars"')
    return polars.from_arrow(batch)


def _as_pandas(batch: Any) -> Any:
    require("pandas", 'batch_format="pandas"')
    return batch.to_pandas()


def converter(batch_format: BatchFormat) -> Callable[[Any], Any]:
    """Return what turns a `pyarrow.RecordBatch` into ``batch_format``; import the library it
    needs now, so a missing one fails before any batch is read."""
    if batch_format == "polars":
        require("polars", 'batch_format="polars"')
        return _as_polars
    if batch_format == "pandas":
        require("pandas", 'batch_format="pandas"')
        return _as_pandas
    return _as_arrow
