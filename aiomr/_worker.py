"""Code that runs inside workers: task bodies, error capture and the per-worker code cache.

Nothing here touches the event loop. Functions are shipped to a process worker once per job
(see `aiomr.executors.ProcessExecutor`), so the cache below maps a job's code token to
the unpickled callable; every task of that job then carries only the token and its data.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import operator
import os
import pickle
import select
import signal
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, Protocol

import cloudpickle

from ._blame import INPUT, note_input, note_record, reading, take_note
from ._exceptions import RecordError, UnpicklableError
from ._sentinels import Marker

__all__ = [
    "Failure",
    "Outcome",
    "Sealed",
    "ShippedCall",
    "execute",
    "fold_records",
    "load_shipped",
    "ping",
    "seal_records",
    "unseal",
]

_CODE_CACHE: OrderedDict[str, Callable[..., Any]] = OrderedDict()
_CODE_CACHE_SIZE = 32
"""Jobs whose code a worker keeps unpickled; an Engine rarely runs more at once."""


class Outcome(NamedTuple):
    """What a successful map task sends back: one partial and how it was made."""

    value: Any
    records: int
    seconds: float
    pid: int
    skipped: tuple[Any, ...] = ()
    bytes_read: int | None = None
    """For a split: the bytes it read, when not all it covers (else ``None``)."""


class Failure:
    """What a failed map task sends back: the exception, its formatted traceback, and the
    index of the record of the chunk it was raised at, when the body knows it.

    In-process executors hand the live exception back (its ``__traceback__`` intact); when a
    failure is pickled to cross a process boundary, an exception that cannot be pickled is
    replaced by an `UnpicklableError` that describes it.
    """

    __slots__ = ("exception", "pid", "reading", "record", "traceback")

    def __init__(
        self,
        exception: BaseException,
        traceback: str,
        pid: int,
        record: int | None = None,
        reading: bool = False,
    ) -> None:
        self.exception = exception
        self.traceback = traceback
        self.pid = pid
        self.record = record
        self.reading = reading
        """Raised while the task read its input, not by the job's code."""

    def __reduce__(self) -> tuple[Any, tuple[bytes, str, int, int | None, bool]]:
        portable = _portable(self.exception)
        return (
            _unpickle_failure,
            (portable, self.traceback, self.pid, self.record, self.reading),
        )


def initialize_worker(niceness: int, caller: int | None = None) -> None:
    """Prepare a worker process.

    Ctrl-C reaches every process of the terminal's foreground group: workers ignore SIGINT
    so that the caller alone decides (it cancels the job and terminates them), instead of
    each worker dying mid-task with a traceback of its own. Lowering the workers' priority
    keeps the caller's event loop quick when both want the CPU.

    ``caller``: the process id of the program the worker serves. The worker exits as soon
    as that process is gone, however it ended: a caller killed outright (SIGKILL, the OOM
    killer) would otherwise leave its workers, and the forkserver that keeps them company,
    waiting forever on a queue nobody writes to.
    """
    global _in_worker_process
    _in_worker_process = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if caller is not None:
        _exit_with(caller)
    if niceness:
        with contextlib.suppress(OSError):  # not permitted on some platforms
            os.nice(niceness)


_CALLER_POLL_SECONDS = 1.0
"""Where a process cannot be waited on (no pidfd), how often a worker checks its caller."""


def _exit_with(caller: int) -> None:
    """Start a daemon thread that ends this worker when process ``caller`` ends."""
    try:
        handle = os.pidfd_open(caller)
    except ProcessLookupError:  # gone before the worker even started
        os._exit(1)
    except (AttributeError, OSError):  # no pidfd here: look now and then
        threading.Thread(target=_poll_caller, args=(caller,), daemon=True).start()
        return
    threading.Thread(target=_wait_for_caller, args=(handle,), daemon=True).start()


def _wait_for_caller(handle: int) -> None:
    select.select([handle], [], [])  # readable once the process has ended
    os._exit(1)


