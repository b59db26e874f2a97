"""The bridge between a Celery task and a `jobs` row: claim, run, record the outcome."""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any

from celery import Task

from app.config import Settings, get_settings
from app.db import session_scope
from app.models import JobStatus
from app.services import jobs

log = logging.getLogger(__name__)

PROGRESS_MIN_INTERVAL_S = 0.25


class JobCancelled(Exception):
    """Raised inside a job body when the user asked it to stop."""


class JobRefused(Exception):
    """Raised by a job body that declines its request; the message says why (no traceback)."""


class JobContext:
    """What a job body gets: its parameters and a way to report back."""

    def __init__(self, settings: Settings, job_id: int, params: dict[str, Any]) -> None:
        self.settings = settings
        self.job_id = job_id
        self.params = params
        self._last_report = 0.0

    def progress(self, fraction: float, text: str = "") -> None:
        """Record progress (at most a few rows a second) and stop here if asked to cancel."""
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_report < PROGRESS_MIN_INTERVAL_S:
            return
        self._last_report = now
        with session_scope(self.settings.db_url) as session:
            jobs.record_progress(session, self.job_id, fraction, text)
        self.check_cancelled()

    def log(self, message: str, level: str = "info") -> None:
        with session_scope(self.settings.db_url) as session:
            jobs.log(session, self.job_id, message, level)

    def check_cancelled(self) -> None:
        with session_scope(self.settings.db_url) as session:
            if jobs.cancel_requested(session, self.job_id):
                raise JobCancelled


JobBody = Callable[[JobContext], dict[str, Any] | None]


def run_job(task: Task, job_id: int, body: JobBody) -> None:
    """Run `body` for job `job_id` unless the job is no longer queued (cancelled, redelivered)."""
    settings = get_settings()
    with session_scope(settings.db_url) as session:
        job = jobs.start_job(
            session,
            job_id,
            worker_name=task.request.hostname or socket.gethostname(),
            worker_host=socket.gethostname(),
            worker_pid=os.getpid(),
            task_id=task.request.id,
        )
    if job is None:
        log.info("job %s is not queued any more; skipping this delivery", job_id)
        return
    context = JobContext(settings, job_id, dict(job.params))
    try:
        result = body(context)
    except JobCancelled:
        outcome: dict[str, Any] = {"status": JobStatus.cancelled}
    except JobRefused as exc:
        outcome = {"status": JobStatus.failed, "error": f"refused: {exc}"}
    except Exception as exc:
        log.exception("job %s failed", job_id)
        context.log(traceback.format_exc(), level="error")
        outcome = {"status": JobStatus.failed, "error": f"{type(exc).__name__}: {exc}"}
    else:
        outcome = {"status": JobStatus.succeeded, "result": result or {}}
    with session_scope(settings.db_url) as session:
        jobs.finish_job(session, job_id, **outcome)
