"""A word-count web service on one shared aiomr engine: jobs, live progress, cancellation.

Run it::

    python -m examples.service --data-dir DIR --port 8000
    python examples/service/app.py --data-dir DIR --port 8000

and open http://127.0.0.1:8000/ for a page that counts the words of a text, an upload or a
file of ``DIR`` and shows the top 20 updating live. The API:

* ``POST /jobs``: count the words of the request body (any text), of a form (an upload
  in the field ``file``, or a ``text`` field), or of ``{"path": "..."}`` (a file or
  directory inside the data directory). Answers ``202 {"id": ..., "status": "running"}``.
* ``GET /jobs/{id}``: status (running, done, failed, cancelled), records, chunks done,
  elapsed seconds, the latest top 20 (the final one once done).
* ``GET /jobs/{id}/events``: the same as Server-Sent Events while the job runs, then
  ``end``.
* ``DELETE /jobs/{id}``: cancel a running job (``204``).
* ``GET /health``: engine, jobs and event streams, for a load balancer or a test.

Errors are JSON, ``{"error": "..."}``: ``400`` bad input, ``403`` a path outside the data
directory, ``404`` an unknown job or file, ``409`` cancelling a finished job, ``413`` a body
over the limit, ``429`` too many running jobs, ``503`` shutting down.

The lifespan holds one `aiomr.Engine` (its worker processes start with the service) and
the task group that owns the jobs. Shutting down refuses new jobs, lets the running ones
finish for ``--grace`` seconds, then cancels the rest and stops the workers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import pathlib
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

if not __package__:
    # Run as a script (python examples/service/app.py): import this file's package from
    # the repository root, like python -m examples.service does.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import cloudpickle
import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

import aiomr
from examples.service import words
from examples.service.events import EventStream, job_events
from examples.service.inputs import resolve_data_path, spool_chunks, spool_upload
from examples.service.jobs import Job, JobRegistry, ShuttingDown, TooManyJobs, remove_file
from examples.service.limits import DEFAULT_MAX_BODY_BYTES, BodyLimit

__all__ = ["Service", "ServiceServer", "Settings", "create_app", "main", "make_server"]

logger = logging.getLogger(__name__)

# The workers receive the word count's functions by value, whatever the way the service was
# started: they need not be able to import this example (it is not an installed package).
cloudpickle.register_pickle_by_value(words)

PAGE_HTML = pathlib.Path(__file__).with_name("page.html").read_text(encoding="utf-8")
"""The page at ``/``: plain HTML and JavaScript, no build step."""
DEFAULT_DATA_DIR = pathlib.Path(__file__).with_name("data")


@dataclass(frozen=True)
class Settings:
    """How the service runs; every field has a command-line option of the same name."""

    data_dir: pathlib.Path = DEFAULT_DATA_DIR
    """The only directory ``{"path": ...}`` jobs may read."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Largest request body; more is refused with 413 while it arrives."""
    workers: int | None = None
    """Worker processes of the engine; ``None`` for one per CPU."""
    max_running_jobs: int = 8
    """Jobs running at once; more are refused with 429."""
    max_finished_jobs: int = 200
    """Finished jobs remembered for ``GET``; the oldest are forgotten first."""
    split_bytes: int = 1024 * 1024
    """Input bytes per map task: small enough that a cancelled job frees its workers, a job
    started beside a big one gets its first worker (running tasks are never interrupted) and
    the page's table moves within a fraction of a second, large enough that the per-task
    cost (a few hundred microseconds) does not show."""
    grace: float = 5.0
    """Seconds running jobs get to finish at shutdown before they are cancelled."""


