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

What runs on the workers is in `_dask_worker`. Large partials may instead stay on the workers
and be combined there: see `_dask_tree`.

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
An asynchronous client belongs to the event loop it was created in. The executor connects
lazily, in the loop of the first task, and keeps one connection per loop: when a loop ends
(``asyncio.run`` returns), a keeper task that the loop cancels on its way out closes the
client and the cluster the executor started, so an executor can serve one
``asyncio.run`` after another, as a process pool can.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import pickle
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from .._exceptions import BrokenWorkerError, WorkerTraceback
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
    import dask.config
    import distributed
except ImportError as exc:  # pragma: no cover - the test environment installs the extra
    raise ImportError(
        "aiomr's Dask executor needs Dask's distributed scheduler, which is not installed: "
        "pip install 'aiomr[dask]'"
    ) from exc

# After the check above: the worker side imports distributed itself.
from ._dask_worker import CodePlugin, DaskCall, Unsendable, dumps, run_task

__all__ = ["DaskExecutor"]

_PLUGIN_PREFIX = "aiomr-code-"
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


def _total_threads(client: distributed.Client) -> int:
    """The cluster's worker threads in the client's latest news (call it in its loop)."""
    threads = client.scheduler_info().get("total_threads", 0)
    return threads if isinstance(threads, int) else 0


