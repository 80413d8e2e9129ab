"""Large chunks and partials cross between the caller and a worker process sealed.

A `Sealed` value is a container already pickled, frame by frame, by Python-level code that
hands the GIL over between pickle's frames: chunks of records on their way out (sealed in the
caller by `seal_records`, on a helper thread; unsealed by `aiomr._worker.run.execute`) and
large partials on their way back (sealed by `execute` in the worker; unsealed by `unseal` in
the caller). The event loop's thread is never held for the whole of one large pickling.
"""

from __future__ import annotations

import pickle
from typing import Any

from . import startup

__all__ = ["SEAL_MIN_ITEMS", "Sealed", "seal", "seal_records", "unseal"]

SEAL_MIN_ITEMS = 2_000
"""Partials of at least this many items leave a worker process sealed (see `Sealed`)."""


_COPY_SLICE = 1 << 20
"""Bytes copied at once when a large object is read out of a pickle (about 0.1 ms)."""


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
        # One large bytes object is one read of its whole length: copied a slice at a time,
        # so the GIL can pass to the event loop's thread between slices.
        target = memoryview(buffer).cast("B")
        start = self._at
        end = min(len(self._view), start + len(target))
        for at in range(start, end, _COPY_SLICE):
            stop = min(end, at + _COPY_SLICE)
            target[at - start : stop - start] = self._view[at:stop]
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
        startup.in_worker_process
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
