"""Submitting jobs: a `jobs` row first, then the broker message that starts it."""

from __future__ import annotations

from typing import Any

from celery import Celery
from sqlmodel import Session

from app.config import Settings
from app.models import Job, JobStatus
from app.services import jobs

_producers: dict[str, Celery] = {}


def _celery_for(settings: Settings) -> Celery:
    """One producer per broker URL; creating a Celery app per request would leak pools."""
    producer = _producers.get(settings.broker_url)
    if producer is None:
        from workers.celery_app import create_celery

        producer = _producers[settings.broker_url] = create_celery(settings)
    return producer


def submit(
    session: Session,
    settings: Settings,
    kind: str,
    *,
    queue: str | None = None,
    params: dict[str, Any] | None = None,
    user_id: int | None = None,
) -> Job:
    """Create and queue a job; raises JobError for a bad request (or one whose kind's check
    finds something missing, such as a weights file), BrokerUnavailable when the message
    cannot be sent (the job is then recorded as failed, with the reason)."""
    spec = jobs.JOB_KINDS.get(kind)
    if spec is not None and spec.check is not None:
        _, clean = jobs.validate_params(kind, queue, params or {})
        problem = spec.check(settings, spec.params.model_validate(clean))
        if problem:
            raise jobs.JobError(problem)
    job = jobs.create_job(session, kind, queue=queue, params=params, user_id=user_id)
    # Commit before publishing so a fast worker always finds the row.
    session.commit()
    assert job.id is not None
    try:
        _celery_for(settings).send_task(jobs.JOB_KINDS[kind].task, args=[job.id], queue=job.queue)
    except Exception as exc:  # kombu raises transport-specific errors
        reason = f"could not reach the task broker ({type(exc).__name__}: {exc})"
        jobs.finish_job(session, job.id, JobStatus.failed, error=reason)
        session.commit()
        raise jobs.BrokerUnavailable(f"{reason}; is it running?") from exc
    session.refresh(job)
    return job