def _poll_caller(caller: int) -> None:
    while True:
        time.sleep(_CALLER_POLL_SECONDS)
        try:
            os.kill(caller, 0)
        except ProcessLookupError:
            os._exit(1)
        except OSError:
            continue


def ping(hold: float) -> int:
    """Answer with this worker's process id after ``hold`` seconds (see `ProcessExecutor.start`).

    Holding the worker a moment keeps one fast worker from answering every ping while
    another is still booting.
    """
    time.sleep(hold)
    return os.getpid()


def load_shipped(token: str, path: str) -> Callable[..., Any]:
    """Return the job code stored at ``path``, unpickling it once per worker."""
    fn = _CODE_CACHE.get(token)
    if fn is None:
        with open(path, "rb") as f:
            fn = pickle.load(f)
        _CODE_CACHE[token] = fn
        while len(_CODE_CACHE) > _CODE_CACHE_SIZE:
            _CODE_CACHE.popitem(last=False)
    else:
        _CODE_CACHE.move_to_end(token)
    return fn


class ShippedCall:
    """Stand-in for a job's code inside tasks: loads the real callable once per worker."""

    __slots__ = ("path", "token")

    def __init__(self, token: str, path: str) -> None:
        self.token = token
        self.path = path

    def __call__(self, *args: Any) -> Any:
        return load_shipped(self.token, self.path)(*args)

    def load(self) -> None:
        """Unpickle the job's code now (once per worker), importing what it needs.

        A worker's first task of a job pays for that: importing the mapper's module and
        everything it imports, seconds on a loaded machine. A pool that times tasks calls
        this before it starts the clock (``task_timeout`` times the task, not the import).
        """
        load_shipped(self.token, self.path)

    def __reduce__(self) -> tuple[type[ShippedCall], tuple[str, str]]:
        return (ShippedCall, (self.token, self.path))


def _portable(exc: BaseException) -> bytes:
    """Pickle ``exc`` for the trip back, or an `UnpicklableError` describing it.

    cloudpickle, not pickle: an exception class defined in the caller's ``__main__`` reached
    the worker by value, and only cloudpickle can send it back the same way (the caller then
    recognises its own class).
    """
    try:
        data: bytes = cloudpickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(data)
    except Exception as err:
        data = pickle.dumps(
            UnpicklableError(
                f"{type(exc).__module__}.{type(exc).__qualname__}: {exc} "
                f"(the original exception cannot be pickled: {err})"
            )
        )
    return data


def _unpickle_failure(
    exception: bytes, formatted: str, pid: int, record: int | None = None, reading: bool = False
) -> Failure:
    return Failure(pickle.loads(exception), formatted, pid, record, reading)


_in_worker_process = False
"""Set by `initialize_worker`: this process is a worker of a process pool."""

SEAL_MIN_ITEMS = 2_000
"""Partials of at least this many items leave a worker process sealed (see `Sealed`)."""


class _SliceReader:
    """A file over bytes whose ``read`` is Python code: see `Sealed`."""

    __slots__ = ("_at", "_view")

    def __init__(self, data: Any) -> None:
        self._view = memoryview(data).cast("B")
        self._at = 0

    def read(self, size: int = -1) -> bytes:
        start = self._at
        end = len(self._view) if size < 0 else min(len(self._view), start + size)
        self._at = end
        return self._view[start:end].tobytes()

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        start = self._at
        end = min(len(self._view), start + len(target))
        target[: end - start] = self._view[start:end]
        self._at = end
        return end - start

    def readline(self) -> bytes:
        # Only the text opcodes of pickle protocols below 4 read lines: rare, so plain.
        start = self._at
        end = start
        while end < len(self._view) and self._view[end] != 10:
            end += 1
        end = min(end + 1, len(self._view))
        self._at = end
        return self._view[start:end].tobytes()


