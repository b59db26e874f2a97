"""Job life cycle: queued → running → succeeded | failed | cancelled.

The `jobs` row is the truth about a job; the broker only carries the message that starts it.
Every change also appends a `JobEvent`, which is what the browser's SSE streams read. State
changes are guarded updates (`... WHERE status = 'queued'`), so a message delivered twice, or a
worker racing a cancel, can never run a job twice or resurrect a finished one.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import update
from sqlmodel import Session, col, select

from app.models import Job, JobEvent, JobStatus, Worker, utcnow
from app.services.curation import CurateParams
from app.services.evaluation import EvaluateParams
from app.services.exports import ExportParams
from app.services.inat.params import InatIngestParams, InatSelectParams
from app.services.training import TrainParams, missing_weights
from app.services.zip_import import UPLOAD_NAME, import_folder_path

QUEUES = ("io", "gpu")


def control_queue(hostname: str | None = None) -> str:
    """The queue that only the workers on `hostname` consume (process control, GPU kills)."""
    return f"host.{hostname or socket.gethostname()}"


class PingParams(BaseModel):
    """A trivial job that proves the road from browser to worker and back."""

    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(default=2.0, ge=0, le=3600, description="How long to run.")
    steps: int = Field(default=10, ge=1, le=10_000, description="Progress updates to send.")


class DemoDataParams(BaseModel):
    """Draw the synthetic demo dataset into the data directory and import it."""

    model_config = ConfigDict(extra="forbid")

    per_species: int = Field(default=60, ge=1, le=500, description="Photos per species.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Same seed, same photos.")


class ImportParams(BaseModel):
    """Import photos in species/image.jpg layout: a folder the workers can read, or an upload."""

    model_config = ConfigDict(extra="forbid")

    folder: str | None = Field(
        default=None, max_length=1024, description="Absolute path of a folder to import."
    )
    upload: str | None = Field(
        default=None,
        pattern=UPLOAD_NAME,
        description="An uploaded zip's name in <data dir>/uploads (set by the upload form).",
    )
    label: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Names the import in source references (default: the folder's name).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ImportParams:
        if (self.folder is None) == (self.upload is None):
            raise ValueError("give either a folder or an upload")
        if self.folder is not None:
            self.folder = str(import_folder_path(self.folder))
        return self


class DownloadParams(BaseModel):
    """Download the photos of pending images (from an ingest) into the data directory."""

    model_config = ConfigDict(extra="forbid")

    species_ids: list[int] | None = Field(
        default=None, min_length=1, max_length=100_000, description="Only these; null = all."
    )
    retry_failed: bool = Field(default=False, description="Also retry images that failed.")
    limit: int | None = Field(default=None, ge=1, description="At most this many images.")


class EndProcessParams(BaseModel):
    """End a process holding GPU memory; runs on the control queue of the host that has it."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.-]+$")
    pid: int = Field(ge=1, le=2**31 - 1)


class DatasetExportParams(BaseModel):
    """Build a dataset version's zip (split/species/image.jpg + manifest) in the data directory."""

    model_config = ConfigDict(extra="forbid")

    dataset_version_id: int = Field(ge=1, description="The dataset version to export.")


@dataclass(frozen=True)
class JobKind:
    task: str
    params: type[BaseModel]
    queues: tuple[str, ...] = ()
    # Jobs bound to one machine name their queue from their parameters instead.
    route: Callable[[Any], str] | None = None
    # What the request needs beyond valid parameters, checked before it is queued: given the
    # settings and the parameters, a message saying what is missing, or None.
    check: Callable[[Any, Any], str | None] | None = None


JOB_KINDS: dict[str, JobKind] = {
    "ping": JobKind(task="sporeprint.ping", params=PingParams, queues=QUEUES),
    "demo-data": JobKind(task="sporeprint.demo_data", params=DemoDataParams, queues=("io",)),
    "import": JobKind(task="sporeprint.import", params=ImportParams, queues=("io",)),
    "download": JobKind(task="sporeprint.download", params=DownloadParams, queues=("io",)),
    "inat-ingest": JobKind(task="sporeprint.inat_ingest", params=InatIngestParams, queues=("io",)),
    "inat-select": JobKind(task="sporeprint.inat_select", params=InatSelectParams, queues=("io",)),
    "curate": JobKind(task="sporeprint.curate", params=CurateParams, queues=("gpu",)),
    "train": JobKind(
        task="sporeprint.train", params=TrainParams, queues=("gpu",), check=missing_weights
    ),
    "evaluate": JobKind(task="sporeprint.evaluate", params=EvaluateParams, queues=("gpu",)),
    "export": JobKind(task="sporeprint.export", params=ExportParams, queues=("gpu",)),
    "dataset-export": JobKind(
        task="sporeprint.dataset_export", params=DatasetExportParams, queues=("io",)
    ),
    "end-process": JobKind(
        task="sporeprint.end_process",
        params=EndProcessParams,
        route=lambda p: control_queue(p.host),
    ),
}