class Service:
    """The service's state and endpoints; `create_app` wires them into a Starlette app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: aiomr.Engine | None = None
        self._registry: JobRegistry | None = None
        self._spool: pathlib.Path | None = None

    @property
    def registry(self) -> JobRegistry:
        if self._registry is None:
            raise HTTPException(503, "the service is not running")
        return self._registry

    @property
    def spool_dir(self) -> pathlib.Path:
        """Where uploads wait for their job: a temporary directory, removed at shutdown."""
        if self._spool is None:
            raise RuntimeError("the service has not started")
        return self._spool

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Start the engine and the jobs' task group; at the end, drain, then cancel."""
        settings = self.settings
        engine = self.engine = aiomr.Engine(max_workers=settings.workers)
        spool = self._spool = pathlib.Path(
            await asyncio.to_thread(tempfile.mkdtemp, prefix="aiomr-service-")
        )
        try:
            await engine.start()
            async with asyncio.TaskGroup() as tasks:
                self._registry = JobRegistry(
                    engine,
                    tasks,
                    max_running=settings.max_running_jobs,
                    max_finished=settings.max_finished_jobs,
                    split_bytes=settings.split_bytes,
                )
                try:
                    yield
                finally:
                    await self.stop_jobs()
            # Leaving the task group waited for every job's task to record its end.
        finally:
            await engine.aclose(cancel=True)
            await asyncio.to_thread(shutil.rmtree, spool, ignore_errors=True)

    async def stop_jobs(self) -> None:
        """Refuse new jobs, give the running ones ``grace`` seconds, cancel the rest.

        Idempotent. The lifespan calls it at shutdown; `ServiceServer` calls it earlier,
        as soon as the server is asked to stop, so that the event streams of the running
        jobs end with their jobs instead of holding the server's shutdown up.
        """
        if self._registry is not None:
            self._registry.close()
        if self.engine is not None:
            await _drain_then_cancel(self.engine, self.settings.grace)

    async def page(self, request: Request) -> Response:
        return HTMLResponse(PAGE_HTML)

    async def health(self, request: Request) -> Response:
        registry = self.registry
        return JSONResponse(
            {
                "status": "ok",
                "workers": self.engine.max_workers if self.engine is not None else 0,
                "jobs_running": registry.running,
                "jobs_finished": registry.finished,
                "event_streams": registry.event_streams,
            }
        )

    async def post_job(self, request: Request) -> Response:
        registry = self.registry
        try:
            registry.check_room()
            job = await self._start_job(request, registry)
        except TooManyJobs as exc:
            raise HTTPException(429, str(exc)) from None
        except ShuttingDown as exc:
            raise HTTPException(503, str(exc)) from None
        return JSONResponse(
            {"id": job.id, "status": job.status},
            status_code=202,
            headers={"Location": f"/jobs/{job.id}"},
        )

    async def _start_job(self, request: Request, registry: JobRegistry) -> Job:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json":
            return await self._start_path_job(request, registry)
        assert self._spool is not None
        spooled = self._spool / f"upload-{secrets.token_hex(8)}.txt"
        cleanup = remove_file(spooled)
        try:
            if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
                source = await self._spool_form(request, spooled)
            else:
                source = "request body"
                size = await spool_chunks(request.stream(), spooled)
                if size == 0:
                    raise HTTPException(400, "the request body is empty: send the text to count")
            return registry.start([str(spooled)], source=source, cleanup=cleanup)
        except BaseException:
            await asyncio.shield(cleanup())
            raise

    async def _start_path_job(self, request: Request, registry: JobRegistry) -> Job:
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise HTTPException(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict) or "path" not in body:
            raise HTTPException(400, 'send {"path": "..."}, relative to the data directory')
        paths = await resolve_data_path(self.settings.data_dir, body["path"])
        return registry.start(paths, source=f"path: {body['path']}")

    async def _spool_form(self, request: Request, spooled: pathlib.Path) -> str:
        limit = self.settings.max_body_bytes
        async with request.form(max_files=1, max_fields=8, max_part_size=limit) as form:
            upload = form.get("file")
            text = form.get("text")
            if isinstance(upload, UploadFile) and upload.filename:
                size = await spool_upload(upload, spooled)
                source = f"upload: {upload.filename}"
            elif isinstance(text, str):
                size = await spool_chunks(_one(text.encode()), spooled)
                source = "form text"
            else:
                raise HTTPException(400, "send a file in the field 'file' or text in 'text'")
        if size == 0:
            raise HTTPException(400, "the upload is empty: send the text to count")
        return source

    def _job(self, request: Request) -> Job:
        job = self.registry.get(request.path_params["job_id"])
        if job is None:
            raise HTTPException(404, f"no job {request.path_params['job_id']}")
        return job

    async def get_job(self, request: Request) -> Response:
        return JSONResponse(self._job(request).to_json())

    async def job_events(self, request: Request) -> Response:
        job = self._job(request)
        return EventStream(job_events(job, self.registry))

    async def delete_job(self, request: Request) -> Response:
        job = self._job(request)
        if not job.running:
            raise HTTPException(409, f"job {job.id} is already {job.status}")
        await self.registry.cancel(job)
        return Response(status_code=204)


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _drain_then_cancel(engine: aiomr.Engine, grace: float) -> None:
    """Give running jobs ``grace`` seconds to finish, then cancel what is left."""
    try:
        async with asyncio.timeout(grace):
            await asyncio.shield(engine.aclose())
    except TimeoutError:
        logger.warning("jobs still running after %.1f s: cancelling them", grace)
        await engine.aclose(cancel=True)


