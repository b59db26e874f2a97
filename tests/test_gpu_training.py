"""On a machine with an NVIDIA GPU: a real training run with mixed precision, its GPU memory
sampled through NVML into rows tied to the job. Skipped (by the `gpu` marker, see conftest)
where no GPU is present; CI machines without one never run it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from demo_model import DEMO_TRAIN_PARAMS, make_demo_world
from sqlmodel import Session, select

from app.db import get_engine, session_scope
from app.models import GpuSample, JobMetric
from app.services import jobs
from app.services.training import run_training
from workers.gpu_sampler import GpuSampler

pytestmark = pytest.mark.gpu
pytest.importorskip("tensorflow")


def test_mixed_precision_training_on_the_gpu_records_its_memory(tmp_path: Path) -> None:
    import tensorflow as tf

    assert tf.config.list_physical_devices("GPU"), "TensorFlow sees no GPU on a GPU machine"
    settings, version_id = make_demo_world(tmp_path)
    params = {**DEMO_TRAIN_PARAMS, "dataset_version_id": version_id, "mixed_precision": "auto"}
    with session_scope(settings.db_url) as session:
        job = jobs.create_job(session, "train", params=params)
        assert job.id is not None
        job_id = job.id
    sampler = GpuSampler(
        settings.db_url, job_id, worker_name="gpu@test", provider="nvml", interval=0.5,
        own_pid=os.getpid(),
    )  # fmt: skip
    with sampler, Session(get_engine(settings.db_url), expire_on_commit=False) as session:
        report = run_training(session, settings, params, job_id=job_id)
    assert report.metrics["mixed_precision"] is True
    assert report.metrics["top1"] >= 2 / len(report.metrics["per_class"])  # 2x chance
    with session_scope(settings.db_url) as session:
        samples = session.exec(select(GpuSample).where(GpuSample.job_id == job_id)).all()
        assert samples and all((s.memory_used_mb or 0) > 0 for s in samples)
        # This process (the job's) is listed holding memory in at least one reading.
        assert any(p.get("this_job") for s in samples for p in s.processes)
        speeds = [
            m.values["images_per_s"]
            for m in session.exec(select(JobMetric).where(JobMetric.job_id == job_id)).all()
            if m.values.get("end")
        ]
    peak = max(s.memory_used_mb or 0 for s in samples)
    print(f"\nGPU: {len(samples)} samples, peak {peak:.0f} MiB, {max(speeds):.0f} images/s")
