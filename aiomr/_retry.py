"""When to run a failed map task again.

A task whose worker process died (killed, ``os._exit``, a crash, the OOM killer) never
delivered its partial, so running its chunk again cannot count anything twice: the pool is
replaced and the chunk resubmitted, up to ``max_attempts`` runs in all. A chunk that keeps
killing its worker is then reported as a poison chunk instead of looping forever. Exceptions
from user code are retried only when their type is listed in ``retry_on``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._exceptions import BrokenWorkerError, UnpicklableError

__all__ = ["RetryPolicy"]


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
        task_timeout: seconds one run of a map task may take, counted from when a worker
            starts it (time spent queued behind other tasks does not count); a run that
            takes longer has its worker process killed (process executors only), and counts
            as a failed run. Reduce tasks of key-based jobs have no time limit.
    """

    max_attempts: int = 3
    retry_on: tuple[type[BaseException], ...] = ()
    backoff: float = 0.05
    max_backoff: float = 5.0
    task_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.task_timeout is not None and self.task_timeout <= 0:
            raise ValueError("task_timeout must be > 0")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(f"max_attempts must be an int, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
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
        return isinstance(exc, (BrokenWorkerError, *self.retry_on))

    def delay(self, attempt: int) -> float:
        """Seconds to wait before run ``attempt + 1``, after ``attempt`` failed runs."""
        return float(min(self.backoff * 2 ** (attempt - 1), self.max_backoff))
