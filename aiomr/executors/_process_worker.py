"""The worker side of `ProcessExecutor`: one process, its own pipes, one task at a time.

A worker reads tasks from a pipe of its own and writes each reply to another pipe of its own.
Nothing is shared between workers (no common queue, no lock), so a worker that is stopped
(SIGSTOP, a debugger), stuck in C code or dying holds up its own task and nobody else's.

Every message is a frame: a header of two unsigned 64-bit integers, the body's length and a
tag, then the body (`pack`). A task's tag is its sequence number and its reply carries the
same tag; tag 0 is for the worker's own messages (``ready`` once it has started). A body is
pickled at protocol 5 with its large buffers out of band (a sealed chunk or partial, see
`aiomr._worker.Sealed`): they follow the pickle as they are, written from the object that
holds them and read into the buffer the unpickler gets, so pickle never copies them.

Signs of life go through memory, not the pipes: each worker owns a slot of two counters in a
small file mapped by the caller and every worker (`Slots`). A thread of the worker bumps the
first every `BEAT_SECONDS`; the main thread writes the sequence number of each task into the
second just before it runs it. The caller reads both without a system call: a heartbeat that
stands still says the process is stopped or wedged; the second says whether a task it was sent
has started at all.
"""

from __future__ import annotations

import mmap
import os
import pickle
import struct
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from .._worker import _SliceReader, initialize_worker

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

_SLOT = struct.Struct("<QQ")
_COUNT = struct.Struct("<I")
_SIZE = struct.Struct("<Q")


def pack(obj: Any) -> list[Any]:
    """Pickle ``obj`` into the parts of a frame's body: a table of the out-of-band buffers'
    sizes, the pickle, then the buffers themselves (not copied)."""
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(obj, 5, buffer_callback=buffers.append)
    raws = [buffer.raw() for buffer in buffers]
    table = _COUNT.pack(len(raws)) + b"".join(_SIZE.pack(raw.nbytes) for raw in raws)
    return [table, data, *raws]


def body_size(parts: list[Any]) -> int:
    """Bytes of a body `pack` made."""
    return sum(memoryview(part).nbytes for part in parts)


def unpack(body: bytes | bytearray, *, sliced: bool = False) -> Any:
    """Unpickle a body `pack` made; its buffers stay views into ``body``. ``sliced``: read
    the pickle through a file whose ``read`` is Python code, which hands the GIL over between
    pickle's frames (`aiomr._worker.Sealed`)."""
    view = memoryview(body)
    (count,) = _COUNT.unpack_from(view)
    sizes = [_SIZE.unpack_from(view, _COUNT.size + _SIZE.size * i)[0] for i in range(count)]
    start = _COUNT.size + _SIZE.size * count
    end = len(view) - sum(sizes)
    buffers = []
    for size in sizes:
        buffers.append(view[end : end + size])
        end += size
    data = view[start : len(view) - sum(sizes)]
    if sliced:
        return pickle.Unpickler(_SliceReader(data), buffers=buffers).load()
    return pickle.loads(data, buffers=buffers)


class ReplyPicklingError(pickle.PicklingError):
    """A task's result (or exception) could not be pickled in the worker to travel back."""


class Slots:
    """The counters of every worker of one pool, in a file mapped into each process.

    Slot ``i`` holds two unsigned 64-bit counters: heartbeats, and the sequence number of the
    task its worker started last.
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

    def read(self, slot: int) -> tuple[int, int]:
        """``(heartbeats, sequence number of the task started last)`` of ``slot``."""
        beats, started = _SLOT.unpack_from(self._map, slot * _SLOT.size)
        return int(beats), int(started)

    def clear(self, slot: int) -> None:
        """Zero ``slot`` before a new worker takes it."""
        _SLOT.pack_into(self._map, slot * _SLOT.size, 0, 0)

    def beat(self, slot: int, beats: int) -> None:
        struct.pack_into("<Q", self._map, slot * _SLOT.size, beats)

    def start(self, slot: int, seq: int) -> None:
        struct.pack_into("<Q", self._map, slot * _SLOT.size + 8, seq)

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


def _run(call: bytearray) -> tuple[bool, Any]:
    """Run the packed ``(fn, args)``: ``(True, result)`` or ``(False, (exception, formatted
    traceback))``."""
    try:
        fn, args = unpack(call)
        return True, fn(*args)
    except BaseException as exc:  # the caller decides what it means, as concurrent.futures does
        return False, (exc, traceback.format_exc())


def _reply(call: bytearray) -> list[Any]:
    """Run a task and pickle its reply.

    The reply may hold an exception, whose traceback holds the frames of the task, and they
    hold this frame as their caller: a cycle, which would keep whatever the task left open
    (a file, a database cursor inside a half-read generator) alive until the next garbage
    collection -- in a worker that waits for its next task, perhaps never. So nothing here
    keeps the reply once it is pickled.
    """
    reply = _run(call)
    try:
        return pack(reply)
    except Exception as exc:
        what = "result" if reply[0] else f"exception {type(reply[1][0]).__qualname__}"
        error = ReplyPicklingError(f"the task's {what} cannot be pickled: {exc}")
        return pack((False, (error, traceback.format_exc())))
    finally:
        del reply


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
            return
        size, tag = HEADER.unpack(header)
        call = _read_exact(source, size)
        if call is None or tag == CONTROL:
            return
        slots.start(slot, tag)
        reply = _reply(call)
        del call
        _write_frame(sink, tag, reply)
        del reply
