"""Training: the form that queues a `train` job, and the live streams of a job's charts (metric
rows, and GPU memory samples)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from app.config import Settings
from app.db import session_scope
from app.models import DatasetVersion, Job, JobStatus, Role, User
from app.routes.deps import current_user, get_db, get_settings, last_event_id, require_role
from app.services import datasets, dispatch, gpus, jobs, training, training_form
from app.services.jobs import JobError
from app.services.training import TrainParams
from app.templating import render

router = APIRouter(dependencies=[Depends(current_user)], include_in_schema=False)

POLL_INTERVAL_S = 0.5


def _form_page(
    request: Request,
    db: Session,
    settings: Settings,
    form: dict[str, str],
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request, "training_form.html", status_code=status_code, active="models", form=form,
        errors=errors or {}, versions=datasets.list_versions(db),
        backbones=training_form.BACKBONE_NAMES,
        with_weights=training.backbones_with_weights(settings),
        weights_dir=settings.weights_path, weights_files=training.BACKBONES,
    )  # fmt: skip


@router.get("/training/new")
def training_form_page(
    request: Request,
    dataset_version_id: int | None = None,
    _: User = Depends(require_role(Role.curator)),
    db: Session = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> Response:
    if dataset_version_id is not None and db.get(DatasetVersion, dataset_version_id) is None:
        raise HTTPException(404, f"there is no dataset version {dataset_version_id}")
    return _form_page(
        request, db, settings, training_form.default_form(dataset_version_id, settings)
    )


@router.post("/training")
async def start_training(
    request: Request,
    user: User = Depends(require_role(Role.curator)),
    db: Session = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> Response:
    submitted = await request.form()
    form = {name: str(submitted.get(name, "")) for name in training_form.FIELDS}
    params = training_form.params_from_form(form)
    errors = training_form.form_errors(params)
    if not errors:
        chosen = TrainParams.model_validate(params)
        if db.get(DatasetVersion, chosen.dataset_version_id) is None:
            errors["dataset_version_id"] = (
                f"there is no dataset version {chosen.dataset_version_id}"
            )
        elif problem := training.missing_weights(settings, chosen):
            errors["weights"] = problem
    if errors:
        return _form_page(request, db, settings, form, errors, status_code=422)
    try:
        job = await run_in_threadpool(
            dispatch.submit, db, settings, "train", params=params, user_id=user.id
        )
    except JobError as exc:
        return _form_page(
            request, db, settings, form, {"form": str(exc)}, status_code=exc.status_code
        )
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.post("/jobs/{job_id}/resume")
def resume_training(
    job_id: int,
    user: User = Depends(require_role(Role.curator)),
    db: Session = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> Response:
    """A new train job that continues this one from its last checkpoint (phase and epoch)."""
    job = jobs.get_job(db, job_id)
    try:
        params = training.resume_params(settings, job)
    except training.ResumeRefused as exc:
        raise HTTPException(409, str(exc)) from None
    resumed = dispatch.submit(db, settings, "train", params=params, user_id=user.id)
    return RedirectResponse(f"/jobs/{resumed.id}", status_code=303)


# A `read` that never has a note to send (the metric rows' stream).
NO_NOTE: Any = object()


async def _row_messages(
    request: Request,
    event: str,
    read: Callable[[int], tuple[list[dict[str, Any]], Any, bool]],
    after: int,
) -> AsyncIterator[ServerSentEvent]:
    """Poll `read(after)` → (new rows, note, job finished) and send the rows as `event` events
    (JSON lists, each id the last row's id), a `note` event (no id, so it never moves the
    cursor) whenever the note changes, and `done` once the job has finished and every row has
    been sent."""
    sent_note: Any = NO_NOTE
    while not await request.is_disconnected():
        rows, note, done = await run_in_threadpool(read, after)
        if rows:
            after = rows[-1]["id"]
            yield ServerSentEvent(event=event, data=json.dumps(rows), id=str(after))
            continue  # there may be more than one batch waiting
        if note is not NO_NOTE and note != sent_note:
            sent_note = note
            yield ServerSentEvent(event="note", data=json.dumps(note))
        if done:
            yield ServerSentEvent(event="done", data="done", id=str(after))
            return
        await asyncio.sleep(POLL_INTERVAL_S)


def metric_messages(
    request: Request, settings: Settings, job_id: int, after: int
) -> AsyncIterator[ServerSentEvent]:
    """New JobMetric rows of a job as `metrics` events, then `done` (see `_row_messages`)."""

    def read(after: int) -> tuple[list[dict[str, Any]], Any, bool]:
        with session_scope(settings.db_url) as session:
            job = session.get(Job, job_id)
            done = job is None or JobStatus(job.status).finished
            return training_form.metrics_after(session, job_id, after, limit=500), NO_NOTE, done

    return _row_messages(request, "metrics", read, after)


@router.get("/jobs/{job_id}/metrics/stream")
async def metrics_stream(
    request: Request, job_id: int, after: int = 0, settings: Settings = Depends(get_settings)
) -> EventSourceResponse:
    start = last_event_id(request, after)
    return EventSourceResponse(metric_messages(request, settings, job_id, start), ping=15)


def gpu_messages(
    request: Request, settings: Settings, job_id: int, after: int
) -> AsyncIterator[ServerSentEvent]:
    """New GpuSample rows of a job as `gpu` events; a `note` (JSON: null, or state and text)
    saying what the page should show instead of a chart while there are none; `done`.

    Its own stream and id sequence: one Last-Event-ID cannot carry the metric rows' cursor too.
    """

    def read(after: int) -> tuple[list[dict[str, Any]], Any, bool]:
        with session_scope(settings.db_url) as session:
            job = session.get(Job, job_id)
            done = job is None or JobStatus(job.status).finished
            rows = gpus.samples_after(session, job_id, after, limit=500)
            if rows or after > 0:
                return rows, None, done
            note = gpus.gpu_note(session, job)
            return rows, note.as_dict() if note else None, done

    return _row_messages(request, "gpu", read, after)


@router.get("/jobs/{job_id}/gpu/stream")
async def gpu_stream(
    request: Request, job_id: int, after: int = 0, settings: Settings = Depends(get_settings)
) -> EventSourceResponse:
    start = last_event_id(request, after)
    return EventSourceResponse(gpu_messages(request, settings, job_id, start), ping=15)
