"""Run tasks on a Dask cluster through distributed's asyncio-native client.

::

    caller (event loop)                   scheduler                     workers
    ship(code): cloudpickle once ──► WorkerPlugin "aiomr-code-TOKEN" ──► every worker, present
                                     (the scheduler keeps it, so        and future, holds the
                                     workers that join or restart       bytes; each unpickles
                                     get it too)                        them on first use
    submit(call, records, start)
      pickle the arguments (helper thread)
      client.submit(run_task, call, payload) ───────────────────────► run_task: load code,
                                                                      run it, pickle the result
      as_completed (one per connection) ◄── finished ────────────────┘
        └► fetch task (the connection's) ◄── bytes
      unpickle (helper thread when large)

What runs on the workers is in `_dask_worker`; the client, the cluster the executor started
and the fetching of results, bound to one event loop, in `_dask_connection`. Large partials
may instead stay on the workers and be combined there: see `_dask_tree`.

Shipping code once per job
--------------------------
A job's code is pickled once with cloudpickle and registered as a worker plugin named after
its token: the scheduler sends it once to every worker, and to every worker that joins or is
restarted later, before that worker runs any task. Tasks carry a `DaskCall`, a token of a
few dozen bytes. A scattered object would do the same until the one worker holding it died;
a plugin lives on the scheduler. Releasing the code unregisters the plugin.

Data per chunk
--------------
Arguments and results cross as bytes pickled by aiomr itself (the fastest protocol, with
cloudpickle for objects of classes defined in ``__main__``): a record or a partial that
cannot be pickled then fails its own task with a message naming it, instead of failing
inside the client's connection, and large payloads are pickled and unpickled on helper
threads instead of the event loop.

Event loops
-----------
An asynchronous client belongs to the event loop it was created in: the executor connects
lazily, in the loop of the first task, and keeps one connection per loop (see
`_dask_connection`), so it can serve one ``asyncio.run`` after another, as a process pool can.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import uuid
from collections.abc import Callable
from typing import Any

from .._exceptions import WorkerTraceback
from .._reducer import Folder
from .._worker.envelope import Failure, Outcome
from .._worker.job_code import dumps_code
from ._base import Executor, ShippedCode, default_max_workers
from ._dask_tree import (
    HELD,
    Held,
    HeldPartial,
    ReducerFailed,
    TreeFolder,
    combine,
    envelope,
    reducer_error,
)

try:
    import distributed
except ImportError as exc:  # pragma: no cover - the test environment installs the extra
    raise ImportError(
        "aiomr's Dask executor needs Dask's distributed scheduler, which is not installed: "
        "pip install 'aiomr[dask]'"
    ) from exc

# After the check above: these import distributed themselves.
from ._dask_connection import PLUGIN_PREFIX, Connection, Connector, total_threads
from ._dask_worker import CodePlugin, DaskCall, Unsendable, dumps, run_task

__all__ = ["DaskExecutor"]

COMBINE_ABOVE = 256 * 1024
"""Partials that pickle to more bytes are combined on the workers (`DaskExecutor`): past a
few hundred kilobytes, sending one to the caller, unpickling and folding it there costs
more than one more task on the cluster (a scheduling round trip of a millisecond or two)."""
_UNPICKLE_INLINE_BYTES = 128 * 1024
"""Results up to this size are unpickled on the event loop (a fraction of a millisecond);
larger ones on a helper thread, where a long unpickling cannot delay other callbacks."""


class _DaskShippedCode(ShippedCode):
    def __init__(self, executor: DaskExecutor, token: str) -> None:
        super().__init__(DaskCall(token))
        self._executor = executor
        self.token = token

    def release(self) -> None:
        self._executor._release(self.token)


class DaskExecutor(Executor):
    """Run tasks on a Dask cluster, through an asynchronous `distributed.Client`.

    Jobs run as they do on the process pool: same code, same answers, same errors. Point
    the executor at a running scheduler, or hand it a client you own:

        import operator

        import aiomr
        from aiomr.executors import DaskExecutor
        from distributed import LocalCluster


        async def main() -> None:
            async with (
                LocalCluster(n_workers=2, threads_per_worker=1, asynchronous=True) as cluster,
                DaskExecutor(cluster.scheduler_address) as executor,
            ):
                total = await aiomr.map_reduce(
                    range(1, 11), lambda x: x * x, operator.add, executor=executor
                )
            print(total)  # 385


        if __name__ == "__main__":
            aiomr.run(main())

    The workers need aiomr and whatever the job's code imports, at the caller's versions;
    file sources and key-based jobs need paths every worker can open (a shared
    ``temp_dir`` for key-based jobs on several machines). See the guide to
    [running on a cluster](concepts/cluster.md).

    Args:
        address: the scheduler to connect to, ``"tcp://host:8786"``. Without an address or
            a client, Dask's configuration names the scheduler (``scheduler-address``, as
            the ``DASK_SCHEDULER_ADDRESS`` environment variable sets it); if it names none,
            the executor starts a `distributed.LocalCluster` of ``max_workers`` worker
            processes with one thread each, and closes it with itself.
        client: an asynchronous client (``Client(..., asynchronous=True)``) to use instead;
            it stays open when the executor closes. Jobs must run in the client's event
            loop.
        max_workers: tasks to run at once, which sets a job's default window; by default
            the cluster's total of worker threads once connected (call `start` before the
            first job to connect), and the local CPU count before.
        combine_above: once a partial pickles to more bytes than this, the job's later
            partials stay on the workers and are combined there (a tree reduction), the
            caller folding only the last one; ``0`` combines every partial there, None
            none. Unordered `aiomr.map_reduce` jobs only (see the guide).

    A lost worker is survived: Dask runs its tasks again on the others (and a nanny
    restarts it); a task that kept killing workers (distributed's ``KilledWorker``) and a
    task Dask cancelled fail with `aiomr.BrokenWorkerError`, which `aiomr.RetryPolicy`
    retries by default. ``task_timeout`` is not supported.

    Cancellation: cancelling a task's future cancels its Dask future (queued tasks never
    run; a running one finishes on its worker and its result is dropped). `aclose`
    cancels the tasks still outstanding, removes the shipped code from the cluster and
    closes the client and cluster the executor started.
    """

    same_machine = False
    """The workers may run on other machines: an ``async def`` mapper's coroutines run
    there, but its ``resources`` are refused (the job could not tell them it ended)."""

    def __init__(
        self,
        address: str | None = None,
        *,
        client: distributed.Client | None = None,
        max_workers: int | None = None,
        combine_above: int | None = COMBINE_ABOVE,
    ) -> None:
        if address is not None and client is not None:
            raise ValueError("give a scheduler address or a client, not both")
        if client is not None and not client.asynchronous:
            raise TypeError(
                "client must be asynchronous: create it with "
                "distributed.Client(..., asynchronous=True) inside the event loop"
            )
        if max_workers is not None and (isinstance(max_workers, bool) or max_workers < 1):
            raise ValueError("max_workers must be >= 1")
        if combine_above is not None and (isinstance(combine_above, bool) or combine_above < 0):
            raise ValueError("combine_above must be >= 0 or None")
        self._combine_above = combine_above
        self._holding: dict[str, bool] = {}
        """Jobs that may keep large partials on the workers, by code token: whether they
        have met one yet (then they do)."""
        self._address = address
        self._client = client
        self._max_workers = max_workers
        self._code: dict[str, bytes] = {}
        self._connector = Connector(client=client, address=address, max_workers=max_workers)

    @property
    def max_workers(self) -> int:
        if self._max_workers is not None:
            return self._max_workers
        connection = self._connector.current
        if connection is not None and connection.threads and not connection.loop.is_closed():
            return connection.threads
        if self._client is not None and self._client.asynchronous:  # in the client's loop
            return total_threads(self._client) or default_max_workers()
        return default_max_workers()

    @property
    def client(self) -> distributed.Client | None:
        """The client of the current connection; None before the first task."""
        if self._connector.current is not None:
            return self._connector.current.client
        return self._client

    async def start(self) -> None:
        """Connect now (starting the local cluster, if the executor makes one), not on
        the first task; afterwards `max_workers` counts the cluster's worker threads."""
        self._check_open()
        await self._connector.get()

    def ship(self, fn: Callable[..., Any]) -> ShippedCode:
        self._check_open()
        try:
            data = dumps_code(fn)
        except Exception as exc:
            raise TypeError(f"{fn!r} cannot be pickled for Dask workers: {exc}") from exc
        token = uuid.uuid4().hex
        self._code[token] = data
        return _DaskShippedCode(self, token)

    def open_folder(
        self, reducer: Callable[[Any, Any], Any], *, initial: Any, ordered: bool
    ) -> Folder:
        """Return the folder for a job's partials: one that combines large partials on the
        workers (a tree reduction) for unordered jobs, unless ``combine_above`` is None."""
        if ordered or self._combine_above is None:
            return Folder(reducer, initial=initial, ordered=ordered)
        return TreeFolder(self, reducer, initial=initial)

    def _hold_partials(self, code: ShippedCode, reducer: Callable[[Any, Any], Any]) -> ShippedCode:
        """Let the job shipped as ``code`` keep large partials on the workers; ship its
        reducer for the combine tasks."""
        if isinstance(code, _DaskShippedCode):
            self._holding[code.token] = self._combine_above == 0
        return self.ship(reducer)

    def _release(self, token: str) -> None:
        self._code.pop(token, None)
        self._holding.pop(token, None)
        connection = self._connector.current
        if connection is not None and not connection.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to await on
                if asyncio.get_running_loop() is connection.loop:
                    connection.unregister(token)

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> asyncio.Future[Any]:
        self._check_open()
        return asyncio.ensure_future(self._run(fn, args))

    async def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        connection = await self._connector.get()
        connection.threads = total_threads(connection.client) or connection.threads
        if isinstance(fn, DaskCall):
            await self._register(connection, fn.token)
        payload = await asyncio.to_thread(dumps, args)
        token = fn.token if isinstance(fn, DaskCall) else None
        holding = self._holding.get(token) if token is not None else None
        client = connection.client
        key = f"aiomr-{uuid.uuid4().hex}"
        future = client.submit(
            run_task, fn, payload, self._combine_above if holding else None, key=key, pure=False
        )
        # A job that holds its partials fetches only the envelope: a task on the same worker.
        fetched = client.submit(envelope, future, key=f"{key}-envelope") if holding else future
        connection.futures.update((future, fetched))
        try:
            data = await connection.outcome(fetched)
        except asyncio.CancelledError:
            # Cancelled by the caller: let the scheduler drop the task too.
            with contextlib.suppress(Exception):
                await client.cancel([future, fetched])  # type: ignore[no-untyped-call]
            raise
        finally:
            connection.futures.difference_update((future, fetched))
        if holding is False and token is not None and len(data) > (self._combine_above or 0):
            self._holding[token] = True  # this job's partials are worth keeping where they are
        if len(data) > _UNPICKLE_INLINE_BYTES:
            result = await asyncio.to_thread(pickle.loads, data)
        else:
            result = pickle.loads(data)
        if isinstance(result, Unsendable):
            error = pickle.PicklingError(result.message)
            error.__cause__ = WorkerTraceback(result.formatted)
            raise error
        if isinstance(result, Failure):
            # Importing distributed makes every exception pickle its traceback (tblib), so
            # the worker's frames came back attached; drop them so the caller gets them as
            # the `WorkerTraceback` cause, as from every other executor.
            result.exception.__traceback__ = None
        elif holding and isinstance(result, Outcome) and result.value is HELD:
            result = result._replace(value=HeldPartial(future))
        return result

    async def _combine(
        self,
        reducer: Callable[..., Any],
        left: distributed.Future[Any],
        right: distributed.Future[Any],
    ) -> distributed.Future[Any]:
        """Combine two held partials on a worker; return the held result once it is there."""
        connection = await self._connector.get()
        if isinstance(reducer, DaskCall):
            await self._register(connection, reducer.token)
        future = connection.client.submit(
            combine, reducer, left, right, key=f"aiomr-combine-{uuid.uuid4().hex}", pure=False
        )
        connection.futures.add(future)
        try:
            await connection.outcome(future, fetch=False)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await connection.client.cancel([future])  # type: ignore[no-untyped-call]
            raise
        except ReducerFailed as exc:
            error = reducer_error(exc)
            raise error from error.__cause__
        finally:
            connection.futures.discard(future)
        return future

    async def _fetch_held(self, future: distributed.Future[Any]) -> Any:
        """Bring a held partial to the caller and return its value."""
        connection = await self._connector.get()
        held: Held = await connection.outcome(future)
        if len(held.value) > _UNPICKLE_INLINE_BYTES:
            return await asyncio.to_thread(pickle.loads, held.value)
        return pickle.loads(held.value)

    async def _register(self, connection: Connection, token: str) -> None:
        """Wait until the job's code is registered on the cluster (once per connection)."""
        registration = connection.registered.get(token)
        if registration is None:
            data = self._code.get(token)
            if data is None:
                raise LookupError(f"the code of job {token} was released")
            plugin = CodePlugin(token, data)
            registration = asyncio.ensure_future(
                connection.client.register_plugin(plugin, name=PLUGIN_PREFIX + token)
            )
            connection.registered[token] = registration
        # Shielded: one task's cancellation must not cancel the registration others await.
        await asyncio.shield(registration)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._code.clear()
        await self._connector.aclose()
