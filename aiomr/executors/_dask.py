"""Run tasks on a Dask cluster through distributed's asyncio-native client.

::

    caller (event loop)                   scheduler                     workers
    ship(code): cloudpickle once ──► WorkerPlugin "aiomr-code-TOKEN" ──► every worker, present
                                     (the scheduler keeps it, so        and future, holds the
                                     workers that join or restart       bytes; each unpickles
                                     get it too)                        them on first use
    submit(call, records, start)
      pickle the arguments (helper thread)
      client.submit(_run_task, call, payload) ──────────────────────► _run_task: load code,
                                                                      run it, pickle the result
      await the Dask future ◄───────────── bytes ────────────────────┘
      unpickle (helper thread when large)

Shipping code once per job
--------------------------
A job's code is pickled once with cloudpickle and registered as a worker plugin named after
its token: the scheduler sends it once to every worker, and to every worker that joins or is
restarted later, before that worker runs any task. Tasks carry a `_DaskCall`, a token of a
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
import traceback
import uuid
from collections.abc import Callable
from typing import Any

import cloudpickle

from .._exceptions import BrokenWorkerError, WorkerTraceback
from .._worker import Failure
from ._base import Executor, ShippedCode, default_max_workers

try:
    import dask.config
    import distributed
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError as exc:  # pragma: no cover - the test environment installs the extra
    raise ImportError(
        "aiomr's Dask executor needs Dask's distributed scheduler, which is not installed: "
        "pip install 'aiomr[dask]'"
    ) from exc

__all__ = ["DaskExecutor"]

_PLUGIN_PREFIX = "aiomr-code-"
_UNPICKLE_INLINE_BYTES = 128 * 1024
"""Results up to this size are unpickled on the event loop (a fraction of a millisecond);
larger ones on a helper thread, where a long unpickling cannot delay other callbacks."""


# Worker side ---------------------------------------------------------------------------------

_STORED: dict[str, bytes] = {}
"""Pickled code of the jobs registered on this worker, by token (filled by `_CodePlugin`)."""
_LOADED: dict[str, Callable[..., Any]] = {}
"""The same code, unpickled on its first task here."""


class _CodePlugin(WorkerPlugin):
    """Hold one job's pickled code on every worker of the cluster, present and future."""

    def __init__(self, token: str, data: bytes) -> None:
        self.token = token
        self.data = data

    def setup(self, worker: distributed.Worker) -> None:
        _STORED[self.token] = self.data

    def teardown(self, worker: distributed.Worker) -> None:
        _STORED.pop(self.token, None)
        _LOADED.pop(self.token, None)


class _DaskCall:
    """Stand-in for a job's code inside tasks: a token that names the plugin's bytes."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, *args: Any) -> Any:
        fn = _LOADED.get(self.token)
        if fn is None:
            try:
                data = _STORED[self.token]
            except KeyError:
                raise LookupError(
                    f"the code of job {self.token} is not on this worker: it was released"
                ) from None
            fn = _LOADED[self.token] = pickle.loads(data)
        return fn(*args)

    def __reduce__(self) -> tuple[type[_DaskCall], tuple[str]]:
        return (_DaskCall, (self.token,))


def _dumps(value: Any) -> bytes:
    """Pickle ``value`` with the fastest protocol; by value what only ``__main__`` defines.

    Plain pickle refers to classes and functions by module and name, and a Dask worker's
    ``__main__`` is not the caller's: those go by value through cloudpickle, which also
    lets the caller recognise its own classes when they come back.
    """
    try:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        data = b"__main__"
    if b"__main__" in data:
        data = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return data


class _Unsendable:
    """What a task sends back when its result cannot be pickled: the error and where."""

    def __init__(self, message: str, formatted: str) -> None:
        self.message = message
        self.formatted = formatted


def _sendback_result(result: Any) -> bytes:
    # The dispatcher tells a result that could not travel back from a record that could not
    # travel out by this function's name in the worker's traceback, as for the stdlib pool.
    try:
        return _dumps(result)
    except Exception as exc:
        return _dumps(_Unsendable(f"{type(exc).__name__}: {exc}", traceback.format_exc()))


def _run_task(call: Callable[..., Any], payload: bytes) -> bytes:
    """The Dask task: unpickle the arguments, run the job's code, pickle its result."""
    return _sendback_result(call(*pickle.loads(payload)))


# Caller side ---------------------------------------------------------------------------------


class _DaskShippedCode(ShippedCode):
    def __init__(self, executor: DaskExecutor, token: str) -> None:
        super().__init__(_DaskCall(token))
        self._executor = executor
        self._token = token

    def release(self) -> None:
        self._executor._release(self._token)


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

    def unregister(self, token: str) -> None:
        """Remove a job's code from the cluster, in the background."""
        registration = self.registered.pop(token, None)
        if registration is None:
            return
        task = asyncio.ensure_future(self._unregister(registration, token))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

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
            while self.background:
                await asyncio.gather(*self.background, return_exceptions=True)
        finally:
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
            data = cloudpickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(f"{fn!r} cannot be pickled for Dask workers: {exc}") from exc
        token = uuid.uuid4().hex
        self._code[token] = data
        return _DaskShippedCode(self, token)

    def _release(self, token: str) -> None:
        self._code.pop(token, None)
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
        if isinstance(fn, _DaskCall):
            await self._register(connection, fn.token)
        payload = await asyncio.to_thread(_dumps, args)
        future = connection.client.submit(
            _run_task, fn, payload, key=f"aiomr-{uuid.uuid4().hex}", pure=False
        )
        connection.futures.add(future)
        try:
            data = await future
        except asyncio.CancelledError:
            # Cancelled by the caller: let the scheduler drop the task too.
            with contextlib.suppress(Exception):
                await connection.client.cancel([future])  # type: ignore[no-untyped-call]
            raise
        except concurrent.futures.CancelledError as exc:
            raise BrokenWorkerError(f"Dask cancelled the task ({exc})") from exc
        except distributed.KilledWorker as exc:
            raise BrokenWorkerError(f"Dask workers died while running the task: {exc}") from exc
        finally:
            connection.futures.discard(future)
        if len(data) > _UNPICKLE_INLINE_BYTES:
            result = await asyncio.to_thread(pickle.loads, data)
        else:
            result = pickle.loads(data)
        if isinstance(result, _Unsendable):
            error = pickle.PicklingError(result.message)
            error.__cause__ = WorkerTraceback(result.formatted)
            raise error
        if isinstance(result, Failure):
            # Importing distributed makes every exception pickle its traceback (tblib), so
            # the worker's frames came back attached; drop them so the caller gets them as
            # the `WorkerTraceback` cause, as from every other executor.
            result.exception.__traceback__ = None
        return result

    async def _register(self, connection: _Connection, token: str) -> None:
        """Wait until the job's code is registered on the cluster (once per connection)."""
        registration = connection.registered.get(token)
        if registration is None:
            data = self._code.get(token)
            if data is None:
                raise LookupError(f"the code of job {token} was released")
            plugin = _CodePlugin(token, data)
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
