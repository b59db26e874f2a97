"""Real Celery workers against the machine's PostgreSQL and Redis."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from sqlmodel import select
from support import wait_for

from app.config import Settings
from app.db import session_scope
from app.models import Image, Job, JobEvent, JobStatus, Worker
from app.services import dispatch, jobs

pytestmark = pytest.mark.integration


@pytest.fixture
def server(pg_settings: Settings) -> Settings:
    from app.services import migrations

    migrations.upgrade(pg_settings.db_url)
    return pg_settings


def _submit(settings: Settings, queue: str, **params: float) -> int:
    with session_scope(settings.db_url) as session:
        job = dispatch.submit(session, settings, "ping", queue=queue, params=params)
        assert job.id is not None
        return job.id


def _job(settings: Settings, job_id: int) -> Job:
    with session_scope(settings.db_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def _status(settings: Settings, job_id: int, *wanted: JobStatus) -> Job | None:
    job = _job(settings, job_id)
    return job if job.status in wanted else None


def test_ping_runs_on_each_queue(server: Settings, start_worker: Callable) -> None:
    io = start_worker(server, "io", name="io@it")
    gpu = start_worker(server, "gpu", name="gpu@it")
    ids = {q: _submit(server, q, seconds=0.6, steps=3) for q in ("io", "gpu")}

    for queue, job_id in ids.items():
        done = wait_for(
            lambda job_id=job_id: _status(server, job_id, JobStatus.succeeded, JobStatus.failed),
            60, what=f"{queue} ping",
        )  # fmt: skip
        assert done.status == JobStatus.succeeded, (done.error, io.output(), gpu.output())
        assert done.worker_name == f"{queue}@it"
        assert done.worker_host == socket.gethostname()
        assert done.result["pid"] == done.worker_pid
        assert done.started_at <= done.finished_at

    with session_scope(server.db_url) as session:
        events = session.exec(select(JobEvent).where(JobEvent.job_id == ids["gpu"])).all()
        statuses = [e.data["status"] for e in events if e.kind == "status"]
        progress = [e.data["progress"] for e in events if e.kind == "progress"]
        worker = session.exec(select(Worker).where(Worker.name == "gpu@it")).one()
    assert statuses == ["queued", "running", "succeeded"]
    # Progress rows are throttled to a few a second; the last one always lands.
    assert progress == sorted(progress) and progress[-1] == 1.0 and 1 <= len(progress) <= 3
    # Each worker also consumes its host's own control queue.
    assert worker.queues == sorted(["gpu", f"host.{socket.gethostname()}"])


def test_worker_killed_mid_job_leaves_it_failed(server: Settings, start_worker: Callable) -> None:
    worker = start_worker(server, "io", name="doomed@it")
    job_id = _submit(server, "io", seconds=60, steps=60)
    running = wait_for(lambda: _status(server, job_id, JobStatus.running), 30, what="running")
    assert running.worker_name == "doomed@it"

    worker.kill_hard()  # SIGKILL to the whole tree: no shutdown hook runs

    # The web server's reaper (or any live worker) notices the silence; run the same rule here.
    def reaped() -> Job | None:
        with session_scope(server.db_url) as session:
            jobs.reap_lost_jobs(session, server.worker_timeout)
        return _status(server, job_id, JobStatus.failed)

    failed = wait_for(reaped, 30, what="the lost job to be failed")
    assert "doomed@it stopped sending heartbeats" in failed.error
    assert failed.finished_at is not None


def test_live_worker_reaps_a_dead_workers_job(server: Settings, start_worker: Callable) -> None:
    """With no web server at all, a surviving worker's heartbeat fails the lost job."""
    doomed = start_worker(server, "io", name="doomed@it")
    start_worker(server, "gpu", name="survivor@it")
    job_id = _submit(server, "io", seconds=60, steps=60)
    wait_for(lambda: _status(server, job_id, JobStatus.running), 30, what="running")
    doomed.kill_hard()
    failed = wait_for(lambda: _status(server, job_id, JobStatus.failed), 30, what="reaped")
    assert "doomed@it" in failed.error


def test_cancel_stops_a_running_job(server: Settings, start_worker: Callable) -> None:
    start_worker(server, "io", name="io@it")
    job_id = _submit(server, "io", seconds=30, steps=100)
    wait_for(lambda: _status(server, job_id, JobStatus.running), 30, what="running")
    with session_scope(server.db_url) as session:
        jobs.request_cancel(session, job_id)
    cancelled = wait_for(lambda: _status(server, job_id, JobStatus.cancelled), 15, what="cancel")
    assert cancelled.progress < 0.5  # stopped early, within a step or two


def test_graceful_stop_marks_worker_stopped(server: Settings, start_worker: Callable) -> None:
    worker = start_worker(server, "io", name="io@it")
    worker.stop()
    with session_scope(server.db_url) as session:
        row = session.exec(select(Worker).where(Worker.name == "io@it")).one()
    assert row.stopped_at is not None


def test_unreachable_broker_fails_the_job_with_a_reason(server: Settings) -> None:
    broken = server.model_copy(update={"celery_broker_url": "redis://127.0.0.1:1/0"})
    with session_scope(server.db_url) as session, pytest.raises(jobs.JobError, match="broker"):
        dispatch.submit(session, broken, "ping", queue="io")
    with session_scope(server.db_url) as session:
        job = session.exec(select(Job)).one()
    assert job.status == JobStatus.failed
    assert "could not reach the task broker" in job.error


def test_demo_data_job_draws_and_imports(server: Settings, start_worker: Callable) -> None:
    start_worker(server, "io", name="io@it")
    with session_scope(server.db_url) as session:
        job = dispatch.submit(session, server, "demo-data", params={"per_species": 3})
    done = wait_for(
        lambda: _status(server, job.id, JobStatus.succeeded, JobStatus.failed), 120, what="demo"
    )
    assert done.status == JobStatus.succeeded, done.error
    assert done.result["imported"] == 24 and done.result["species_created"] == 8
    with session_scope(server.db_url) as session:
        images = session.exec(select(Image)).all()
    assert len(images) == 24
    assert all((server.data_dir / image.path).is_file() for image in images)
