"""The worker side of `ProcessExecutor`: one process, its own pipes, one task at a time.

A worker reads tasks from a pipe of its own and writes each reply to another pipe of its own.
Nothing is shared between workers (no common queue, no lock), so a worker that is stopped
(SIGSTOP, a debugger), stuck in C code or dying holds up its own task and nobody else's.

Every message is a frame: a header of two unsigned 64-bit integers, the body's length and a
tag, then the body (`pack`). A task's tag is its sequence number and its reply carries the
same tag; tag 0 is for the worker's own messages (``ready`` once it has started). A body is
pickled at protocol 5 with its large buffers out of band (a sealed chunk or partial, see
`aiomr._worker.sealing.Sealed`): they follow the pickle as they are, written from the object that
holds them and read into the buffer the unpickler gets, so pickle never copies them.

Signs of life go through memory, not the pipes: each worker owns a slot of three counters in
a small file mapped by the caller and every worker (`Slots`). A thread of the worker bumps the
first every `BEAT_SECONDS`; the main thread writes the sequence number of each task into the
second as soon as it has read it, and into the third once the task's code is loaded and it
runs. The caller reads them without a system call: a heartbeat that stands still says the
process is stopped or wedged; the second says whether a task it was sent was taken up at all
(a worker that dies loading a task's code is that task's doing); the third starts the clock
of ``task_timeout``, which must not count a new worker importing the job's modules.
"""

from __future__ import annotations

import functools
import mmap
import os
import pickle
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from .._worker.job_code import ShippedCall
from .._worker.sealing import _SliceReader
from .._worker.startup import initialize_worker

__all__ = [
    "BEAT_SECONDS",
    "CONTROL",
    "HEADER",
    "ReplyPicklingError",
    "Slots",
    "body_size",
    "pack",
    "serve",
    "unpack",
]

HEADER = struct.Struct("<QQ")
"""A frame's header: the body's length in bytes, and its tag."""
CONTROL = 0
"""The tag of a worker's own messages; tasks are numbered from 1."""
BEAT_SECONDS = 0.1
"""How often a worker's heartbeat thread bumps its counter. Each beat takes the GIL for a
moment (the main thread hands it over within the 5 ms switch interval), a cost far below 1%."""

_SLOT = struct.Struct("<QQQ")
_COUNT = struct.Struct("<I")
_SIZE = struct.Struct("<Q")


ALIGN = 64
"""Out-of-band buffers start at multiples of this many bytes in a frame's body: arrays that
are unpickled as views into the body (Arrow's, NumPy's) then need no copy, and Arrow does
not warn of poorly aligned input."""


def _pad(offset: int) -> int:
    return -offset % ALIGN


def pack(obj: Any) -> list[Any]:
    """Pickle ``obj`` into the parts of a frame's body: a table of the pickle's and the
    out-of-band buffers' sizes, the pickle, then the buffers themselves (not copied), each
    at an offset that is a multiple of `ALIGN`."""
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(obj, 5, buffer_callback=buffers.append)
    raws = [buffer.raw() for buffer in buffers]
    table = _COUNT.pack(len(raws)) + b"".join(
        _SIZE.pack(n) for n in (len(data), *(r.nbytes for r in raws))
    )
    parts: list[Any] = [table, data]
    offset = len(table) + len(data)
    for raw in raws:
        if gap := _pad(offset):
            parts.append(bytes(gap))
            offset += gap
        parts.append(raw)
        offset += raw.nbytes
    return parts


def body_size(parts: list[Any]) -> int:
    """Bytes of a body `pack` made."""
    return sum(memoryview(part).nbytes for part in parts)


def unpack(body: bytes | bytearray | mmap.mmap, *, sliced: bool = False) -> Any:
    """Unpickle a body `pack` made; its buffers stay views into ``body``. ``sliced``: read
    the pickle through a file whose ``read`` is Python code, which hands the GIL over between
    pickle's frames (`aiomr._worker.sealing.Sealed`)."""
    view = memoryview(body)
    (count,) = _COUNT.unpack_from(view)
    sizes = [_SIZE.unpack_from(view, _COUNT.size + _SIZE.size * i)[0] for i in range(count + 1)]
    start = _COUNT.size + _SIZE.size * (count + 1)
    data = view[start : start + sizes[0]]
    offset = start + sizes[0]
    buffers = []
    for size in sizes[1:]:
        offset += _pad(offset)
        buffers.append(view[offset : offset + size])
        offset += size
    if sliced:
        return pickle.Unpickler(_SliceReader(data), buffers=buffers).load()
    return pickle.loads(data, buffers=buffers)


class ReplyPicklingError(pickle.PicklingError):
    """A task's result (or exception) could not be pickled in the worker to travel back."""