class _Connection:
    """A client, and the cluster the executor started, bound to one event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        client: distributed.Client,
        cluster: distributed.LocalCluster | None,
        *,
        owned: bool,
    ) -> None:
        self.loop = loop
        self.client = client
        self.cluster = cluster
        self.owned = owned
        self.registered: dict[str, asyncio.Future[Any]] = {}
        self.futures: set[distributed.Future[Any]] = set()
        self.background: set[asyncio.Future[Any]] = set()
        self.closing: asyncio.Future[None] = loop.create_future()
        self.keeper: asyncio.Task[None] | None = None
        self.threads = _total_threads(client)
        """The cluster's worker threads, as the client last heard from the scheduler."""
        self.completed = distributed.as_completed(loop=client.loop)  # type: ignore[no-untyped-call]
        """Every Dask future the executor waits for, yielded as each one finishes."""
        self.waiters: dict[distributed.Future[Any], tuple[asyncio.Future[Any], bool]] = {}
        self.added = asyncio.Event()
        self.pump: asyncio.Task[None] | None = None

    def outcome(
        self, future: distributed.Future[Any], *, fetch: bool = True
    ) -> asyncio.Future[Any]:
        """Return an asyncio future for the result of Dask's ``future``: the result itself,
        or None once it is ready on its worker when not ``fetch``.

        Cancelling it fetches nothing more; the Dask future is the caller's to cancel.
        """
        waiter: asyncio.Future[Any] = self.loop.create_future()
        self.waiters[future] = (waiter, fetch)
        self.completed.add(future)  # type: ignore[no-untyped-call]
        self.added.set()
        return waiter

    async def run_pump(self) -> None:
        """Hand every finished Dask future to a fetch of its own (see `_fetch`)."""
        while True:
            await self.added.wait()
            self.added.clear()
            async for future in self.completed:
                self._finished(future)
                # Hold no reference while waiting for the next one: the scheduler forgets a
                # task (and a worker frees its result) only once nobody holds its future.
                del future

    def _finished(self, future: distributed.Future[Any]) -> None:
        waiter, fetch = self.waiters.pop(future, (None, False))
        if waiter is None or waiter.done():
            return
        if not fetch and future.status == "finished":
            waiter.set_result(None)
        else:
            self.spawn(_fetch(future, waiter))

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def unregister(self, token: str) -> None:
        """Remove a job's code from the cluster, in the background."""
        registration = self.registered.pop(token, None)
        if registration is None:
            return
        self.spawn(self._unregister(registration, token))

    async def _unregister(self, registration: asyncio.Future[Any], token: str) -> None:
        # A registration still under way must end before its plugin can be removed.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await registration
            await self.client.unregister_worker_plugin(_PLUGIN_PREFIX + token)  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        """Cancel the executor's tasks and remove its code; close what the executor started."""
        try:
            if self.futures:
                with contextlib.suppress(Exception):
                    await self.client.cancel(list(self.futures))  # type: ignore[no-untyped-call]
            for token in list(self.registered):
                self.unregister(token)
            for waiter, _ in self.waiters.values():
                waiter.cancel()
            while self.background:
                await asyncio.gather(*self.background, return_exceptions=True)
        finally:
            if self.pump is not None:
                self.pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.pump
            if self.owned:
                try:
                    await self.client.close()  # type: ignore[no-untyped-call]
                finally:
                    if self.cluster is not None:
                        await self.cluster.close()  # type: ignore[misc]

    async def keep(self) -> None:
        """Hold the connection until `DaskExecutor.aclose`, or until the loop shuts down."""
        try:
            await self.closing
        finally:
            await self.close()


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
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None

    @property
    def max_workers(self) -> int:
        if self._max_workers is not None:
            return self._max_workers
        connection = self._connection
        if connection is not None and connection.threads and not connection.loop.is_closed():
            return connection.threads
        if self._client is not None and self._client.asynchronous:  # in the client's loop
            return _total_threads(self._client) or default_max_workers()
        return default_max_workers()

    @property
    def client(self) -> distributed.Client | None:
        """The client of the current connection; None before the first task."""
        if self._connection is not None:
            return self._connection.client
        return self._client

    async def start(self) -> None:
        """Connect now (starting the local cluster, if the executor makes one), not on
        the first task; afterwards `max_workers` counts the cluster's worker threads."""
        self._check_open()
        await self._connect()

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
        connection = self._connection
        if connection is not None and not connection.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to await on
                if asyncio.get_running_loop() is connection.loop:
                    connection.unregister(token)

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> asyncio.Future[Any]:
        self._check_open()
        return asyncio.ensure_future(self._run(fn, args))

    async def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        connection = await self._connect()
        connection.threads = _total_threads(connection.client) or connection.threads
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
        connection = await self._connect()
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
        connection = await self._connect()
        held: Held = await connection.outcome(future)
        if len(held.value) > _UNPICKLE_INLINE_BYTES:
            return await asyncio.to_thread(pickle.loads, held.value)
        return pickle.loads(held.value)

    async def _register(self, connection: _Connection, token: str) -> None:
        """Wait until the job's code is registered on the cluster (once per connection)."""
        registration = connection.registered.get(token)
        if registration is None:
            data = self._code.get(token)
            if data is None:
                raise LookupError(f"the code of job {token} was released")
            plugin = CodePlugin(token, data)
            registration = asyncio.ensure_future(
                connection.client.register_plugin(plugin, name=_PLUGIN_PREFIX + token)
            )
            connection.registered[token] = registration
        # Shielded: one task's cancellation must not cancel the registration others await.
        await asyncio.shield(registration)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        connection = self._connection
        if connection is not None:
            if connection.loop is loop:
                return connection
            if not connection.loop.is_closed():
                raise RuntimeError(
                    "this DaskExecutor is in use by another event loop; create one per loop"
                )
            # That loop has ended; its keeper closed what it had to.
            self._connection = None
        if self._connecting is None or self._connecting.get_loop() is not loop:
            self._connecting = asyncio.ensure_future(self._open(loop))
        try:
            return await asyncio.shield(self._connecting)
        except Exception:
            self._connecting = None  # let a later task try again
            raise

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        if self._client is not None:
            if getattr(self._client.loop, "asyncio_loop", None) is not loop:
                raise RuntimeError(
                    "the client runs in another event loop; create it with "
                    "Client(..., asynchronous=True) in the loop that runs the jobs"
                )
            await self._client
            connection = _Connection(loop, self._client, None, owned=False)
        else:
            address = self._address or dask.config.get("scheduler-address", None)
            cluster = None
            if address is None:
                cluster = await distributed.LocalCluster(  # type: ignore[no-untyped-call]
                    n_workers=self._max_workers or default_max_workers(),
                    threads_per_worker=1,
                    processes=True,
                    asynchronous=True,
                    dashboard_address=":0",
                )
                address = cluster.scheduler_address
            try:
                client = await distributed.Client(address, asynchronous=True)  # type: ignore[no-untyped-call]
            except BaseException:
                if cluster is not None:
                    await cluster.close()  # type: ignore[misc]
                raise
            connection = _Connection(loop, client, cluster, owned=True)
        connection.pump = loop.create_task(connection.run_pump())
        connection.keeper = loop.create_task(connection.keep())
        self._connection = connection
        return connection

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._code.clear()
        connecting, self._connecting = self._connecting, None
        connection, self._connection = self._connection, None
        if connection is None and connecting is not None and not connecting.done():
            with contextlib.suppress(Exception):
                connection = await connecting
            self._connection = None
        if connection is None or connection.keeper is None or connection.loop.is_closed():
            return
        if connection.loop is not asyncio.get_running_loop():
            # Closed from another loop (thread): have the connection's own loop close it.
            connection.loop.call_soon_threadsafe(_resolve, connection.closing)
            return
        _resolve(connection.closing)
        await asyncio.shield(connection.keeper)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _fetch(future: distributed.Future[Any], waiter: asyncio.Future[Any]) -> None:
    """Fetch a finished task's result into ``waiter``, turning Dask's failures into aiomr's.

    The fetch runs in a task of the connection's own, never in the task that awaits the
    result: the asynchronous client batches concurrent fetches into one request, owned by
    whichever task asked first, and cancelling that task (another chunk of a job that
    failed, say) would fail every fetch that joined the batch. Nothing cancels these tasks
    but the end of the connection.
    """
    try:
        result = await future
    except distributed.KilledWorker as exc:
        error: BaseException = BrokenWorkerError(f"Dask workers died while running the task: {exc}")
        error.__cause__ = exc
    except concurrent.futures.CancelledError as exc:
        error = BrokenWorkerError(f"Dask cancelled the task ({exc})")
        error.__cause__ = exc
    except Exception as exc:
        error = exc
    else:
        if not waiter.done():
            waiter.set_result(result)
        return
    if not waiter.done():
        waiter.set_exception(error)
