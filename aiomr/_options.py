"""The knobs of a job, defined once: the keywords every entry point takes, checked in one place.

One definition, two views of it:

- the ``TypedDict`` classes (`JobKeywords`, `MapKeywords`, `KeyedKeywords`, `StreamKeywords`,
  `WindowKeywords`) type the ``**options`` of every entry point, so a type checker and an
  editor see each keyword, its type and its documentation, and flag a misspelt one;
- the frozen, keyword-only dataclasses (`JobOptions` and its extensions) hold the defaults and
  check the values. An entry point builds one with `JobOptions.of` before it starts any work.

``tests/test_options.py`` holds the two views equal (names and types) and checks that every
entry point takes exactly its view's keywords. Adding an option therefore touches its
``TypedDict`` line, its dataclass field with its check, and the code that uses it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, Self, TypedDict

from ._badrecords import OnError, check_on_error
from ._callables import check_function
from ._checks import check_seconds
from ._retry import RetryPolicy
from ._sentinels import MISSING
from ._stats import JobStats
from ._types import BATCH_FORMATS, BatchFormat, Mode, V
from ._windows import WindowSpec

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "AggregateKeywords",
    "AggregateOptions",
    "JobKeywords",
    "JobOptions",
    "KeyedKeywords",
    "KeyedOptions",
    "MapKeywords",
    "MapOptions",
    "RunKeywords",
    "RunOptions",
    "StreamKeywords",
    "StreamOptions",
    "WindowKeywords",
    "WindowOptions",
]

DEFAULT_MEMORY_BUDGET = 256 * 1024 * 1024
"""Bytes of key state one reduce task holds before it spills a sorted run to disk. Two
workers reducing at once stay near half a gigabyte; larger budgets spill less."""


class RunKeywords(TypedDict, total=False):
    """The keywords of every job: how its records are batched, retried and checked."""

    chunk_size: int | None
    """Records per chunk (map task); ``None`` (the default) adapts it from measured task
    times."""
    max_in_flight: int | None
    """Chunks outstanding at most (running, or done and not yet folded); by default twice
    the worker count."""
    max_workers: int | None
    """The most workers the job uses at once. A one-job function starts this many workers
    (default: the CPU count); on an `aiomr.Engine` it caps the job's share of the pool
    (default: as many as its fair share allows)."""
    retry: RetryPolicy | None
    """When a failed task runs again; by default a task whose worker process died runs
    again, up to 3 runs in all (`aiomr.RetryPolicy`)."""
    on_error: OnError
    """``"raise"`` (the default) fails the job on the first record whose parsing or mapping
    raises; ``"skip"`` leaves such records out, counts them in ``stats.records_skipped`` and
    keeps a sample in ``stats.bad_sample``; ``"collect"`` also keeps every one in
    ``stats.bad_records``. With ``mode="batches"`` only rows that do not parse are left out
    (a batch's mapper sees its rows together)."""
    dead_letter: str | os.PathLike[str] | None
    """A JSON Lines file to append every skipped record to (location, record, error); needs
    ``on_error="skip"`` or ``"collect"``."""
    concurrency: int | None
    """With an ``async def`` mapper: its coroutines in flight at once in each worker (on
    the caller's loop with ``executor="inline"``); default 64."""
    record_timeout: float | None
    """With an ``async def`` mapper: seconds one record's coroutine may take before it is
    cancelled and fails with `TimeoutError` (retried if ``retry.retry_on`` lists it)."""
    max_per_second: float | None
    """With an ``async def`` mapper: coroutines started per second at most, across the job
    (each of its worker processes takes an equal share)."""
    resources: Callable[[], contextlib.AbstractAsyncContextManager[Any]] | None
    """With an ``async def`` mapper: a factory of an async context manager (an HTTP client
    session, a connection pool), entered once per worker for the job and exited when the
    job ends; what it gives is passed to the mapper as its second argument."""


class JobKeywords(RunKeywords, total=False):
    """The keywords of a job that reports on itself."""

    stats: JobStats | None
    """A `aiomr.JobStats` to fill live with the job's figures."""


class MapKeywords(JobKeywords, Generic[V], total=False):
    """The keywords of `aiomr.map_reduce` (besides ``mode`` and ``executor``)."""

    initial: V
    """Folded in once, first; the result of an empty source. Without it an empty source
    raises `aiomr.EmptySourceError`."""
    ordered: bool
    """Fold partials in input order instead of as they complete, for reducers that are
    associative but not commutative (string concatenation, list append)."""
    batch_format: BatchFormat
    """With ``mode="batches"``, what the mapper receives: ``"arrow"`` (the default, a
    ``pyarrow.RecordBatch``), ``"polars"`` (a ``polars.DataFrame``) or ``"pandas"`` (a
    ``pandas.DataFrame``)."""


class StreamKeywords(MapKeywords[V], total=False):
    """The keywords of `aiomr.open_stream` (besides ``mode`` and ``executor``): those of
    `aiomr.map_reduce` and the pace."""

    every_seconds: float | None
    """Seconds between snapshots (default 1.0); ``None`` to pace by partials only."""
    every_partials: int | None
    """Partials folded between snapshots; ``None`` (the default) to pace by time only."""
    view: Callable[[V], Any] | None
    """What of the running value to show: ``running value -> snapshot value``; by default
    a shallow copy of it."""


class WindowKeywords(RunKeywords, Generic[V], total=False):
    """The keywords of `aiomr.open_windows` (besides ``size`` and ``executor``)."""

    slide: float | None
    """Records or seconds between the starts of two windows; by default ``size``
    (tumbling windows)."""
    by: Literal["count", "time"]
    """``"count"`` (the default): windows of records; ``"time"``: of seconds of arrival."""
    initial: V
    """The value of a window without records; without it such windows are left out."""


class KeyedKeywords(JobKeywords, total=False):
    """The keywords of the key-based jobs (`aiomr.map_reduce_by_key` and its kin)."""

    partitions: int | None
    """Reduce tasks; by default twice the worker count."""
    sort: bool
    """Return keys in ascending order; keys must be in a total order under ``<`` (a
    `TypeError` names two keys that are not)."""
    memory_budget: int
    """Bytes of key state a reduce task holds before it spills a sorted run to a temporary
    file (default 256 MiB); runs are merged at the end."""
    temp_dir: str | None
    """Where the job's temporary files go (default: the system's)."""
    mode: Literal["record", "batches"]
    """``"record"`` (the default): the mapper yields pairs for each record;
    ``"batches"``: for each record batch of a columnar source (`aiomr.sources.parquet`,
    `aiomr.sources.arrow`, or `aiomr.sources.files` with a ``format``)."""
    batch_format: BatchFormat
    """With ``mode="batches"``, what the mapper receives: ``"arrow"`` (the default),
    ``"polars"`` or ``"pandas"``."""


class AggregateKeywords(JobKeywords, total=False):
    """The keywords of `aiomr.aggregate` (besides ``executor``)."""

    memory_budget: int
    """Bytes of partial states a process holds before it writes them to a run on disk
    (default 256 MiB); a job that never reaches it reads and writes no file."""
    partitions: int | None
    """Partitions of the states written to disk, each reduced by one task (default 64)."""
    temp_dir: str | None
    """Where the job's runs go (default: the system's); removed when the job ends."""
    output: str | os.PathLike[str] | None
    """A directory to write the result to, as Parquet files (``part-NNNNN.parquet``), so
    that no process holds all of it; the call then returns an `aiomr.ParquetParts`."""
    result_format: BatchFormat
    """What the call returns: ``"arrow"`` (the default, a ``pyarrow.Table``), ``"polars"``
    (a ``polars.DataFrame``) or ``"pandas"`` (a ``pandas.DataFrame``)."""


def _check_count(name: str, value: object, *, optional: bool = True) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        kind = "an int or None" if optional else "an int"
        raise TypeError(f"{name} must be {kind}, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1")


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """The knobs every job has, checked (see `RunKeywords` for what each means)."""

    keywords: ClassVar[type] = RunKeywords
    """The ``TypedDict`` that types these options as keywords."""

    chunk_size: int | None = None
    max_in_flight: int | None = None
    max_workers: int | None = None
    retry: RetryPolicy | None = None
    on_error: OnError = "raise"
    dead_letter: str | os.PathLike[str] | None = None
    concurrency: int | None = None
    record_timeout: float | None = None
    max_per_second: float | None = None
    resources: Callable[[], contextlib.AbstractAsyncContextManager[Any]] | None = None

    def __post_init__(self) -> None:
        _check_count("concurrency", self.concurrency)
        check_seconds("record_timeout", self.record_timeout, optional=True)
        if self.max_per_second is not None and (
            isinstance(self.max_per_second, bool)
            or not isinstance(self.max_per_second, int | float)
            or not self.max_per_second > 0
        ):
            raise ValueError(f"max_per_second must be a number > 0, got {self.max_per_second!r}")
        if self.resources is not None and not callable(self.resources):
            raise TypeError(f"resources must be callable, got {self.resources!r}")
        _check_count("chunk_size", self.chunk_size)
        _check_count("max_in_flight", self.max_in_flight)
        _check_count("max_workers", self.max_workers)
        if self.retry is not None and not isinstance(self.retry, RetryPolicy):
            raise TypeError(f"retry must be an aiomr.RetryPolicy, got {self.retry!r}")
        check_on_error(self.on_error, self.dead_letter)

    @classmethod
    def of(cls, where: str, keywords: Mapping[str, object]) -> Self:
        """Build the options from an entry point's keywords; ``where`` names it in errors.

        A keyword the entry point does not take is a `TypeError` naming it (and the nearest
        one it does take), as Python words it for a misspelt keyword argument.
        """
        known = cls.names()
        for name in keywords:
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise TypeError(f"{where}() got an unexpected keyword argument {name!r}{hint}")
        return cls(**keywords)  # type: ignore[arg-type]

    @classmethod
    def names(cls) -> frozenset[str]:
        """The keywords these options take."""
        return frozenset(field.name for field in dataclasses.fields(cls))

    def keywords_for(self, base: type[RunOptions]) -> dict[str, Any]:
        """The options ``base`` has, as keywords (to pass on to an entry point taking them)."""
        return {name: getattr(self, name) for name in base.names()}


@dataclass(frozen=True, slots=True, kw_only=True)
class JobOptions(RunOptions):
    """The knobs of a job that reports on itself."""

    keywords: ClassVar[type] = JobKeywords

    stats: JobStats | None = None

    def __post_init__(self) -> None:
        super(JobOptions, self).__post_init__()
        if self.stats is not None and not isinstance(self.stats, JobStats):
            raise TypeError(f"stats must be an aiomr.JobStats, got {self.stats!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class MapOptions(JobOptions):
    """The knobs of a map-reduce job (`aiomr.map_reduce`)."""

    keywords: ClassVar[type] = MapKeywords

    initial: Any = MISSING
    mode: Mode = "record"
    ordered: bool = False
    batch_format: BatchFormat = "arrow"

    def __post_init__(self) -> None:
        super(MapOptions, self).__post_init__()
        if self.mode not in ("record", "chunk", "blocks", "batches"):
            raise ValueError(
                f"mode must be 'record', 'chunk', 'blocks' or 'batches', got {self.mode!r}"
            )
        _check_bool("ordered", self.ordered)
        if self.batch_format not in BATCH_FORMATS:
            raise ValueError(
                f"batch_format must be 'arrow', 'polars' or 'pandas', got {self.batch_format!r}"
            )
        if self.batch_format != "arrow" and self.mode != "batches":
            raise ValueError(
                f"batch_format={self.batch_format!r} is for mode='batches', not mode={self.mode!r}"
            )
        if self.on_error != "raise" and self.mode == "chunk":
            # A chunk's mapper sees its records together: one bad record cannot be left out.
            raise ValueError(
                "on_error='skip' and 'collect' need mode='record', mode='batches' (records "
                "that do not parse), or mode='blocks' over a source that checks its blocks"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamOptions(MapOptions):
    """The knobs of a watched job (`aiomr.open_stream`): a map-reduce job and its pace."""

    keywords: ClassVar[type] = StreamKeywords

    every_seconds: float | None = 1.0
    every_partials: int | None = None
    view: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        super(StreamOptions, self).__post_init__()
        if self.mode not in ("record", "batches"):
            raise ValueError(f"open_stream runs mode='record' or 'batches', got mode={self.mode!r}")
        if self.every_seconds is None and self.every_partials is None:
            raise ValueError("give every_seconds, every_partials or both")
        check_seconds("every_seconds", self.every_seconds, optional=True)
        if self.every_partials is not None and (
            isinstance(self.every_partials, bool)
            or not isinstance(self.every_partials, int)
            or self.every_partials < 1
        ):
            raise ValueError(f"every_partials must be an int >= 1, got {self.every_partials!r}")
        if self.view is not None:
            if not callable(self.view):
                raise TypeError(f"view must be callable, got {self.view!r}")
            check_function(
                "view", self.view, returns="the snapshot's value", where="on a helper thread"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowOptions(RunOptions):
    """The knobs of a windowed job (`aiomr.open_windows`), its window shape checked."""

    keywords: ClassVar[type] = WindowKeywords

    size: float
    slide: float | None = None
    by: Literal["count", "time"] = "count"
    initial: Any = MISSING

    def __post_init__(self) -> None:
        super(WindowOptions, self).__post_init__()
        _ = self.spec  # the window shape checks itself

    @property
    def spec(self) -> WindowSpec:
        """The windows' shape: size and slide (``size`` when none was given), by what."""
        return WindowSpec(self.size, self.size if self.slide is None else self.slide, self.by)

    def pane_options(self) -> MapOptions:
        """The options of the job that maps and reduces each pane."""
        return MapOptions(**self.keywords_for(RunOptions))


@dataclass(frozen=True, slots=True, kw_only=True)
class AggregateOptions(JobOptions):
    """The knobs of a key-based columnar aggregation (`aiomr.aggregate`)."""

    keywords: ClassVar[type] = AggregateKeywords

    memory_budget: int = DEFAULT_MEMORY_BUDGET
    partitions: int | None = None
    temp_dir: str | None = None
    output: str | os.PathLike[str] | None = None
    result_format: BatchFormat = "arrow"

    def __post_init__(self) -> None:
        super(AggregateOptions, self).__post_init__()
        if self.result_format not in BATCH_FORMATS:
            raise ValueError(
                f"result_format must be 'arrow', 'polars' or 'pandas', got {self.result_format!r}"
            )
        if self.result_format != "arrow" and self.output is not None:
            raise ValueError(
                f"result_format={self.result_format!r} is for a result returned, "
                "not one written to output="
            )
        _check_count("memory_budget", self.memory_budget, optional=False)
        _check_count("partitions", self.partitions)
        for name in ("temp_dir", "output"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str | os.PathLike):
                raise TypeError(f"{name} must be a path or None, got {value!r}")

    def map_options(self) -> MapOptions:
        """The options of the job that maps the batches and merges their states."""
        return MapOptions(**self.keywords_for(JobOptions), mode="batches")


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyedOptions(JobOptions):
    """The knobs of a key-based job (`aiomr.map_reduce_by_key` and its kin)."""

    keywords: ClassVar[type] = KeyedKeywords

    partitions: int | None = None
    sort: bool = False
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    temp_dir: str | None = None
    mode: Literal["record", "batches"] = "record"
    batch_format: BatchFormat = "arrow"

    def __post_init__(self) -> None:
        super(KeyedOptions, self).__post_init__()
        if self.mode not in ("record", "batches"):
            raise ValueError(
                f"a key-based job's mode must be 'record' or 'batches', got {self.mode!r}"
            )
        if self.batch_format not in BATCH_FORMATS:
            raise ValueError(
                f"batch_format must be 'arrow', 'polars' or 'pandas', got {self.batch_format!r}"
            )
        if self.batch_format != "arrow" and self.mode != "batches":
            raise ValueError(f"batch_format={self.batch_format!r} is for mode='batches'")
        _check_count("partitions", self.partitions)
        _check_count("memory_budget", self.memory_budget, optional=False)
        _check_bool("sort", self.sort)
        if self.temp_dir is not None and not isinstance(self.temp_dir, str | os.PathLike):
            raise TypeError(f"temp_dir must be a path or None, got {self.temp_dir!r}")