class Sealed:
    """A large partial, pickled by the worker that made it and unpickled in slices.

    Unpickling holds the GIL for the whole call, whichever thread makes it: a 200,000-key
    dict takes tens of milliseconds, and the caller's event loop cannot run meanwhile. A
    pool unpickles its results in one call on its own thread. A sealed partial crosses as
    plain bytes instead (copied, not parsed), and `unseal` reads them back through a file
    whose ``read`` is Python code: pickle's protocol 5 cuts its output into frames of about
    64 KiB, the unpickler calls ``read`` once per frame, and each call lets the interpreter
    hand the GIL to a thread that waits for it, such as the event loop's.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes | bytearray | memoryview | pickle.PickleBuffer) -> None:
        self.data = data

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        # At protocol 5 the bytes may travel out of band: aiomr's process pool writes them to
        # the worker's pipe as they are, and reads them into the buffer the unpickler gets,
        # so a large chunk or partial is never copied by pickle (a GIL-holding memcpy).
        if isinstance(protocol, int) and protocol >= 5:
            return (Sealed, (pickle.PickleBuffer(self.data),))
        return (Sealed, (bytes(self.data),))


def seal(value: Any) -> Any:
    """Seal ``value`` when it is a large container and this is a worker process."""
    if (
        _in_worker_process
        and isinstance(value, dict | list | set | frozenset | tuple)
        and len(value) >= SEAL_MIN_ITEMS
    ):
        return Sealed(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
    return value


def unseal(value: Any) -> Any:
    """Return the partial a `Sealed` holds, unpickled in slices; anything else as it is."""
    if type(value) is Sealed:
        return pickle.Unpickler(_SliceReader(value.data)).load()
    return value


class _FrameSink:
    """A file whose ``write`` is Python code, collecting what a pickler writes."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)


def seal_records(records: list[Any]) -> Sealed:
    """Pickle a chunk of records in the caller, on a helper thread, for a worker process.

    The way out mirrors `unseal`: a process pool pickles each task's arguments in one call on
    its feeder thread, holding the GIL throughout (some 4 ms for 65,536 short lines), and the
    event loop waits. Pickled here through a Python-level ``write``, the GIL is handed over
    at every frame of about 64 KiB; the pool then copies plain bytes, and `execute` unpickles
    them in the worker.
    """
    sink = _FrameSink()
    pickle.Pickler(sink, pickle.HIGHEST_PROTOCOL).dump(records)
    return Sealed(b"".join(sink.parts))


def execute(body: Callable[[Any, int], Any], payload: Any, start: int) -> Outcome | Failure:
    """Run one map task and capture its result or its failure, never raising.

    ``start`` is the position in the source of the payload's first record. A body that
    failed at a record notes which (`aiomr._blame`); the note travels in the `Failure`.
    """
    started = time.perf_counter()
    try:
        if type(payload) is Sealed:  # a chunk the caller pickled itself (`seal_records`)
            payload = pickle.loads(payload.data)
        value = body(payload, start)
    except Exception as exc:
        note = take_note(exc)
        formatted = traceback.format_exc()
        record = note if isinstance(note, int) else None
        return Failure(exc, formatted, os.getpid(), record, reading=note == INPUT)
    skipped: tuple[Skipped, ...] = ()
    read = None
    if isinstance(value, Counted):
        value, count, skipped, read = value
    else:
        count = len(payload) if isinstance(payload, list) else 0
    seconds = time.perf_counter() - started
    return Outcome(seal(value), count, seconds, os.getpid(), skipped, read)


EMPTY: Any = Marker(__name__, "EMPTY")
"""The partial of a task that read no record (an empty compressed file, say): folded as
nothing at all by the caller."""


class Counted(NamedTuple):
    """A body's result with the records it read, and the records it skipped as bad."""

    value: Any
    records: int
    skipped: tuple[Skipped, ...] = ()
    bytes_read: int | None = None
    """For a split: the bytes it read, when not all it covers (else ``None``)."""


