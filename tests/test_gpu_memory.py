"""GPU memory of a training job: the sampler, the rows' stream, the job page, and a real train
job on a real gpu worker (with the fake `nvidia-smi` of tests/fakegpu.py)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakegpu import GPU_ROW, GPU_UUID, FakeGpu
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select
from support import PASSWORD, login, wait_for

from app.config import Settings
from app.db import session_scope
from app.main import create_app
from app.models import GpuSample, Job, JobEvent, JobMetric, JobStatus, Role, TrainedModel
from app.routes.training import gpu_messages
from app.services import auth, gpus, jobs, migrations
from workers.gpu_sampler import GpuSampler
from workers.tasks.base import JobContext


def _running_job(settings: Settings, worker_pid: int = 4242) -> int:
    with session_scope(settings.db_url) as session:
        job = jobs.create_job(session, "train", params={"dataset_version_id": 1})
        assert job.id is not None
        jobs.start_job(session, job.id, worker_name="gpu@box", worker_host="box",
                       worker_pid=worker_pid, task_id=None)  # fmt: skip
        return job.id


def _samples(settings: Settings, job_id: int) -> list[GpuSample]:
    with session_scope(settings.db_url) as session:
        query = select(GpuSample).where(GpuSample.job_id == job_id).order_by(col(GpuSample.id))
        return list(session.exec(query).all())


def _log_lines(settings: Settings, job_id: int) -> list[str]:
    with session_scope(settings.db_url) as session:
        query = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == "log")
        return [e.message for e in session.exec(query).all()]


# --- the sampler ----------------------------------------------------------------------------


def test_sampler_writes_rows_tied_to_the_job_and_stops(
    migrated: Settings, fake_gpu: FakeGpu, sleeper: subprocess.Popen
) -> None:
    job_id = _running_job(migrated, worker_pid=sleeper.pid)
    other = _running_job(migrated)
    neighbour = os.getpid()  # another process holding memory on the same GPU
    fake_gpu.hold(sleeper.pid, memory_mb=1500)  # the job's own process
    fake_gpu.hold(neighbour, memory_mb=700)
    sampler = GpuSampler(
        migrated.db_url, job_id, worker_name="gpu@box", provider="nvidia-smi", interval=0.1,
        own_pid=sleeper.pid,
    )  # fmt: skip
    with sampler:
        wait_for(lambda: len(_samples(migrated, job_id)) >= 3, 20, what="three GPU samples")
    assert not sampler.running and not sampler.no_gpu
    written = len(_samples(migrated, job_id))
    time.sleep(0.4)
    assert len(_samples(migrated, job_id)) == written == sampler.rows  # stopped means stopped
    assert _samples(migrated, other) == []

    first = _samples(migrated, job_id)[0]
    index, uuid, name, used, total, util, temp, _ = GPU_ROW
    assert (first.worker_name, first.gpu_index, first.gpu_uuid, first.name) == (
        "gpu@box", index, uuid, name,
    )  # fmt: skip
    assert (first.memory_used_mb, first.memory_total_mb) == (used, total)
    assert (first.utilization, first.temperature_c, first.power_w) == (util, temp, None)
    marks = {p["pid"]: (p["this_job"], p["memory_mb"]) for p in first.processes}
    assert marks == {sleeper.pid: (True, 1500.0), neighbour: (False, 700.0)}

    with session_scope(migrated.db_url) as session:
        rows = gpus.samples_after(session, job_id)
        assert [r["id"] for r in rows] == [s.id for s in _samples(migrated, job_id)]
        assert rows[0]["job_mb"] == 1500.0 and rows[0]["used_mb"] == used
        assert rows[0]["gpu"] == 0 and rows[1]["t"] > rows[0]["t"]
        assert gpus.samples_after(session, job_id, after=rows[-1]["id"]) == []
        assert gpus.gpu_note(session, session.get(Job, job_id)) is None


def test_sampler_without_a_gpu_writes_nothing_and_says_so(
    migrated: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi
    update = {"gpu_provider": "nvidia-smi", "gpu_sample_interval": 0.1}
    settings = migrated.model_copy(update=update)
    job_id = _running_job(settings)
    with session_scope(settings.db_url) as session:
        assert gpus.gpu_note(session, session.get(Job, job_id)) == gpus.NOTE_WAITING
    sampler = GpuSampler.for_job(JobContext(settings, job_id, {}))
    assert sampler.worker_name == "gpu@box" and sampler.interval == 0.1
    with sampler:
        wait_for(lambda: not sampler.running, 10, what="the sampler to give up")
    assert sampler.no_gpu and sampler.readings == 1 and sampler.rows == 0
    assert _samples(settings, job_id) == []
    assert _log_lines(settings, job_id) == [gpus.NO_GPU_SAMPLES]
    with session_scope(settings.db_url) as session:
        assert gpus.gpu_note(session, session.get(Job, job_id)) == gpus.NOTE_NO_GPU


def test_sampler_carries_on_after_a_failure(
    migrated: Settings, fake_gpu: FakeGpu, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _running_job(migrated)
    real = gpus.record_samples
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> list[GpuSample]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database blip")
        return real(*args, **kwargs)

    monkeypatch.setattr(gpus, "record_samples", flaky)
    with GpuSampler(
        migrated.db_url, job_id, worker_name="gpu@box", provider="nvidia-smi", interval=0.05
    ):
        wait_for(lambda: len(_samples(migrated, job_id)) >= 2, 20, what="samples after a failure")
    assert calls["n"] >= 3


def test_notes_for_jobs_without_samples(db: Session) -> None:
    job = jobs.create_job(db, "train", params={"dataset_version_id": 1})
    assert gpus.gpu_note(db, job) == gpus.NOTE_WAITING  # queued
    jobs.finish_job(db, job.id, JobStatus.cancelled)
    db.refresh(job)
    assert gpus.gpu_note(db, job) == gpus.NOTE_NO_SAMPLES  # finished, never sampled
    jobs.log(db, job.id, gpus.NO_GPU_SAMPLES + " (NVML unavailable: no driver)")
    assert gpus.gpu_note(db, job) == gpus.NOTE_NO_GPU
    assert "without an NVIDIA GPU" in gpus.NOTE_NO_GPU.text


# --- the stream and the page ----------------------------------------------------------------


class _Request:
    async def is_disconnected(self) -> bool:
        return False


def _collect(settings: Settings, job_id: int, after: int) -> list[Any]:
    async def collect() -> list[Any]:
        request: Any = _Request()
        return [m async for m in gpu_messages(request, settings, job_id, after)]

    return asyncio.run(collect())


def _write_samples(settings: Settings, job_id: int, used: list[float]) -> list[int]:
    snapshot = {
        "devices": [{"index": 0, "uuid": GPU_UUID, "name": "NVIDIA H100", "memory_used_mb": 0.0,
                     "memory_total_mb": 81559.0, "utilization": 37.0, "temperature_c": 54.0,
                     "power_w": None}],
        "processes": [{"pid": 4242, "gpu_uuid": GPU_UUID, "name": "python3", "cmdline": "x",
                       "memory_mb": 0.0}],
    }  # fmt: skip
    ids = []
    with session_scope(settings.db_url) as session:
        for mb in used:
            snapshot["devices"][0]["memory_used_mb"] = mb
            snapshot["processes"][0]["memory_mb"] = mb - 500
            [row] = gpus.record_samples(session, job_id, "gpu@box", snapshot, own_pid=4242)
            session.flush()
            ids.append(row.id)
    return ids


@pytest.fixture
def lite(tmp_path: Path) -> Settings:
    (tmp_path / "data").mkdir()
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    migrations.upgrade(settings.db_url)
    with session_scope(settings.db_url) as session:
        auth.create_user(session, "cora", PASSWORD, Role.curator)
    return settings


def test_a_long_run_is_thinned_for_the_page_keeping_peaks_and_the_newest() -> None:
    rows = [
        {"id": i, "gpu": i % 2, "used_mb": 1000.0 + (5000.0 if i == 1234 else i % 7)}
        for i in range(1, 6001)
    ]
    thin = gpus.thin_rows(rows, points=100)
    for gpu in (0, 1):
        series = [r for r in thin if r["gpu"] == gpu]
        assert 90 <= len(series) <= 101
        assert series[-1]["id"] == (6000 if gpu == 0 else 5999)  # the newest of each GPU
    assert [r["id"] for r in thin] == sorted(r["id"] for r in thin)
    assert any(r["id"] == 1234 and r["used_mb"] == 6000.0 for r in thin)  # the peak survives
    assert gpus.thin_rows(rows[:50], points=100) == rows[:50]  # short runs are untouched


def test_stream_sends_rows_after_the_last_event_id(lite: Settings) -> None:
    job_id = _running_job(lite)
    first, second, third = _write_samples(lite, job_id, [1000, 2000, 3000])
    other = _running_job(lite)
    _write_samples(lite, other, [9000])
    with session_scope(lite.db_url) as session:
        jobs.finish_job(session, job_id, JobStatus.succeeded)

    messages = _collect(lite, job_id, first)
    assert [m.event for m in messages] == ["gpu", "note", "done"]
    rows = json.loads(messages[0].data)
    assert [r["id"] for r in rows] == [second, third] and messages[0].id == str(third)
    assert [r["used_mb"] for r in rows] == [2000, 3000] and rows[0]["job_mb"] == 1500
    assert json.loads(messages[1].data) is None and messages[1].id is None  # no cursor move
    assert messages[2].id == str(third)
    assert [m.event for m in _collect(lite, job_id, third)] == ["note", "done"]

    # Over HTTP: the browser's Last-Event-ID wins over ?after=.
    with TestClient(create_app(lite), base_url="http://testserver") as client:
        login(client, "cora", PASSWORD)
        response = client.get(
            f"/jobs/{job_id}/gpu/stream?after=0", headers={"Last-Event-ID": str(second)}
        )
        assert response.status_code == 200
        events = re.findall(r"^data: (\[.*\])\r?$", response.text, re.M)
        assert [[r["id"] for r in json.loads(e)] for e in events] == [[third]]
        page = client.get(f"/jobs/{job_id}").text
        embedded = re.search(r'id="gpu-samples">(.*?)</script>', page, re.S)
        assert embedded and [r["id"] for r in json.loads(embedded[1])] == [first, second, third]
        assert 'id="gpu-note" data-state="" hidden>' in page
        assert f'data-stream="/jobs/{job_id}/gpu/stream"' in page


def test_finished_job_without_samples_gets_the_note(lite: Settings) -> None:
    job_id = _running_job(lite)
    with session_scope(lite.db_url) as session:
        jobs.log(session, job_id, gpus.NO_GPU_SAMPLES)
        jobs.finish_job(session, job_id, JobStatus.succeeded)
    messages = _collect(lite, job_id, 0)
    assert [m.event for m in messages] == ["note", "done"]
    assert json.loads(messages[0].data) == gpus.NOTE_NO_GPU.as_dict()

    waiting = _running_job(lite)
    with TestClient(create_app(lite), base_url="http://testserver") as client:
        login(client, "cora", PASSWORD)
        page = client.get(f"/jobs/{job_id}").text
        assert 'data-state="no-gpu">' + gpus.NOTE_NO_GPU.text in page
        assert re.search(r'id="gpu-chart-box" hidden>', page)  # the note, not an empty chart
        page = client.get(f"/jobs/{waiting}").text
        assert 'data-state="waiting">Waiting for the first GPU memory sample' in page
        assert re.search(r'id="gpu-chart-box">', page)


# --- a real train job on a real gpu worker ----------------------------------------------------

TINY = {
    "backbone": "MobileNetV3Small",
    "weights": None,
    "image_size": 32,
    "batch_size": 8,
    "augmentation": {
        "flip": False, "rotation": 0, "translation": 0, "zoom": 0, "contrast": 0, "brightness": 0,
    },
    "phases": [{"epochs": 1, "unfreeze": "all", "learning_rate": 1e-3}],
    "metrics_every_steps": 1,
    "mixed_precision": "off",
}  # fmt: skip


@pytest.mark.integration
def test_train_job_on_a_gpu_worker_records_gpu_memory(
    pg_settings: Settings, fake_gpu: FakeGpu, start_worker: Callable, tmp_path: Path
) -> None:
    """PostgreSQL + Redis + a gpu worker: metrics, a model, and GPU samples tied to the job,
    with the job's own process (the worker's child) marked in them."""
    pytest.importorskip("tensorflow")
    from app.services import datasets, dispatch
    from app.services.datasets import DatasetPolicy
    from app.services.demo_data import generate_demo_dataset
    from app.services.imports import import_folder

    settings = pg_settings.model_copy(
        update={"gpu_provider": "nvidia-smi", "gpu_sample_interval": 0.5}
    )
    migrations.upgrade(settings.db_url)
    generate_demo_dataset(
        tmp_path / "demo", per_species=10, species_count=3, image_size=32, anomaly_fraction=0,
        seed=1,
    )  # fmt: skip
    with session_scope(settings.db_url) as session:
        import_folder(session, tmp_path / "demo", settings.data_dir)
        session.commit()
        version = datasets.freeze(session, DatasetPolicy(name="v1", min_images=5), user_id=None)
        version_id = version.id
    start_worker(settings, "gpu", name="gpu@train-it")
    with session_scope(settings.db_url) as session:
        params = {**TINY, "dataset_version_id": version_id}
        job_id = dispatch.submit(session, settings, "train", params=params).id

    def job() -> Job:
        with session_scope(settings.db_url) as session:
            row = session.get(Job, job_id)
            assert row is not None
            return row

    # The fake GPU lists the job's process (the worker's child) once it is known.
    pid = wait_for(lambda: job().worker_pid, 60, what="the job to start")
    fake_gpu.hold(pid, memory_mb=1234)
    finished = wait_for(lambda: JobStatus(job().status).finished and job(), 240, what="training")
    assert finished.status == JobStatus.succeeded, (finished.error, _log_lines(settings, job_id))

    with session_scope(settings.db_url) as session:
        metrics = session.exec(select(JobMetric).where(JobMetric.job_id == job_id)).all()
        assert any(m.values.get("end") for m in metrics)
        model = session.exec(select(TrainedModel).where(TrainedModel.job_id == job_id)).one()
        assert model.input_size == 32 and len(model.labels) == 3
    samples = _samples(settings, job_id)
    assert samples, _log_lines(settings, job_id)
    assert {s.worker_name for s in samples} == {"gpu@train-it"}
    assert {s.gpu_uuid for s in samples} == {GPU_UUID}
    assert all(s.created_at <= finished.finished_at for s in samples)
    own = [p for s in samples for p in s.processes if p["this_job"]]
    assert own and {p["pid"] for p in own} == {pid} and own[0]["memory_mb"] == 1234.0
    assert gpus.NO_GPU_SAMPLES not in " ".join(_log_lines(settings, job_id))