class Slots:
    """The counters of every worker of one pool, in a file mapped into each process.

    Slot ``i`` holds three unsigned 64-bit counters: heartbeats, and the sequence numbers of
    the task its worker took up last and of the task it started running last.
    """

    def __init__(self, path: str, count: int, *, create: bool = False) -> None:
        size = max(1, count) * _SLOT.size
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
        try:
            if create:
                os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.count = count

    def read(self, slot: int) -> tuple[int, int, int]:
        """``(heartbeats, task taken up last, task started last)`` of ``slot``."""
        beats, taken, started = _SLOT.unpack_from(self._map, slot * _SLOT.size)
        return int(beats), int(taken), int(started)

    def clear(self, slot: int) -> None:
        """Zero ``slot`` before a new worker takes it."""
        _SLOT.pack_into(self._map, slot * _SLOT.size, 0, 0, 0)

    def beat(self, slot: int, beats: int) -> None:
        struct.pack_into("<Q", self._map, slot * _SLOT.size, beats)

    def take(self, slot: int, seq: int) -> None:
        struct.pack_into("<Q", self._map, slot * _SLOT.size + 8, seq)

    def start(self, slot: int, seq: int) -> None:
        struct.pack_into("<Q", self._map, slot * _SLOT.size + 16, seq)

    def close(self) -> None:
        self._map.close()


def _heartbeat(slots: Slots, slot: int) -> None:
    beats = 0
    while True:
        beats += 1
        slots.beat(slot, beats)
        time.sleep(BEAT_SECONDS)


def _read_exact(fd: int, size: int) -> bytearray | None:
    """Read ``size`` bytes from ``fd``; ``None`` at end of file (the caller closed the pipe)."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            return None
        got += n
    return buffer


def _write_frame(fd: int, tag: int, parts: list[Any]) -> None:
    for part in (HEADER.pack(body_size(parts), tag), *parts):
        view = memoryview(part).cast("B")
        while view:
            view = view[os.write(fd, view) :]


def _run(call: bytearray, started: Callable[[], None]) -> tuple[bool, Any]:
    """Run the packed ``(fn, args)``: ``(True, result)`` or ``(False, (exception, formatted
    traceback))``. ``started`` is called once the code is loaded, just before it runs."""
    try:
        fn, args = unpack(call)
        if isinstance(fn, ShippedCall):  # a job's shipped code: import it before the clock
            fn.load()
        started()
        return True, fn(*args)
    except BaseException as exc:  # the caller decides what it means, as concurrent.futures does
        return False, (exc, traceback.format_exc())


def _reply(call: bytearray, started: Callable[[], None]) -> list[Any]:
    """Run a task and pickle its reply.

    The reply may hold an exception, whose traceback holds the frames of the task, and they
    hold this frame as their caller: a cycle, which would keep whatever the task left open
    (a file, a database cursor inside a half-read generator) alive until the next garbage
    collection -- in a worker that waits for its next task, perhaps never. So nothing here
    keeps the reply once it is pickled.
    """
    reply = _run(call, started)
    try:
        return pack(reply)
    except Exception as exc:
        what = "result" if reply[0] else f"exception {type(reply[1][0]).__qualname__}"
        error = ReplyPicklingError(f"the task's {what} cannot be pickled: {exc}")
        return pack((False, (error, traceback.format_exc())))
    finally:
        del reply


def _stop_coroutines() -> None:
    """Before the worker exits: end the coroutines of coroutine mappers, and close their
    jobs' resources, if this worker ran any (`aiomr._worker.coroutine_runtime`)."""
    runtime = sys.modules.get("aiomr._worker.coroutine_runtime")
    if runtime is not None:
        runtime.stop_runtime()


def serve(
    tasks: Connection,
    replies: Connection,
    slots_path: str,
    slot: int,
    slot_count: int,
    niceness: int,
    caller: int,
) -> None:
    """Run tasks from ``tasks`` until the caller closes it; the worker process's main."""
    initialize_worker(niceness, caller)
    slots = Slots(slots_path, slot_count)
    threading.Thread(target=_heartbeat, args=(slots, slot), daemon=True).start()
    source, sink = tasks.fileno(), replies.fileno()
    _write_frame(sink, CONTROL, pack(("ready", os.getpid())))
    while True:
        header = _read_exact(source, HEADER.size)
        if header is None:
            return _stop_coroutines()
        size, tag = HEADER.unpack(header)
        call = _read_exact(source, size)
        if call is None or tag == CONTROL:
            return _stop_coroutines()
        slots.take(slot, tag)
        reply = _reply(call, functools.partial(slots.start, slot, tag))
        del call
        _write_frame(sink, tag, reply)
        del reply
