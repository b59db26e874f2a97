"""The job life cycle rules, on both databases, without HTTP or a broker."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session, select

from app.models import Job, JobEvent, JobStatus, utcnow
from app.services import jobs, workers


def _start(db: Session, job: Job, worker: str = "io@host", pid: int = 4242) -> Job | None:
    assert job.id is not None
    return jobs.start_job(
        db, job.id, worker_name=worker, worker_host="host", worker_pid=pid, task_id="t-1"
    )


def _statuses(db: Session, job: Job) -> list[str]:
    events = db.exec(select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.kind == "status"))
    return [e.data.get("status") for e in events]


def test_happy_path_records_every_step(db: Session) -> None:
    job = jobs.create_job(db, "ping", queue="gpu", params={"seconds": 0.5})
    assert job.status == JobStatus.queued
    assert job.params == {"seconds": 0.5, "steps": 10}  # defaults filled in

    started = _start(db, job)
    assert started is not None and started.status == JobStatus.running
    assert (started.worker_name, started.worker_pid) == ("io@host", 4242)
    assert started.started_at is not None

    jobs.record_progress(db, job.id, 0.5, "half way")
    done = jobs.finish_job(db, job.id, JobStatus.succeeded, result={"answer": 42})
    assert done is not None
    assert (done.status, done.progress, done.result) == ("succeeded", 1.0, {"answer": 42})
    assert done.finished_at is not None and done.finished_at >= done.started_at
    assert _statuses(db, job) == ["queued", "running", "succeeded"]


def test_a_job_never_runs_twice(db: Session) -> None:
    """A redelivered message (acks_late after a worker loss) finds the job claimed."""
    job = jobs.create_job(db, "ping")
    assert _start(db, job) is not None
    assert _start(db, job, worker="gpu@other") is None
    assert jobs.finish_job(db, job.id, JobStatus.succeeded) is not None
    assert _start(db, job) is None
    # and a finished job cannot be finished again with another outcome
    assert jobs.finish_job(db, job.id, JobStatus.failed, error="late") is None
    assert db.get(Job, job.id).status == JobStatus.succeeded


def test_cancel_queued_job_is_immediate_and_skipped_by_worker(db: Session) -> None:
    job = jobs.create_job(db, "ping")
    cancelled = jobs.request_cancel(db, job.id)
    assert cancelled.status == JobStatus.cancelled
    assert _start(db, job) is None


def test_cancel_running_job_asks_the_worker(db: Session) -> None:
    job = jobs.create_job(db, "ping")
    _start(db, job)
    assert not jobs.cancel_requested(db, job.id)
    requested = jobs.request_cancel(db, job.id)
    assert requested.status == JobStatus.running and requested.cancel_requested
    assert jobs.cancel_requested(db, job.id)
    assert jobs.finish_job(db, job.id, JobStatus.cancelled) is not None
    with pytest.raises(jobs.JobError, match="already cancelled"):
        jobs.request_cancel(db, job.id)


@pytest.mark.parametrize(
    ("kind", "queue", "params", "message"),
    [
        ("train-everything", None, {}, "unknown job kind 'train-everything'"),
        ("ping", "cpu", {}, "runs on queue io or gpu, not 'cpu'"),
        ("ping", None, {"seconds": -1}, "seconds: Input should be greater than or equal to 0"),
        ("ping", None, {"steps": "many"}, "steps: Input should be a valid integer"),
        ("ping", None, {"sleep": 1}, "sleep: Extra inputs are not permitted"),
    ],
)
def test_bad_requests_are_refused_and_change_nothing(
    db: Session, kind: str, queue: str | None, params: dict, message: str
) -> None:
    with pytest.raises(jobs.JobError, match=message):
        jobs.create_job(db, kind, queue=queue, params=params)
    assert db.exec(select(Job)).all() == []


def test_lost_worker_fails_its_jobs_with_a_reason(db: Session) -> None:
    now = utcnow()
    workers.heartbeat(db, name="gpu@dead", hostname="dead", pid=1, queues=["gpu"], now=now)
    workers.heartbeat(db, name="io@alive", hostname="alive", pid=2, queues=["io"], now=now)
    lost, kept = jobs.create_job(db, "ping"), jobs.create_job(db, "ping")
    _start(db, lost, worker="gpu@dead")
    _start(db, kept, worker="io@alive")

    later = now + timedelta(seconds=60)
    workers.heartbeat(db, name="io@alive", hostname="alive", pid=2, queues=["io"], now=later)
    assert jobs.reap_lost_jobs(db, timeout=30, now=later) == [lost.id]

    failed = db.get(Job, lost.id)
    db.refresh(failed)
    assert failed.status == JobStatus.failed
    assert "gpu@dead stopped sending heartbeats 60 s ago" in failed.error
    assert db.get(Job, kept.id).status == JobStatus.running
    assert jobs.reap_lost_jobs(db, timeout=30, now=later) == []  # idempotent


def test_cleanly_stopped_worker_fails_its_jobs_at_once(db: Session) -> None:
    workers.heartbeat(db, name="io@h", hostname="h", pid=7, queues=["io"])
    job = jobs.create_job(db, "ping")
    _start(db, job, worker="io@h")
    workers.mark_stopped(db, "io@h", pid=7)
    assert jobs.reap_lost_jobs(db, timeout=30) == [job.id]
    assert "shut down while running" in db.get(Job, job.id).error


def test_job_from_unknown_worker_gets_grace_then_fails(db: Session) -> None:
    job = jobs.create_job(db, "ping")
    _start(db, job, worker="ghost@nowhere")
    assert jobs.reap_lost_jobs(db, timeout=30) == []
    assert jobs.reap_lost_jobs(db, timeout=30, now=utcnow() + timedelta(seconds=31)) == [job.id]


def test_worker_liveness_and_restart(db: Session) -> None:
    now = utcnow()
    w = workers.heartbeat(db, name="io@h", hostname="h", pid=7, queues=["io"], now=now)
    assert workers.liveness(w, 5, 30, now=now + timedelta(seconds=9)) == workers.Liveness.alive
    assert workers.liveness(w, 5, 30, now=now + timedelta(seconds=20)) == workers.Liveness.late
    assert workers.liveness(w, 5, 30, now=now + timedelta(seconds=31)) == workers.Liveness.dead
    workers.mark_stopped(db, "io@h", pid=7)
    assert workers.liveness(w, 5, 30) == workers.Liveness.stopped
    restarted = workers.heartbeat(db, name="io@h", hostname="h", pid=8, queues=["io"])
    assert restarted.stopped_at is None and restarted.pid == 8


def test_events_after_supports_resume(db: Session) -> None:
    job = jobs.create_job(db, "ping")
    _start(db, job)
    jobs.log(db, job.id, "one")
    mark = jobs.last_event_id(db, job.id)
    jobs.log(db, job.id, "two")
    later = jobs.events_after(db, mark, job_id=job.id)
    assert [e.message for e in later] == ["two"]
    assert jobs.last_event_id(db) == later[-1].id
