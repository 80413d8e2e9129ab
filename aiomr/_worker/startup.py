"""Prepare a worker process before its first task: signals, priority, and an end with its caller.

Nothing here touches the event loop; `initialize_worker` runs once in each worker process of
a pool (`aiomr.executors._process_worker.serve`).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time

__all__ = ["in_worker_process", "initialize_worker"]

in_worker_process = False
"""Set by `initialize_worker`: this process is a worker of a process pool. Read it through the
module (``startup.in_worker_process``): a name imported from here keeps the value it had."""


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
    global in_worker_process
    in_worker_process = True
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
