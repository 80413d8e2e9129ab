"""Processes as the operating system reports them: state, CPU time, OOM kills, signals.

The pool thread reads these to judge a worker that ended or went quiet. Each is one small
read of ``/proc`` (Linux), or ``None`` where there is no ``/proc``.
"""

from __future__ import annotations

import contextlib
import os
import signal

__all__ = ["describe_exit", "oom_kills", "proc_state", "send", "stopped", "unprompted_kill"]


def oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed since boot (``None``: unknown)."""
    try:
        with open("/proc/vmstat", "rb") as f:
            for line in f:
                if line.startswith(b"oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def unprompted_kill(oom_kills_before: int | None) -> bool:
    """Whether a SIGKILL was not the OOM killer's: its count stood still since the task began."""
    return oom_kills_before is not None and oom_kills() == oom_kills_before


def proc_state(pid: int) -> tuple[str, int] | None:
    """``(state letter, CPU ticks used)`` of process ``pid`` from ``/proc``, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()  # the name, in parentheses, may hold spaces
    try:
        return fields[0].decode(), int(fields[11]) + int(fields[12])
    except (IndexError, ValueError):
        return None


def stopped(state: tuple[str, int] | None) -> bool:
    """Whether a `proc_state` says stopped: by a signal (``T``) or a debugger (``t``)."""
    return state is not None and state[0] in "Tt"


def send(pid: int, how: int = signal.SIGKILL) -> None:
    """Send ``how`` to process ``pid`` if it is known (never to a group: ``pid`` 0 would be)."""
    if pid > 0:
        with contextlib.suppress(OSError):
            os.kill(pid, how)


def describe_exit(pid: int, code: int | None) -> str:
    """Say how worker ``pid`` ended, from its exit code."""
    if code is None:
        return f"worker {pid} ended; how is unknown"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"worker {pid} killed by {name}"
    return f"worker {pid} exited with status {code}"