class JobError(ValueError):
    """A job request that cannot be honoured; the message says why. (HTTP 422)"""

    status_code = 422


class JobNotFound(JobError):
    status_code = 404


class JobConflict(JobError):
    """The job is not in a state that allows this (e.g. cancelling a finished job)."""

    status_code = 409


class BrokerUnavailable(JobError):
    """The job was recorded but its message could not be queued."""

    status_code = 503


def validate_params(kind: str, queue: str | None, params: dict[str, Any]) -> tuple[str, dict]:
    """Check a job request; returns (queue, normalised params) or raises JobError."""
    spec = JOB_KINDS.get(kind)
    if spec is None:
        raise JobError(f"unknown job kind '{kind}'; known kinds: {', '.join(sorted(JOB_KINDS))}")
    if spec.route is None:
        queue = queue or spec.queues[0]
        if queue not in spec.queues:
            raise JobError(f"a {kind} job runs on queue {' or '.join(spec.queues)}, not '{queue}'")
    try:
        model = spec.params.model_validate(params)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'params'}: {err['msg']}"
            for err in exc.errors()
        )
        raise JobError(f"invalid parameters for a {kind} job: {problems}") from exc
    if spec.route is not None:
        routed = spec.route(model)
        if queue not in (None, routed):
            raise JobError(f"this {kind} job runs on queue '{routed}', not '{queue}'")
        queue = routed
    assert queue is not None
    return queue, model.model_dump(mode="json")


def create_job(
    session: Session,
    kind: str,
    *,
    queue: str | None = None,
    params: dict[str, Any] | None = None,
    user_id: int | None = None,
) -> Job:
    queue, clean = validate_params(kind, queue, params or {})
    job = Job(kind=kind, queue=queue, params=clean, created_by=user_id)
    session.add(job)
    session.flush()
    _event(session, job, "status", f"queued on {queue}", status=JobStatus.queued)
    return job


def _event(
    session: Session, job: Job, kind: str, message: str, level: str = "info", **data: Any
) -> JobEvent:
    assert job.id is not None
    event = JobEvent(job_id=job.id, kind=kind, level=level, message=message, data=data)
    session.add(event)
    session.flush()
    return event


