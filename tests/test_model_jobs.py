"""The evaluate and export jobs on a real gpu worker (single-machine mode: SQLite + the SQL
broker transport), on a copy of the session's demo model."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from demo_model import DemoModel
from sqlmodel import select
from support import wait_for

from app.config import Settings
from app.db import session_scope
from app.models import Job, JobStatus, ModelExport, TrainedModel
from app.services import dispatch

pytestmark = pytest.mark.integration


def _finished(settings: Settings, job_id: int) -> Job | None:
    with session_scope(settings.db_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        if JobStatus(job.status).finished:
            session.expunge(job)
            return job
        return None


def test_evaluate_and_export_jobs_on_a_gpu_worker(
    demo_model: DemoModel, tmp_path: Path, start_worker: Callable
) -> None:
    shutil.copytree(demo_model.settings.data_dir, tmp_path / "data")
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    model_id = demo_model.trained_model_id
    with session_scope(settings.db_url) as session:
        row = session.get(TrainedModel, model_id)
        assert row is not None
        before = dict(row.metrics)
        row.metrics = {k: v for k, v in before.items() if k != "misclassified"}
    start_worker(settings, "gpu")

    with session_scope(settings.db_url) as session:
        evaluate = dispatch.submit(
            session, settings, "evaluate", params={"trained_model_id": model_id}
        )
        export = dispatch.submit(
            session, settings, "export",
            params={"trained_model_id": model_id, "kinds": ["float32", "int8"]},
        )  # fmt: skip
        missing = dispatch.submit(session, settings, "evaluate", params={"trained_model_id": 999})
        ids = evaluate.id, export.id, missing.id

    evaluated = wait_for(lambda: _finished(settings, ids[0]), 180, what="the evaluate job")
    assert evaluated.status == JobStatus.succeeded, evaluated.error
    assert evaluated.result is not None and evaluated.result["top1"] == before["top1"]
    assert "misclassified" not in evaluated.result  # the job result stays short
    exported = wait_for(lambda: _finished(settings, ids[1]), 240, what="the export job")
    assert exported.status == JobStatus.succeeded, exported.error
    refused = wait_for(lambda: _finished(settings, ids[2]), 60, what="the refused job")
    assert refused.status == JobStatus.failed
    assert refused.error is not None and "there is no trained model 999" in refused.error

    with session_scope(settings.db_url) as session:
        row = session.get(TrainedModel, model_id)
        assert row is not None and row.metrics["misclassified"] == before["misclassified"]
        files = session.exec(
            select(ModelExport).where(ModelExport.trained_model_id == model_id)
        ).all()
        assert sorted(f.quantization for f in files) == ["float32", "int8"]
        for f in files:
            assert f.job_id == ids[1] and f.top1_agreement is not None
            assert (settings.data_dir / f.path).is_file()
            assert f.bundle_path and (settings.data_dir / f.bundle_path).is_file()
