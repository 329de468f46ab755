"""The dashboard's web application: pages, the JSON API and ``/metrics``.

The pages are static files that draw themselves from the API (their script builds every
element with ``textContent``, never ``innerHTML``: a task named ``<script>`` shows as text).
The API's payloads come from the functions ``status --json`` and ``history --json`` use.

Reading happens on one thread (``Reader``): the store's connection and the folded views
stay there, and the event loop only awaits it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson
from fastapi import FastAPI, Query
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request

from stormproof import __version__
from stormproof.errors import RunNotFound, StormproofError
from stormproof.monitor import metrics, shapes
from stormproof.monitor.views import RunViews
from stormproof.monitor.web import models
from stormproof.monitor.web.security import CSRF_HEADER, Guard
from stormproof.runtime.home import Home
from stormproof.runtime.view_query import TaskQuery, TaskState, check_stage, run_json, select
from stormproof.store.base import EventLog

STATIC: Final = Path(__file__).parent / "static"
#: Most tasks one page of the API holds, and the default.
MAX_PAGE: Final = 1000
DEFAULT_PAGE: Final = 100
T = TypeVar("T")


class JSON(JSONResponse):
    """JSON by orjson: a page of 1,000 tasks in a few milliseconds."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class Reader:
    """The store and the views, confined to one worker thread."""

    def __init__(
        self, open_store: Callable[[], EventLog], home: Home, writable: bool = False
    ) -> None:
        """``writable``: the home can be written (a run with no stored view gets one)."""
        self.home = home
        self._open_store = open_store
        self._writable = writable
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="stormproof-serve")
        self._views: RunViews | None = None

    def views(self) -> RunViews:
        if self._views is None:
            self._views = RunViews(self._open_store(), writable=self._writable)
        return self._views

    async def __call__(self, fn: Callable[[RunViews], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self.views()))

    def warm(self) -> None:
        """Fold every run once in the background, so the first page is quick too."""
        self._pool.submit(lambda: self.views().all())

    def close(self) -> None:
        def shut() -> None:
            if self._views is not None:
                self._views.store.close()

        self._pool.submit(shut).result()
        self._pool.shutdown()


def create_app(reader: Reader, guard: Guard) -> FastAPI:
    app = FastAPI(
        title="stormproof",
        version=__version__,
        description="The runs of one stormproof home: what `status`, `history` and `logs` "
        "show, as JSON. Paged where a run can be large.",
        openapi_url="/api/openapi.json",
        docs_url=None,  # the interactive docs load their assets from a CDN: not offline
        redoc_url=None,
        default_response_class=JSON,
    )
    app.middleware("http")(guard)
    _errors(app)
    _api(app, reader, guard)
    _pages(app, reader)
    return app


def _errors(app: FastAPI) -> None:
    async def not_found(_request: Request, exc: Exception) -> Response:
        return JSON({"detail": str(exc)}, 404)

    async def bad(_request: Request, exc: Exception) -> Response:
        return JSON({"detail": str(exc)}, 400)

    async def store_failed(_request: Request, exc: Exception) -> Response:
        return JSON({"detail": str(exc)}, 502)

    app.add_exception_handler(RunNotFound, not_found)
    app.add_exception_handler(shapes.NotFound, not_found)
    app.add_exception_handler(shapes.LogUnreadable, store_failed)
    app.add_exception_handler(StormproofError, bad)


_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    404: {"model": models.ErrorShape, "description": "no such run, task, attempt or log"}
}


def _query(offset: int, limit: int, states: list[TaskState] | None, stage: int | None) -> TaskQuery:
    """The API's filters as ``status --json`` takes them (its stage is 1-based, as there)."""
    return TaskQuery(
        states=tuple(states) if states else None,
        stage=None if stage is None else stage - 1,
        limit=limit,
        offset=offset,
    )


def _run_page(views: RunViews, name: str, query: TaskQuery) -> dict[str, Any]:
    """``status NAME --json``'s shape: the run and one page of its tasks."""
    view = views.get(name)[1]
    check_stage(view, query)
    return run_json(view, query, select(view, query), time.time())