class Skipped(NamedTuple):
    """A record the mapper or parser failed on, skipped under ``on_error="skip"``."""

    position: int
    """Position of the record in its chunk (or split)."""
    record: str
    """A short repr of the record."""
    error: str
    """The exception's type and message."""
    where: str = ""
    """Where the record came from, when the worker knows better than the caller."""

    @classmethod
    def of(
        cls,
        index: int,
        raw: Any,
        exc: BaseException,
        where: Callable[[int, Any], str] | None = None,
    ) -> Skipped:
        """Describe record ``raw`` (``index`` in its chunk) that failed with ``exc``."""
        located = where(index, raw) if where is not None else ""
        return cls(index, short_repr(raw), f"{type(exc).__qualname__}: {exc}", located)


_REPR_LIMIT = 200


def short_repr(value: Any) -> str:
    """Return ``repr(value)`` cut to a readable length."""
    text = repr(value)
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."


def guarded_fold(
    mapper: Callable[[Any], Any],
    reducer: Callable[[Any, Any], Any],
    parser: Callable[[Any], Any] | None,
    records: Iterable[Any],
    where: Callable[[int, Any], str] | None = None,
) -> Counted:
    """Record mode with ``on_error`` other than ``"raise"``: skip the records that fail.

    A record whose parsing or mapping raises is left out and reported (index, a short repr,
    the error); the reducer's own errors still fail the task, as they are not about one
    record. Slower than `fold_records` by a ``try`` per record.
    """
    acc: Any = EMPTY
    skipped: list[Skipped] = []
    count = 0
    for index, raw in enumerate(records):
        count += 1
        try:
            value = mapper(parser(raw) if parser is not None else raw)
        except Exception as exc:
            skipped.append(Skipped.of(index, raw, exc, where))
            continue
        try:
            acc = value if acc is EMPTY else reducer(acc, value)
        except Exception as exc:
            note_record(exc, index)
            raise
    return Counted(acc, count, tuple(skipped))


class _Tally:
    """Count the records behind the items an iterator yields, at one generator frame's cost.

    ``weight`` says how many records one item stands for (a block of lines, raw bytes);
    without it each item is one record, counted by ``enumerate`` (no call per item).
    """

    def __init__(self, weight: Callable[[Any], int] | None = None) -> None:
        self.n = 0
        self._weight = weight

    def wrap(self, items: Iterable[Any]) -> Iterator[Any]:
        weight = self._weight
        try:
            if weight is None:
                for self.n, item in enumerate(items, 1):
                    yield item
                return
            for item in items:
                self.n += weight(item)
                yield item
        except Exception as exc:  # reading the input failed: the error names its place
            note_input(exc)
            raise


def _fold_values(
    values: Iterator[Any], reducer: Callable[[Any, Any], Any], tally: _Tally
) -> Counted:
    """Fold mapped values into one partial; `EMPTY` when the split held no record."""
    first = next(values, EMPTY)
    if first is EMPTY:
        return Counted(EMPTY, 0)
    return Counted(functools.reduce(reducer, values, first), tally.n)


class RecordParser(Protocol):
    """What turns the raw records a source sends into records (`aiomr.sources.lines`)."""

    def __call__(self, raw: Any, /) -> Any:
        """Parse one record; raise `RecordError` if it is malformed."""
        ...

    def parse_many(self, raws: list[Any], /) -> list[Any]:
        """Parse a chunk; a malformed record raises `RecordError` carrying its ``index``."""
        ...


def parse_records(parser: RecordParser, records: list[Any]) -> list[Any]:
    """Parse every record of a chunk; a malformed one raises `RecordError` noting its index
    (`aiomr._blame`), so the caller can name its file and line."""
    try:
        return parser.parse_many(records)
    except RecordError as exc:
        if exc.index is not None:
            note_record(exc, exc.index)
        raise


def fold_parsed(
    parser: RecordParser,
    mapper: Callable[[Any], Any],
    reducer: Callable[[Any, Any], Any],
    records: list[Any],
    start: int,
) -> Any:
    """Record mode over lines the caller streamed: parse here, in the worker, then fold."""
    return fold_records(mapper, reducer, parse_records(parser, records), start)


def map_parsed_chunk(
    parser: RecordParser, mapper: Callable[[list[Any]], Any], records: list[Any], start: int
) -> Any:
    """Chunk mode over streamed lines: parse here, then map the whole chunk."""
    return mapper(parse_records(parser, records))


