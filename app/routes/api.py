"""The JSON API (session cookie + CSRF header, or `Authorization: Bearer <token>`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlmodel import Session

from app.config import Settings
from app.models import Job, Role, User
from app.routes.deps import current_user, get_db, get_settings, require_role
from app.services import dispatch, jobs

router = APIRouter(prefix="/api", tags=["api"], dependencies=[Depends(current_user)])


class JobRequest(BaseModel):
    kind: str = Field(description="Job kind, e.g. 'ping'.")
    queue: str | None = Field(default=None, description="Queue; the kind's default when unset.")
    params: dict[str, Any] = Field(default_factory=dict)


class JobOut(BaseModel):
    id: int
    kind: str
    queue: str
    status: str
    params: dict[str, Any]
    progress: float | None
    progress_text: str | None
    result: dict[str, Any] | None
    error: str | None
    worker_name: str | None
    worker_host: str | None
    worker_pid: int | None
    cancel_requested: bool
    created_at: str
    started_at: str | None
    finished_at: str | None

    @classmethod
    def of(cls, job: Job) -> JobOut:
        return cls.model_validate(job.model_dump(mode="json"))


class EventOut(BaseModel):
    id: int
    kind: str
    level: str
    message: str
    data: dict[str, Any]
    created_at: str


class Me(BaseModel):
    username: str
    role: str


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request) -> dict[str, Any]:
    return request.app.openapi()


@router.get("/me")
def me(user: User = Depends(current_user)) -> Me:
    return Me(username=user.username, role=user.role)


@router.get("/jobs")
def list_jobs(limit: int = 50, db: Session = Depends(get_db)) -> list[JobOut]:
    return [JobOut.of(job) for job in jobs.recent_jobs(db, min(max(limit, 1), 500))]


@router.post("/jobs", status_code=201)
def create_job(
    body: JobRequest,
    user: User = Depends(require_role(Role.curator)),
    db: Session = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> JobOut:
    job = dispatch.submit(
        db, settings, body.kind, queue=body.queue, params=body.params, user_id=user.id
    )
    return JobOut.of(job)


@router.get("/jobs/{job_id}")
def get_job(job_id: int, db: Session = Depends(get_db)) -> JobOut:
    return JobOut.of(jobs.get_job(db, job_id))


@router.get("/jobs/{job_id}/events")
def job_events(job_id: int, after: int = 0, db: Session = Depends(get_db)) -> list[EventOut]:
    jobs.get_job(db, job_id)
    return [
        EventOut.model_validate(e.model_dump(mode="json"))
        for e in jobs.events_after(db, after, job_id=job_id)
    ]


@router.post("/jobs/{job_id}/cancel")
def cancel_job(
    job_id: int, _: User = Depends(require_role(Role.curator)), db: Session = Depends(get_db)
) -> JobOut:
    job = jobs.request_cancel(db, job_id)
    db.commit()
    return JobOut.of(job)