async def _json_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the ASGI app; its lifespan starts the engine (give the server ``lifespan="on"``)."""
    service = Service(settings or Settings())
    app = Starlette(
        routes=[
            Route("/", service.page, methods=["GET"]),
            Route("/health", service.health, methods=["GET"]),
            Route("/jobs", service.post_job, methods=["POST"]),
            Route("/jobs/{job_id}", service.get_job, methods=["GET"]),
            Route("/jobs/{job_id}", service.delete_job, methods=["DELETE"]),
            Route("/jobs/{job_id}/events", service.job_events, methods=["GET"]),
        ],
        middleware=[Middleware(BodyLimit, max_bytes=service.settings.max_body_bytes)],
        exception_handlers={HTTPException: _json_error},
        lifespan=service.lifespan,
    )
    app.state.service = service
    return app


class ServiceServer(uvicorn.Server):
    """A uvicorn server that stops the service's jobs before it waits for open requests.

    Plain uvicorn, once asked to stop, first waits for open connections to finish, then
    runs the lifespan's shutdown: an event stream of a running job would hold it up until
    the job ends or ``timeout_graceful_shutdown`` cuts it (with an error). Here the jobs
    get their grace period first, their streams send their ``end`` event and close, and
    uvicorn's wait finds nothing left.
    """

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self.service.stop_jobs()
        await super().shutdown(sockets)


def make_server(app: Starlette, **options: Any) -> ServiceServer:
    """Return a `ServiceServer` for ``app`` (from `create_app`); ``options`` go to
    `uvicorn.Config` (``host``, ``port``, ``log_level`` ...)."""
    service: Service = app.state.service
    # Event streams still open after the jobs ended (a client that reads slowly) get
    # as long again before uvicorn cuts them.
    options.setdefault("timeout_graceful_shutdown", service.settings.grace)
    return ServiceServer(uvicorn.Config(app, lifespan="on", **options), service)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m examples.service", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument(
        "--data-dir",
        type=pathlib.Path,
        default=defaults.data_dir,
        help="directory {'path': ...} jobs may read (default: the example's data/)",
    )
    parser.add_argument(
        "--max-body-bytes", type=int, default=defaults.max_body_bytes, help="request size limit"
    )
    parser.add_argument("--workers", type=int, default=None, help="worker processes")
    parser.add_argument(
        "--max-running-jobs", type=int, default=defaults.max_running_jobs, help="jobs at once"
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=defaults.grace,
        help="seconds jobs get to finish at shutdown before they are cancelled",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.data_dir.is_dir():
        print(f"service: {args.data_dir}: not a directory", file=sys.stderr)
        return 1
    settings = Settings(
        data_dir=args.data_dir,
        max_body_bytes=args.max_body_bytes,
        workers=args.workers,
        max_running_jobs=args.max_running_jobs,
        grace=args.grace,
    )
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    server = make_server(create_app(settings), host=args.host, port=args.port)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
