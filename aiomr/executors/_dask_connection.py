"""A Dask client, and the cluster the executor started, bound to one event loop.

Event loops
-----------
An asynchronous client belongs to the event loop it was created in. The executor connects
lazily, in the loop of the first task, and keeps one connection per loop: when a loop ends
(``asyncio.run`` returns), a keeper task that the loop cancels on its way out closes the
client and the cluster the executor started, so an executor can serve one
``asyncio.run`` after another, as a process pool can.

Results
-------
Every Dask future the executor waits for goes into the connection's one
`distributed.as_completed`; a pump hands each finished one to a fetch task of the
connection's own (`_fetch`), which turns Dask's failures into aiomr's and sets the asyncio
future the executor awaits (`Connection.outcome`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Coroutine
from typing import Any

import dask.config
import distributed

from .._exceptions import BrokenWorkerError
from ._base import default_max_workers

__all__ = ["PLUGIN_PREFIX", "Connection", "Connector", "connect", "total_threads"]

PLUGIN_PREFIX = "aiomr-code-"
"""Names the worker plugin that holds a job's code, followed by the job's token."""


def total_threads(client: distributed.Client) -> int:
    """The cluster's worker threads in the client's latest news (call it in its loop)."""
    threads = client.scheduler_info().get("total_threads", 0)
    return threads if isinstance(threads, int) else 0


class Connection:
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
        self.threads = total_threads(client)
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
            await self.client.unregister_worker_plugin(PLUGIN_PREFIX + token)  # type: ignore[no-untyped-call]

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


async def connect(
    loop: asyncio.AbstractEventLoop,
    *,
    client: distributed.Client | None,
    address: str | None,
    n_workers: int,
) -> Connection:
    """Connect in ``loop``: through ``client``, or to the scheduler at ``address`` (else the
    one Dask's configuration names, else a `distributed.LocalCluster` of ``n_workers``
    processes started here and owned by the connection)."""
    if client is not None:
        if getattr(client.loop, "asyncio_loop", None) is not loop:
            raise RuntimeError(
                "the client runs in another event loop; create it with "
                "Client(..., asynchronous=True) in the loop that runs the jobs"
            )
        await client
        connection = Connection(loop, client, None, owned=False)
    else:
        address = address or dask.config.get("scheduler-address", None)
        cluster = None
        if address is None:
            cluster = await distributed.LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=n_workers,
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
        connection = Connection(loop, client, cluster, owned=True)
    connection.pump = loop.create_task(connection.run_pump())
    connection.keeper = loop.create_task(connection.keep())
    return connection


class Connector:
    """The executor's connection: opened in the loop of the first task that needs it, one
    loop at a time, and opened again once that loop has ended.

    ``max_workers``: the worker processes of a local cluster started here (by default, the
    local CPU count); with a ``client`` or an ``address``, none is started.
    """

    def __init__(
        self,
        *,
        client: distributed.Client | None,
        address: str | None,
        max_workers: int | None,
    ) -> None:
        self.current: Connection | None = None
        """The connection of the loop in use; None before the first task and once closed."""
        self._client = client
        self._address = address
        self._max_workers = max_workers
        self._connecting: asyncio.Future[Connection] | None = None

    async def get(self) -> Connection:
        """The running loop's connection, opened now if need be (at most once at a time)."""
        loop = asyncio.get_running_loop()
        connection = self.current
        if connection is not None:
            if connection.loop is loop:
                return connection
            if not connection.loop.is_closed():
                raise RuntimeError(
                    "this DaskExecutor is in use by another event loop; create one per loop"
                )
            # That loop has ended; its keeper closed what it had to.
            self.current = None
        if self._connecting is None or self._connecting.get_loop() is not loop:
            self._connecting = asyncio.ensure_future(self._open(loop))
        try:
            return await asyncio.shield(self._connecting)
        except Exception:
            self._connecting = None  # let a later task try again
            raise

    async def _open(self, loop: asyncio.AbstractEventLoop) -> Connection:
        connection = await connect(
            loop,
            client=self._client,
            address=self._address,
            n_workers=self._max_workers or default_max_workers(),
        )
        self.current = connection
        return connection

    async def aclose(self) -> None:
        """Close the connection (in its own loop), waiting for one being opened."""
        connecting, self._connecting = self._connecting, None
        connection, self.current = self.current, None
        if connection is None and connecting is not None and not connecting.done():
            with contextlib.suppress(Exception):
                connection = await connecting
            self.current = None
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
