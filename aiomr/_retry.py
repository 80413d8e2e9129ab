"""When to run a failed map task again.

A task whose worker process died (killed, ``os._exit``, a crash, the OOM killer) never
delivered its partial, so running its chunk again cannot count anything twice: a new worker
takes the dead one's place and the chunk is resubmitted, up to ``max_attempts`` runs in
all. A chunk that keeps killing its worker is then reported as a poison chunk instead of
looping forever. Exceptions from user code are retried only when their type is listed in
``retry_on``.

A worker SIGKILLed from outside is another matter: its chunk did nothing wrong, so like
Spark, which does not count executor losses the application did not cause against
``spark.task.maxFailures``, aiomr does not count such a loss against ``max_attempts``. It can
tell one because the kernel counts every kill of its OOM killer (``oom_kill`` in
``/proc/vmstat``): a worker that died of SIGKILL while that count stood still, and not for its
``task_timeout``, was killed by something else. So was a worker the pool killed because it
was stopped (SIGSTOP, a debugger). Those losses have their own, larger bound, ``max_kills``,
so that a mapper that SIGKILLs its own worker is still reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from ._checks import check_seconds
from ._exceptions import BrokenWorkerError, UnpicklableError

__all__ = ["RetryPolicy", "Tally", "Verdict"]

log = logging.getLogger(__name__)

Verdict = Literal["failed", "killed"]
"""How a failed task is judged: it ``failed`` (counts against its attempts), or its worker
was ``killed`` from outside or stopped (counts against ``max_kills`` only). A task whose
worker ended before it started is not failed at all: the executor runs it elsewhere."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and after what failures, a chunk runs again.

    ```python
    policy = aiomr.RetryPolicy(max_attempts=5, retry_on=(ConnectionError,), backoff=0.5)
    total = await aiomr.map_reduce(urls, fetch_size, operator.add, retry=policy)
    ```

    Args:
        max_attempts: runs of one chunk at most, the first included (1 disables retries).
        retry_on: exception types from user code that are worth another run; the loss of a
            worker process is always retried.
        backoff: seconds before the second run; doubled for each further run, at most
            `max_backoff`.
        max_backoff: the longest wait between two runs.
        task_timeout: seconds one run of a task may take (a map task, or a reduce task of
            a key-based job), counted from when a worker starts it (time spent queued
            behind other tasks, and a new worker's loading of the job's code and modules,
            do not count); a run that takes longer has its worker process killed
            (executors that can kill tasks: the process executor), and counts as a failed
            run.
        max_kills: times one chunk may lose its worker to a SIGKILL from outside (not from
            the OOM killer, not for `task_timeout`), or to being stopped, and run again;
            these losses do not count toward `max_attempts`. Where the OOM count cannot be
            read (no ``/proc``), every loss counts toward `max_attempts`.
    """

    max_attempts: int = 3
    retry_on: tuple[type[BaseException], ...] = ()
    backoff: float = 0.05
    max_backoff: float = 5.0
    task_timeout: float | None = None
    max_kills: int = 10

    def __post_init__(self) -> None:
        check_seconds("task_timeout", self.task_timeout, optional=True)
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(f"max_attempts must be an int, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if isinstance(self.max_kills, bool) or not isinstance(self.max_kills, int):
            raise TypeError(f"max_kills must be an int, got {self.max_kills!r}")
        if self.max_kills < 0:
            raise ValueError("max_kills must be >= 0")
        if not isinstance(self.retry_on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in self.retry_on
        ):
            raise TypeError("retry_on must be a tuple of exception types")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff and max_backoff must be >= 0")

    def retriable(self, exc: BaseException) -> bool:
        """Whether a chunk that failed with ``exc`` deserves another run."""
        if isinstance(exc, UnpicklableError):  # it would fail the same way every time
            return False
        if getattr(exc, "aiomr_retried", False):  # a record's coroutine, retried on its own
            return False
        return isinstance(exc, (BrokenWorkerError, *self.retry_on))

    def delay(self, attempt: int) -> float:
        """Seconds to wait before run ``attempt + 1``, after ``attempt`` failed runs."""
        return float(min(self.backoff * 2 ** (attempt - 1), self.max_backoff))


class Tally:
    """One job's failed runs, per task, and what each new failure earns under ``policy``."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self._runs: dict[int, int] = {}
        self._kills: dict[int, int] = {}

    def again_after(
        self, task: int, verdict: Verdict, exc: BaseException, where: str
    ) -> float | None:
        """Seconds to wait before running ``task`` (described by ``where``) again after it
        failed with ``exc``; ``None`` when it must not run again, ``exc`` then carrying a
        note that says why (the caller re-raises it)."""
        policy = self.policy
        if verdict == "killed":
            lost = self._kills.get(task, 0) + 1
            self._kills[task] = lost
            if lost <= policy.max_kills:
                log.warning(
                    "%s: its worker was killed from outside or stopped; running it again "
                    "(loss %d of at most %d)",
                    where,
                    lost,
                    policy.max_kills,
                )
                return 0.0
            exc.add_note(
                f"aiomr: {where} lost its worker to a SIGKILL from outside or a stop {lost} "
                f"times (max_kills={policy.max_kills}); giving up on it"
            )
            return None
        runs = self._runs.get(task, 1)
        if not policy.retriable(exc) or runs >= policy.max_attempts:
            if runs > 1:
                exc.add_note(
                    f"aiomr: {where} failed {runs} times "
                    f"(max_attempts={policy.max_attempts}); giving up on it"
                )
            return None
        self._runs[task] = runs + 1
        delay = policy.delay(runs)
        log.warning(
            "%s failed (%s: %s); running it again in %.2f s (run %d of at most %d)",
            where,
            type(exc).__name__,
            exc,
            delay,
            runs + 1,
            policy.max_attempts,
        )
        return delay