def fold_split_records(
    reader: Any,
    mapper: Callable[[Any], Any],
    reducer: Callable[[Any, Any], Any],
    splits: list[Any],
    start: int,
) -> Counted:
    """Record mode over a byte-range split: read, decode, parse and fold it here.

    The records are the reader's blocks chained in C; the blocks' generator is closed in
    ``finally``, so a split whose mapper fails leaves no file or cursor open behind it.
    """
    tally = _Tally()
    blocks = reader.line_blocks(splits[0])
    try:
        records = itertools.chain.from_iterable(blocks)
        return _fold_values(map(mapper, tally.wrap(records)), reducer, tally)
    except Exception as exc:  # at the last record handed out, unless reading failed
        note_record(exc, tally.n - 1)
        raise
    finally:
        close_reading(blocks)


def fold_split_chunks(
    reader: Any,
    mapper: Callable[[list[Any]], Any],
    reducer: Callable[[Any, Any], Any],
    splits: list[Any],
    start: int,
) -> Counted:
    """Chunk mode over a split: the mapper sees one block's records at a time."""
    tally = _Tally(len)
    blocks = reader.line_blocks(splits[0])
    try:
        return _fold_values(map(mapper, tally.wrap(blocks)), reducer, tally)
    finally:
        close_reading(blocks)


def map_split_blocks(
    reader: Any, mapper: Callable[[Iterator[bytes]], Any], splits: list[Any], start: int
) -> Any:
    """Blocks mode: the mapper consumes the split's raw blocks itself.

    Lines are counted for the job's statistics with one ``bytes.count`` per block (C speed,
    about 1% of a tight counting loop).
    """
    tally = _Tally(reader.records_in_block)
    blocks = reader.blocks(splits[0])
    try:
        value = mapper(tally.wrap(blocks))
    finally:
        close_reading(blocks)
    return Counted(value, tally.n)


def close_reading(items: object) -> None:
    """Close what a task read its input from (a generator holding a file or a database
    cursor), if it can be closed.

    An exception keeps the frames it passed through, and with them a half-read generator,
    for as long as the exception lives: in the caller, for threads and inline execution,
    that may be long. Closing in ``finally`` releases the input when the task ends.
    """
    close = getattr(items, "close", None)
    if close is not None:
        close()


def fold_records(
    mapper: Callable[[Any], Any],
    reducer: Callable[[Any, Any], Any],
    records: list[Any],
    start: int,
) -> Any:
    """Map every record of a chunk and fold the values into one partial, in order.

    Nothing is counted per record: on failure, what the list's iterator has left says which
    record the mapper or the reducer was on (the last one handed out).
    """
    rest = iter(records)
    try:
        return functools.reduce(reducer, map(mapper, rest))
    except Exception as exc:
        note_record(exc, len(records) - operator.length_hint(rest) - 1)
        raise


def map_chunk(mapper: Callable[[list[Any]], Any], records: list[Any], start: int) -> Any:
    """Chunk mode: the mapper turns the whole chunk into one partial."""
    return mapper(records)


def fold_guarded(
    mapper: Callable[[Any], Any],
    reducer: Callable[[Any, Any], Any],
    parser: Callable[[Any], Any] | None,
    records: list[Any],
    start: int,
) -> Counted:
    """Record mode over records the caller sent, skipping bad ones."""
    return guarded_fold(mapper, reducer, parser, records)


def fold_split_guarded(
    reader: Any,
    mapper: Callable[[Any], Any],
    reducer: Callable[[Any, Any], Any],
    splits: list[Any],
    start: int,
) -> Counted:
    """Record mode over a split, skipping bad records; the reader says where each one is."""
    lines = list(reading(reader.located_lines(splits[0])))

    def where(index: int, raw: Any) -> str:
        place, offset, _ = lines[index]
        return str(reader.where(place, offset))

    return guarded_fold(
        mapper, reducer, reader.decode_and_parse, (line for _, _, line in lines), where
    )
