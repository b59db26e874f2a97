"""The status page: workers, queues, GPUs and the processes holding them; ending a process."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from app.config import Settings
from app.models import Job, JobStatus, Role, User
from app.routes.deps import current_user, get_db, get_settings, require_role
from app.services import dispatch, gpus, jobs, queues, workers
from app.templating import render

router = APIRouter(dependencies=[Depends(current_user)], include_in_schema=False)

RECENT_ACTIONS = 8


def _view(db: Session, settings: Settings) -> dict[str, Any]:
    fleet = workers.all_workers(db)
    rows = [
        (w, workers.liveness(w, settings.heartbeat_interval, settings.worker_timeout))
        for w in fleet
    ]
    running = db.exec(select(Job).where(Job.status == JobStatus.running)).all()
    by_worker: dict[str, list[Job]] = {}
    for job in running:
        by_worker.setdefault(job.worker_name or "", []).append(job)
    live_queues = {q for w, state in rows if state != workers.Liveness.stopped for q in w.queues}
    actions = db.exec(
        select(Job).where(Job.kind == "end-process").order_by(col(Job.id).desc())
        .limit(RECENT_ACTIONS)
    ).all()  # fmt: skip
    return {
        "workers": rows,
        "running": by_worker,
        "queue_names": sorted({*jobs.QUEUES, *live_queues}),
        "hosts": gpus.fleet_gpus(
            db,
            fleet,
            interval=settings.heartbeat_interval,
            timeout=settings.worker_timeout,
            orphan_after=settings.orphan_after,
        ),
        "actions": actions,
        "settings": settings,
    }


async def _with_depths(settings: Settings, view: dict[str, Any]) -> dict[str, Any]:
    # A broker round trip; kept off the event loop.
    view["depths"] = await run_in_threadpool(queues.queue_depths, settings, view["queue_names"])
    return view


@router.get("/status")
async def status_page(
    request: Request, db: Session = Depends(get_db), settings: Settings = Depends(get_settings)
) -> Response:
    view = await _with_depths(settings, _view(db, settings))
    return render(request, "status.html", active="status", **view)


@router.get("/status/live")
async def status_live(
    request: Request, db: Session = Depends(get_db), settings: Settings = Depends(get_settings)
) -> Response:
    """The page's body alone, polled by htmx every few seconds."""
    view = await _with_depths(settings, _view(db, settings))
    return render(request, "partials/status_body.html", **view)


@router.post("/status/processes/end")
def end_process(
    host: str = Form(...),
    pid: int = Form(...),
    user: User = Depends(require_role(Role.admin)),
    db: Session = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> Response:
    """Queue an end-process request on that host's own control queue; its worker decides."""
    dispatch.submit(db, settings, "end-process", params={"host": host, "pid": pid}, user_id=user.id)
    return RedirectResponse("/status", status_code=303)