def _api(app: FastAPI, read: Reader, guard: Guard) -> None:
    offset_q = Query(0, ge=0, description="tasks to skip")
    limit_q = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE, description="tasks in the page")
    state_q = Query(None, description="only tasks in this state (repeat for several)")
    stage_q = Query(None, ge=1, description="only tasks of this stage (1 is the first)")

    @app.get("/api/runs", response_model=list[models.RunSummaryShape], tags=["runs"])
    async def runs() -> Any:
        """Every run of the home, newest first: like `stormproof status --json`."""
        return JSON(await read(lambda v: v.summaries()))

    @app.get("/api/runs/{name}", response_model=models.RunShape, responses=_ERRORS, tags=["runs"])
    async def run(
        name: str,
        offset: int = offset_q,
        limit: int = limit_q,
        state: list[TaskState] | None = state_q,
        stage: int | None = stage_q,
    ) -> Any:
        """One run and a page of its tasks: `stormproof status NAME --json` with the same
        `--state`, `--stage`, `--limit` and `--offset`, in the same shape."""
        query = _query(offset, limit, state, stage)
        return JSON(await read(lambda v: _run_page(v, name, query)))

    @app.get(
        "/api/runs/{name}/tasks",
        response_model=models.TasksShape,
        responses=_ERRORS,
        tags=["tasks"],
    )
    async def tasks(
        name: str,
        offset: int = offset_q,
        limit: int = limit_q,
        state: list[TaskState] | None = state_q,
        stage: int | None = stage_q,
    ) -> Any:
        """A page of the run's tasks (in the order of the workflow file), with their attempts:
        the `tasks` and `page` of `GET /api/runs/{name}` alone."""
        query = _query(offset, limit, state, stage)

        def build(v: RunViews) -> dict[str, Any]:
            data = _run_page(v, name, query)
            return {"tasks": data["tasks"], "page": data["page"]}

        return JSON(await read(build))

    @app.get(
        "/api/runs/{name}/tasks/{task}",
        response_model=models.OneTaskShape,
        responses=_ERRORS,
        tags=["tasks"],
    )
    async def task(name: str, task: str) -> Any:
        """One task and all its attempts."""
        return JSON(await read(lambda v: shapes.task_json(v.get(name)[1], task, time.time())))

    @app.get(
        "/api/runs/{name}/tasks/{task}/attempts",
        response_model=list[models.AttemptShape],
        responses=_ERRORS,
        tags=["tasks"],
    )
    async def attempts(name: str, task: str) -> Any:
        """The task's attempts: reason, pool, market, instances, checkpoint, cost, CPU."""
        found = await read(lambda v: shapes.task_json(v.get(name)[1], task, time.time()))
        return JSON(found["attempts"])

    @app.get(
        "/api/runs/{name}/tasks/{task}/attempts/{number}/logs/{stream}",
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {}}},
            502: {"model": models.ErrorShape, "description": "S3 would not give the output"},
            **_ERRORS,
        },
        tags=["tasks"],
    )
    async def logs(name: str, task: str, number: int, stream: str) -> Response:
        """The tail (64 KiB) of the attempt's stdout or stderr, as text: from the home, or,
        for a run on AWS (`executor: ssm` or `aws_batch`), from the copy its agent uploads to
        S3 every `aws.log_upload`."""
        data = await read(lambda v: shapes.log_tail(read.home, *v.get(name), task, number, stream))
        return Response(data, media_type="text/plain; charset=utf-8")

    @app.get(
        "/api/runs/{name}/events",
        response_model=list[models.HistoryRowShape],
        responses=_ERRORS,
        tags=["runs"],
    )
    async def events(
        name: str,
        after: int = Query(0, ge=0, description="the last seq already seen"),
        limit: int = Query(500, ge=1, le=5000),
    ) -> Any:
        """Events and decisions after seq `after`: like `stormproof history NAME --json`."""

        def build(v: RunViews) -> list[dict[str, Any]]:
            from stormproof.cli.render import history_json

            v.get(name)
            rows = itertools.takewhile(lambda r: r.seq <= after + limit, v.store.read(name))
            return [item for item in history_json(list(rows)) if item["seq"] > after]

        return JSON(await read(build))

    @app.get(
        "/api/runs/{name}/timeline",
        response_model=models.TimelineShape,
        responses=_ERRORS,
        tags=["runs"],
    )
    async def timeline(
        name: str, limit: int = Query(shapes.TIMELINE_ATTEMPTS, ge=0, le=20000)
    ) -> Any:
        """Attempts on their instances (the latest `limit`), notices, and cost over time."""
        return JSON(await read(lambda v: shapes.timeline_json(v.get(name)[1], time.time(), limit)))

    @app.get(
        "/api/runs/{name}/stages",
        response_model=list[models.StageShape],
        responses=_ERRORS,
        tags=["runs"],
    )
    async def stages(name: str, per_stage: int = Query(shapes.STAGE_TASKS, ge=0, le=1000)) -> Any:
        """The DAG by stage: counts by state and the first tasks of each stage."""
        return JSON(await read(lambda v: shapes.stages_json(v.get(name)[1], per_stage)))

    @app.post(
        "/api/runs/{name}/cancel",
        status_code=202,
        response_model=models.CancelShape,
        responses={409: {"model": models.ErrorShape}, **_ERRORS},
        tags=["runs"],
    )
    async def cancel(name: str) -> Any:
        """Ask the run's orchestrator to cancel it, as `stormproof cancel` does.

        Needs the `X-Stormproof-CSRF` header (from `GET /api/session`).
        """

        def ask(v: RunViews) -> tuple[int, dict[str, Any]]:
            info, view = v.get(name)
            if view.ended is not None:
                return 409, {"detail": f"run {name!r} has already {view.state}"}
            if not v.store.is_driven(name):
                return 409, {
                    "detail": f"run {name!r} has no orchestrator right now; "
                    f"`stormproof cancel {name}` ends it"
                }
            v.store.post_request(name, "cancel", time.time())
            message = f"asked the orchestrator of {name} to cancel"
            return 202, {"run": info.name, "requested": True, "message": message}

        code, body = await read(ask)
        return JSON(body, code)

    @app.get("/api/session", response_model=models.SessionShape, tags=["session"])
    async def session() -> Any:
        """What a page of the dashboard needs to POST: the CSRF token and its header."""
        return JSON({"csrf": guard.csrf, "csrf_header": CSRF_HEADER, "version": __version__})

    @app.get("/metrics", response_class=Response, tags=["metrics"])
    async def prometheus() -> Response:
        """Every run in the Prometheus text format (see the docs for the list)."""

        def scrape(v: RunViews) -> bytes:
            return generate_latest(metrics.registry(v.all, time.time()))

        return Response(await read(scrape), media_type=CONTENT_TYPE_LATEST)


def _pages(app: FastAPI, read: Reader) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/", include_in_schema=False)
    async def runs_page() -> Response:
        return FileResponse(STATIC / "runs.html")

    @app.get("/runs/{name}", include_in_schema=False)
    async def run_page(name: str) -> Response:
        await read(lambda v: v.get(name))  # an unknown run is a 404, not an empty page
        return FileResponse(STATIC / "run.html")
