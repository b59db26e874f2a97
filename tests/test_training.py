"""Training: parameters, the tf.data pipeline, a small run from scratch, cancel and resume.

The runs are tiny (4 demo species x 20 photos at 64 px, MobileNetV3Small from scratch) so the
whole file stays CPU-friendly; one module-scoped run serves several tests.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from demo_model import DEMO_TRAIN_PARAMS, make_demo_world
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select
from support import PASSWORD, ROOT, login

from app.config import Settings
from app.db import get_engine, session_scope
from app.models import Job, JobMetric, TrainedModel
from app.services import jobs
from app.services.training import (
    TrainingCancelled,
    TrainingError,
    TrainParams,
    run_training,
)

pytest.importorskip("tensorflow")

# The shared demo recipe (MobileNetV3Small from scratch at 64 px), a metric row every step.
SCRATCH = {**DEMO_TRAIN_PARAMS, "metrics_every_steps": 1}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, int]:
    """A single-machine database with a frozen 4-species dataset version."""
    return make_demo_world(tmp_path_factory.mktemp("train"), species=4, per_species=20)


def new_job(settings: Settings, params: dict[str, Any]) -> int:
    with session_scope(settings.db_url) as session:
        job = jobs.create_job(session, "train", params=params)
        assert job.id is not None
        return job.id


def train(settings: Settings, params: dict[str, Any], **kwargs: Any) -> Any:
    job_id = new_job(settings, params)
    with Session(get_engine(settings.db_url), expire_on_commit=False) as session:
        return job_id, run_training(
            session, settings, params, job_id=job_id, cancel_interval_s=0, **kwargs
        )


@pytest.fixture(scope="module")
def trained(world: tuple[Settings, int]) -> tuple[int, Any, list[tuple[int, int]]]:
    """One two-phase run; also records how many metric rows existed at each epoch end."""
    settings, version_id = world
    seen: list[tuple[int, int]] = []

    def progress(fraction: float, text: str) -> None:
        with session_scope(settings.db_url) as session:
            rows = session.exec(select(JobMetric)).all()
            seen.append((len(rows), max((r.epoch for r in rows), default=0)))

    job_id, report = train(
        settings, {**SCRATCH, "dataset_version_id": version_id}, progress=progress
    )
    return job_id, report, seen


# --- parameters ----------------------------------------------------------------------------


def test_defaults_are_usable() -> None:
    params = TrainParams(dataset_version_id=1)
    assert params.backbone == "MobileNetV3Small" and params.weights == "imagenet"
    assert params.image_size == 224
    assert params.phases[0].unfreeze == "head"
    assert params.phases[1].learning_rate < params.phases[0].learning_rate
    queue, clean = jobs.validate_params("train", None, {"dataset_version_id": 1})
    assert queue == "gpu" and clean["phases"][1]["unfreeze"] == {"last": 30}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"backbone": "AlexNet"}, "unknown backbone 'AlexNet'"),
        ({"phases": [{"epochs": 0}]}, "a phase needs at least 1 epoch"),
        ({"image_size": 16}, "image_size"),
        ({"phases": []}, "phases"),
        ({"phases": [{"epochs": 1, "unfreeze": {"last": 0}}]}, "last"),
        ({"weights": None, "phases": [{"epochs": 1}]}, "unfreeze it in some phase"),
    ],
)
def test_bad_parameters_are_refused(params: dict, message: str) -> None:
    with pytest.raises(jobs.JobError, match=message):
        jobs.validate_params("train", None, {"dataset_version_id": 1, **params})


def test_api_refuses_bad_parameters_with_422(
    client: TestClient, make_user: Callable[..., str], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    make_user("cora")
    token = login(client, "cora", PASSWORD)
    headers = {"X-CSRF-Token": token}
    bad = {"dataset_version_id": 1, "backbone": "AlexNet"}
    response = client.post("/api/jobs", json={"kind": "train", "params": bad}, headers=headers)
    assert response.status_code == 422
    assert "unknown backbone 'AlexNet'" in response.text
    zero = {"dataset_version_id": 1, "phases": [{"epochs": 0}]}
    response = client.post("/api/jobs", json={"kind": "train", "params": zero}, headers=headers)
    assert response.status_code == 422 and "at least 1 epoch" in response.text
    # ImageNet weights (the default) that are in neither the weights folder nor Keras' cache.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "no-keras"))
    response = client.post(
        "/api/jobs", json={"kind": "train", "params": {"dataset_version_id": 1}}, headers=headers
    )
    assert response.status_code == 422
    assert "no ImageNet weights for MobileNetV3Small" in response.text
    assert "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5" in response.text


def test_missing_imagenet_weights_is_a_clear_error(
    world: tuple[Settings, int], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings, version_id = world
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "no-keras"))
    params = {**SCRATCH, "dataset_version_id": version_id, "weights": "imagenet"}
    with pytest.raises(TrainingError, match=r"no ImageNet weights for MobileNetV3Small.*scratch"):
        train(settings, params)


def test_web_app_never_imports_tensorflow() -> None:
    code = "import app.main, sys; assert 'tensorflow' not in sys.modules; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr


# --- a real run ----------------------------------------------------------------------------


def test_pipeline_shapes(world: tuple[Settings, int]) -> None:
    from app.services.training import training_files
    from workers.ml.data import make_dataset

    settings, version_id = world
    with Session(get_engine(settings.db_url)) as session:
        data = training_files(session, settings, version_id)
    split = data.splits["train"]
    ds = make_dataset(
        split.paths, split.labels, num_classes=4, image_size=48, batch_size=8, training=True
    )
    x, y = next(iter(ds))
    assert tuple(x.shape) == (8, 48, 48, 3) and tuple(y.shape) == (8, 4)
    assert float(x.numpy().min()) >= 0 and float(x.numpy().max()) <= 255
    assert data.labels == sorted(data.labels, key=str.lower)


def test_training_learns_and_records_a_model(
    world: tuple[Settings, int], trained: tuple[int, Any, list[tuple[int, int]]]
) -> None:
    import keras

    settings, _ = world
    job_id, report, seen = trained
    assert report.metrics["top1"] >= 0.5, report.metrics  # 2x chance with 4 classes
    assert report.epochs == 8
    # Metrics were in the database while training ran, not only at the end.
    assert seen and seen[0][0] > 0 and seen[0][1] == 1
    with session_scope(settings.db_url) as session:
        rows = session.exec(
            select(JobMetric).where(JobMetric.job_id == job_id).order_by(col(JobMetric.id))
        ).all()
        ends = [r for r in rows if r.values.get("end")]
        assert [r.epoch for r in ends] == list(range(1, 9))
        assert {r.phase for r in ends} == {0, 1}
        assert {"loss", "accuracy", "top5", "val_loss", "learning_rate"} <= set(ends[-1].values)
        assert any(not r.values.get("end") for r in rows)  # per-step rows too
        # Step numbers run on across phases (56 photos at 16 a batch: 4 steps an epoch).
        assert [r.step for r in ends] == [4 * e for e in range(1, 9)]
        model_row = session.get(TrainedModel, report.trained_model_id)
        assert model_row is not None and not Path(model_row.path).is_absolute()
        assert len(model_row.labels) == 4 and model_row.input_size == 64
        assert len(model_row.metrics["confusion"]) == 4 and "macro_f1" in model_row.metrics
    model = keras.models.load_model(settings.data_dir / model_row.path)
    assert model.output_shape == (None, 4)


def test_cancel_stops_within_a_batch_and_resume_continues(world: tuple[Settings, int]) -> None:
    settings, version_id = world
    params = {
        **SCRATCH,
        "dataset_version_id": version_id,
        "phases": [{"epochs": 3, "unfreeze": "all", "learning_rate": 1e-3}],
    }
    calls = {"n": 0}
    # 56 training photos at 16 a batch: 4 steps an epoch; cancel during the second epoch.
    cancel_after = 6

    def cancelled() -> bool:
        calls["n"] += 1
        return calls["n"] >= cancel_after

    with pytest.raises(TrainingCancelled):
        train(settings, params, cancelled=cancelled)
    assert calls["n"] == cancel_after  # asked once a batch, stopped at the first yes
    with session_scope(settings.db_url) as session:
        first = session.exec(select(Job).order_by(col(Job.id).desc())).first()
        assert first is not None and first.id is not None
        steps = [
            r.step
            for r in session.exec(select(JobMetric).where(JobMetric.job_id == first.id)).all()
        ]
        assert max(s or 0 for s in steps) == cancel_after  # nothing ran after the cancel
    from app.services.training import checkpoint_dir

    progress = checkpoint_dir(settings, first.id) / "progress.json"
    assert '"epochs_done": 1' in progress.read_text()

    # The resumed run keeps its decoded pixels in files, removed when it ends.
    job_id, report = train(settings, {**params, "resume_from_job": first.id, "cache": "file"})
    assert report.epochs == 3 and report.resumed_from == first.id
    assert not (checkpoint_dir(settings, job_id) / "cache").exists()
    with session_scope(settings.db_url) as session:
        ends = [
            r.epoch
            for r in session.exec(select(JobMetric).where(JobMetric.job_id == job_id)).all()
            if r.values.get("end")
        ]
        assert ends == [2, 3]  # the epoch counter carries on from the checkpoint
        job = session.get(Job, job_id)
        assert job is not None and job.resumed_from_id == first.id


def test_resume_without_a_checkpoint_is_refused(world: tuple[Settings, int]) -> None:
    settings, version_id = world
    params = {**SCRATCH, "dataset_version_id": version_id, "resume_from_job": 9999}
    with pytest.raises(TrainingError, match="no checkpoint to resume from"):
        train(settings, params)