def _transition(
    session: Session, job_id: int, allowed: Sequence[JobStatus], **values: Any
) -> Job | None:
    """Set `values` on the job only if its status is one of `allowed`; the updated job or None."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(col(Job.id) == job_id, col(Job.status).in_([s.value for s in allowed]))
        .values(updated_at=now, **values)
    )
    if result.rowcount != 1:
        return None
    job = session.get(Job, job_id)
    if job is not None:
        session.refresh(job)
    return job


def start_job(
    session: Session,
    job_id: int,
    *,
    worker_name: str,
    worker_host: str,
    worker_pid: int,
    task_id: str | None,
) -> Job | None:
    """Claim a queued job for this worker; None when it is not queued (cancelled, redelivered)."""
    job = _transition(
        session,
        job_id,
        [JobStatus.queued],
        status=JobStatus.running,
        started_at=utcnow(),
        worker_name=worker_name,
        worker_host=worker_host,
        worker_pid=worker_pid,
        celery_task_id=task_id,
        progress=0.0,
    )
    if job is not None:
        _event(
            session,
            job,
            "status",
            f"running on {worker_name} (pid {worker_pid})",
            status=JobStatus.running,
        )
    return job


def finish_job(
    session: Session,
    job_id: int,
    status: JobStatus,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    from_states: Sequence[JobStatus] | None = None,
) -> Job | None:
    """Move a job to a final state; only a running job can succeed."""
    assert status.finished
    allowed = from_states or (
        [JobStatus.running]
        if status is JobStatus.succeeded
        else [JobStatus.queued, JobStatus.running]
    )
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": error}
    if result is not None:
        values["result"] = result
    if status is JobStatus.succeeded:
        values["progress"] = 1.0
    job = _transition(session, job_id, allowed, **values)
    if job is not None:
        message = {"succeeded": "succeeded", "cancelled": "cancelled"}.get(status, "failed")
        if error:
            message = f"{message}: {error}"
        level = "error" if status is JobStatus.failed else "info"
        _event(session, job, "status", message, level=level, status=status)
    return job


def record_progress(session: Session, job_id: int, fraction: float, text: str = "") -> None:
    fraction = min(max(fraction, 0.0), 1.0)
    job = _transition(
        session, job_id, [JobStatus.running], progress=fraction, progress_text=text[:255] or None
    )
    if job is not None:
        _event(session, job, "progress", text, progress=fraction)


def log(session: Session, job_id: int, message: str, level: str = "info") -> None:
    job = session.get(Job, job_id)
    if job is not None:
        _event(session, job, "log", message, level=level)


def request_cancel(session: Session, job_id: int) -> Job:
    """Cancel a queued job at once; ask a running one to stop at its next cancel check."""
    job = session.get(Job, job_id)
    if job is None:
        raise JobNotFound(f"there is no job {job_id}")
    if JobStatus(job.status).finished:
        raise JobConflict(f"job {job_id} has already {job.status}")
    # A queued job ends here; the worker that later receives its message skips it.
    cancelled = finish_job(session, job_id, JobStatus.cancelled, from_states=[JobStatus.queued])
    if cancelled is not None:
        return cancelled
    requested = _transition(session, job_id, [JobStatus.running], cancel_requested=True)
    if requested is None:  # it finished in the meantime
        session.refresh(job)
        return job
    _event(session, requested, "status", "cancel requested", status=JobStatus.running)
    return requested


def cancel_requested(session: Session, job_id: int) -> bool:
    job = session.get(Job, job_id)
    return job is None or job.cancel_requested or job.status == JobStatus.cancelled


def reap_lost_jobs(session: Session, timeout: float, now: datetime | None = None) -> list[int]:
    """Fail running jobs whose worker stopped sending heartbeats; returns their ids.

    Called by every worker's heartbeat thread and by the web server, so a job is never left
    "running" forever when the machine running it dies.
    """
    now = now or utcnow()
    cutoff = now - timedelta(seconds=timeout)
    running = session.exec(select(Job).where(Job.status == JobStatus.running)).all()
    reaped: list[int] = []
    for job in running:
        worker = session.exec(select(Worker).where(Worker.name == job.worker_name)).first()
        if worker is None:
            seen = job.started_at or job.updated_at
            if seen > cutoff:
                continue  # started a moment ago; its worker's first heartbeat may be in flight
            reason = f"worker {job.worker_name} never reported a heartbeat"
        elif worker.stopped_at is not None and worker.stopped_at >= (job.started_at or now):
            reason = f"worker {worker.name} shut down while running this job"
        elif worker.last_heartbeat < cutoff:
            age = (now - worker.last_heartbeat).total_seconds()
            reason = (
                f"worker {worker.name} stopped sending heartbeats {age:.0f} s ago "
                f"(limit {timeout:.0f} s) while running this job; it was killed or lost"
            )
        else:
            continue
        assert job.id is not None
        if finish_job(session, job.id, JobStatus.failed, error=reason) is not None:
            reaped.append(job.id)
    return reaped


def get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise JobNotFound(f"there is no job {job_id}")
    return job


def recent_jobs(session: Session, limit: int = 50) -> Sequence[Job]:
    return session.exec(select(Job).order_by(col(Job.id).desc()).limit(limit)).all()


def events_after(
    session: Session, after_id: int, job_id: int | None = None, limit: int = 500
) -> Sequence[JobEvent]:
    query = select(JobEvent).where(JobEvent.id > after_id)
    if job_id is not None:
        query = query.where(JobEvent.job_id == job_id)
    return session.exec(query.order_by(col(JobEvent.id)).limit(limit)).all()


def last_event_id(session: Session, job_id: int | None = None) -> int:
    query = select(JobEvent.id).order_by(col(JobEvent.id).desc()).limit(1)
    if job_id is not None:
        query = query.where(JobEvent.job_id == job_id)
    return session.exec(query).first() or 0
