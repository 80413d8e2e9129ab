"""The caller's handle on one worker process: its pipes, its tasks, what is known of it.

Only the pool thread touches a handle's pipes. Writes and reads never block: a task is
queued as memory views of its frame and written as far as the pipe takes it (`flush`), a
reply is read into a buffer of the frame's size as far as the pipe holds it (`receive`), so
a worker that stops reading or writing halfway holds up nothing but its own pipe.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import mmap
import multiprocessing.process
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

from .._retry import Verdict
from ._process_worker import HEADER, body_size

__all__ = ["Task", "WorkerHandle"]

_PIPE_SIZE = 1 << 20
_MAPPED = 1 << 20
"""Bodies from this size on are read into anonymous memory maps, not bytearrays: a bytearray
is zeroed when made, holding the GIL (32 ms for 45 MB here, the event loop's thread waiting);
a map's pages are made by the kernel as ``readv`` fills them, with the GIL released."""


def _body_buffer(size: int) -> bytearray | mmap.mmap:
    """A writable buffer of ``size`` bytes to read one frame's body into."""
    return mmap.mmap(-1, size) if size >= _MAPPED else bytearray(size)


"""Capacity asked of the reply pipes (Linux): fewer wake-ups for large replies."""


@dataclass(eq=False, slots=True)
class Task:
    """One submitted task, from `aiomr.executors._pool.Pool.submit` until its future is set."""

    seq: int
    call: list[Any]
    """The parts of its frame's body (`aiomr.executors._process_worker.pack`)."""
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    started_at: float = 0.0
    """When the pool thread first saw it running (its monotonic clock; 0 before): for
    ``limit``. Seen at a look every 0.1 s, so a task is killed at most that late."""
    oom_kills: int | None = None
    """The OOM killer's count when it started (`aiomr.executors._proc.oom_kills`)."""
    limit: float | None = None
    """Seconds it may run before its worker is killed (``task_timeout``), once set."""


@dataclass(eq=False)
class WorkerHandle:
    """One worker process and what the pool thread knows of it."""

    slot: int
    process: multiprocessing.process.BaseProcess
    tasks_out: Connection
    replies_in: Connection
    spawned_at: float
    pid: int = 0
    ready: bool = False
    ended: bool = False
    tasks: collections.deque[Task] = field(default_factory=collections.deque)
    """Tasks sent to it and not answered, in order: the first is the one it runs."""
    revoked: set[int] = field(default_factory=set)
    """Numbers of tasks taken back from it unstarted: their answers, if any, are ignored."""
    beats: int = 0
    """Its heartbeat count when the pool thread last looked."""
    last_sign: float = 0.0
    """When the pool thread last saw it alive (a heartbeat, CPU time used, ready)."""
    cpu: int | None = None
    ending: tuple[Verdict, str] | None = None
    """Why the pool killed it: ``(verdict for its task, description)``."""
    _outbox: collections.deque[memoryview] = field(default_factory=collections.deque)
    _head: bytearray = field(default_factory=lambda: bytearray(HEADER.size))
    _body: bytearray | mmap.mmap | None = None
    _tag: int = 0
    _got: int = 0

    def __post_init__(self) -> None:
        self.pid = self.process.pid or 0
        self.out_fd = self.tasks_out.fileno()
        self.in_fd = self.replies_in.fileno()
        os.set_blocking(self.out_fd, False)
        os.set_blocking(self.in_fd, False)
        if hasattr(fcntl, "F_SETPIPE_SZ"):
            with contextlib.suppress(OSError):
                fcntl.fcntl(self.in_fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)

    def send(self, task: Task) -> None:
        """Queue ``task`` for the worker (written by `flush`) and count it as its."""
        self.tasks.append(task)
        self.queue(task.seq, task.call)

    def queue(self, tag: int, parts: list[Any]) -> None:
        """Queue a frame of ``parts`` (no copy: memory views of them)."""
        self._outbox.append(memoryview(HEADER.pack(body_size(parts), tag)))
        self._outbox.extend(memoryview(part).cast("B") for part in parts)

    def flush(self) -> bool:
        """Write what is queued as far as the pipe takes it; True if some is left."""
        if self.ended:
            return False
        outbox = self._outbox
        try:
            while outbox:
                view = outbox[0]
                written = os.write(self.out_fd, view)
                if written < len(view):
                    outbox[0] = view[written:]
                    break
                outbox.popleft()
        except BlockingIOError:
            pass
        except OSError:  # the worker is gone; its sentinel says so in a moment
            outbox.clear()
        return bool(outbox)

    def receive(self, budget: float) -> Iterator[tuple[int, bytearray | mmap.mmap]]:
        """Yield ``(tag, body)`` for each whole frame the worker has written, reading at
        most about ``budget`` bytes and never waiting for more."""
        while budget > 0 and not self.ended:
            head = self._body is None
            target = memoryview(self._head if head else self._body)[self._got :]  # type: ignore[arg-type]
            try:
                n = os.readv(self.in_fd, [target])
            except OSError:  # nothing more for now (BlockingIOError), or the pipe is gone
                return
            if n == 0:
                return  # end of file: its sentinel tells the rest
            self._got += n
            budget -= n
            if head and self._got == HEADER.size:
                size, self._tag = HEADER.unpack(self._head)
                self._body, self._got = _body_buffer(size), 0
            if self._body is not None and self._got == len(self._body):
                body, self._body, self._got = self._body, None, 0
                yield self._tag, body

    def close(self) -> None:
        """Close the caller's ends of its pipes and forget its process. Idempotent."""
        self._outbox.clear()
        self.tasks_out.close()
        self.replies_in.close()
        with contextlib.suppress(Exception):
            self.process.close()
