"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from app import __version__
from app.config import Settings, get_settings
from app.db import session_scope
from app.paths import resource_dir
from app.routes import (
    account,
    api,
    auth,
    datasets,
    evaluation,
    health,
    imports,
    jobs,
    media,
    models,
    pages,
    review,
    species,
    status,
    training,
)
from app.routes.deps import Forbidden, NotAuthenticated
from app.services.jobs import JobError, reap_lost_jobs
from app.templating import render

log = logging.getLogger(__name__)

# Every router of the app; the auth tests walk this to prove no route is left open.
ROUTERS = (
    health.router,
    auth.router,
    pages.router,
    species.router,
    review.router,
    datasets.router,
    imports.router,
    media.router,
    jobs.router,
    status.router,
    training.router,
    models.router,
    models.try_router,
    evaluation.router,
    account.router,
    api.router,
)

TITLES = {
    404: "Not found",
    405: "Not allowed here",
    409: "Conflict",
    411: "Length required",
    413: "Too large",
    422: "Invalid request",
    503: "Service unavailable",
}
HINTS = {
    403: "Ask an admin for a role that allows this, or sign in as another user.",
    404: "Check the address, or start again from the navigation above.",
    409: "Reload the page to see the current state.",
    422: "Correct the highlighted values and submit again.",
    503: "Start the missing service (see the Status page), then try again.",
    500: "Try again; if it keeps happening, the server log has the details.",
}


def _wants_json(request: Request) -> bool:
    if request.url.path.startswith("/api/"):
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def _error(request: Request, status: int, title: str, message: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"detail": message}, status_code=status)
    return render(
        request,
        "error.html",
        status_code=status,
        title=title,
        message=message,
        hint=HINTS.get(status),
    )


async def _reaper(settings: Settings) -> None:
    """Fail jobs whose worker died, even when no other worker is alive to notice."""

    def reap() -> list[int]:
        with session_scope(settings.db_url) as session:
            return reap_lost_jobs(session, settings.worker_timeout)

    while True:
        try:
            lost = await run_in_threadpool(reap)
            if lost:
                log.warning("marked jobs %s failed: their worker stopped responding", lost)
        except Exception:
            log.exception("could not check for lost jobs")
        await asyncio.sleep(settings.heartbeat_interval)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_reaper(settings))
        try:
            yield
        finally:
            task.cancel()

    # The schema is served by the API router, behind the login; Swagger UI would need a CDN.
    app = FastAPI(
        title="Sporeprint",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.session_secret(),
        session_cookie="sporeprint_session",
        max_age=settings.session_max_age,
        same_site="lax",
    )
    app.mount("/static", StaticFiles(directory=resource_dir("static")), name="static")
    for router in ROUTERS:
        app.include_router(router)

    @app.exception_handler(NotAuthenticated)
    async def not_authenticated(request: Request, _: NotAuthenticated) -> Response:
        if _wants_json(request):
            return JSONResponse(
                {"detail": "sign in, or send an API token as 'Authorization: Bearer <token>'"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        target = f"/login?next={request.url.path}"
        if request.headers.get("hx-request") == "true":
            # htmx would swap a redirect's body into the page; ask it to navigate instead.
            return Response(status_code=401, headers={"HX-Redirect": target})
        if request.method != "GET":
            return _error(request, 401, "Signed out", "Your session has ended; sign in again.")
        return RedirectResponse(target, status_code=303)

    @app.exception_handler(JobError)
    async def job_error(request: Request, exc: JobError) -> Response:
        return _error(request, exc.status_code, TITLES.get(exc.status_code, "Error"), str(exc))

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return _error(request, 403, "Not allowed", exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "The request failed."
        return _error(request, exc.status_code, TITLES.get(exc.status_code, "Error"), message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": exc.errors()}, status_code=422)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}"
            for e in exc.errors()
        )
        return _error(request, 422, "Invalid request", problems)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(request, 500, "Something went wrong", "The server hit an unexpected error.")

    return app
