"""Jobs pages: the list, one job, live updates over Server-Sent Events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from app.config import Settings
from app.db import session_scope
from app.models import Job, JobEvent, JobStatus, Role, User
from app.routes.deps import (
    csrf_token,
    current_user,
    get_db,
    get_settings,
    last_event_id,
    require_role,
)
from app.services import dispatch, gpus, jobs, training_form
from app.templating import render, render_fragment

router = APIRouter(tags=["jobs"], dependencies=[Depends(current_user)])

POLL_INTERVAL_S = 0.5
LIST_LIMIT = 50


def _is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


@router.get("/jobs", include_in_schema=False)
def jobs_page(request: Request, db: Session = Depends(get_db)) -> Response:
    return render(
        request,
        "jobs.html",
        active="jobs",
        jobs=jobs.recent_jobs(db, LIST_LIMIT),
        after=jobs.last_event_id(db),
        queues=jobs.QUEUES,
    )


@router.post("/jobs/ping", include_in_schema=False)
def queue_pings(
    request: Request,
    user: User = Depends(require_role(Role.curator)),
    db: Session = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> Response:
    """Queue one ping job on each queue, so both kinds of worker prove they are there."""
    for queue in jobs.QUEUES:
        dispatch.submit(db, settings, "ping", queue=queue, user_id=user.id)
    if _is_htmx(request):
        return render(request, "partials/job_rows.html", jobs=jobs.recent_jobs(db, LIST_LIMIT))
    return RedirectResponse("/jobs", status_code=303)


async def _poll(
    request: Request,
    settings: Settings,
    after: int,
    job_id: int | None,
    render_batch: Callable[[Session, Sequence[JobEvent]], list[ServerSentEvent]],
    finished: Callable[[Session], bool] = lambda _: False,
) -> AsyncIterator[ServerSentEvent]:
    """Read new job events from the database and turn each batch into SSE messages.

    The database is the only channel, so this works the same when workers run elsewhere.
    """

    def read() -> tuple[list[ServerSentEvent], int, bool]:
        with session_scope(settings.db_url) as session:
            events = jobs.events_after(session, after, job_id=job_id)
            messages = render_batch(session, events) if events else []
            return messages, (events[-1].id or after) if events else after, finished(session)

    while not await request.is_disconnected():
        messages, after, done = await run_in_threadpool(read)
        for message in messages:
            yield message
        if done and not messages:
            yield ServerSentEvent(event="done", data="done", id=str(after))
            return
        await asyncio.sleep(POLL_INTERVAL_S)


@router.get("/jobs/stream", include_in_schema=False)
async def jobs_stream(
    request: Request, after: int = 0, settings: Settings = Depends(get_settings)
) -> EventSourceResponse:
    def batch(session: Session, events: Sequence[JobEvent]) -> list[ServerSentEvent]:
        rows = render_fragment("partials/job_rows.html", jobs=jobs.recent_jobs(session, LIST_LIMIT))
        return [ServerSentEvent(event="jobs", data=rows, id=str(events[-1].id))]

    return EventSourceResponse(
        _poll(request, settings, last_event_id(request, after), None, batch), ping=15
    )


@router.get("/jobs/{job_id}", include_in_schema=False)
def job_page(request: Request, job_id: int, db: Session = Depends(get_db)) -> Response:
    job = jobs.get_job(db, job_id)
    events = jobs.events_after(db, 0, job_id=job_id, limit=10_000)
    # Train jobs draw charts from their metric rows and GPU memory samples; the page carries
    # the rows so far.
    train = job.kind == "train"
    metrics = training_form.metrics_after(db, job_id) if train else None
    gpu_samples = gpus.thin_rows(gpus.samples_after(db, job_id)) if train else []
    gpu_note = gpus.gpu_note(db, job) if train and not gpu_samples else None
    return render(
        request,
        "job.html",
        active="jobs",
        job=job,
        events=events,
        after=events[-1].id if events else 0,
        metrics=metrics,
        gpu_samples=gpu_samples,
        gpu_note=gpu_note,
    )


@router.get("/jobs/{job_id}/stream", include_in_schema=False)
async def job_stream(
    request: Request, job_id: int, after: int = 0, settings: Settings = Depends(get_settings)
) -> EventSourceResponse:
    # The status fragment carries a Cancel form: it needs the viewer's role and CSRF token.
    viewer = {"user": request.state.user, "csrf_token": csrf_token(request)}

    def batch(session: Session, events: Sequence[JobEvent]) -> list[ServerSentEvent]:
        job = session.get(Job, job_id)
        last = str(events[-1].id)
        messages = [
            ServerSentEvent(
                event="status",
                data=render_fragment("partials/job_status.html", job=job, **viewer),
                id=last,
            )
        ]
        lines = [e for e in events if e.kind in ("log", "status")]
        if lines:
            html = render_fragment("partials/job_events.html", events=lines)
            messages.append(ServerSentEvent(event="log", data=html, id=last))
        return messages

    def finished(session: Session) -> bool:
        job = session.get(Job, job_id)
        return job is None or JobStatus(job.status).finished

    return EventSourceResponse(
        _poll(request, settings, last_event_id(request, after), job_id, batch, finished),
        ping=15,
    )


@router.post("/jobs/{job_id}/cancel", include_in_schema=False)
def cancel_job(
    request: Request,
    job_id: int,
    _: User = Depends(require_role(Role.curator)),
    db: Session = Depends(get_db),
) -> Response:
    job = jobs.request_cancel(db, job_id)
    db.commit()
    if _is_htmx(request):
        return render(request, "partials/job_status.html", job=job)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)
