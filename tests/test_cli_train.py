"""`sporeprint train`: parameters checked like the form's, a queued job, and following it."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from sqlmodel import select
from test_cli import run_cli

from app.config import Settings
from app.db import session_scope
from app.models import DatasetVersion, Job, JobStatus
from app.services import jobs, migrations
from app.services.training import TrainParams


def _world(tmp_path: Path) -> tuple[Settings, dict[str, str], int]:
    settings = Settings(_env_file=None, data_dir=tmp_path)
    migrations.upgrade(settings.db_url)
    with session_scope(settings.db_url) as session:
        version = DatasetVersion(name="v1", policy={}, stats={})
        session.add(version)
        session.flush()
        assert version.id is not None
        return settings, {"SPOREPRINT_DATA_DIR": str(tmp_path)}, version.id


def test_bad_parameters_name_each_field(tmp_path: Path) -> None:
    _, env, version = _world(tmp_path)
    done = run_cli(
        "train", str(version), "--backbone", "Nope", "--image-size", "8", "--head-epochs", "0",
        env=env,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "these training parameters cannot run" in done.stderr
    for fragment in ("backbone: unknown backbone 'Nope'", "image_size:", "head_epochs:"):
        assert fragment in done.stderr, done.stderr
    unknown = run_cli("train", "999", "--detach", env=env)
    assert unknown.returncode == 2 and "there is no dataset version 999" in unknown.stderr
    bad_recipe = tmp_path / "recipe.json"
    bad_recipe.write_text("{not json")
    refused = run_cli("train", str(version), "--recipe", str(bad_recipe), env=env)
    assert refused.returncode == 2 and "cannot read the recipe" in refused.stderr
    no_weights = run_cli(
        "train",
        str(version),
        "--weights",
        "imagenet",
        "--detach",
        env={**env, "KERAS_HOME": str(tmp_path / "none")},
    )
    assert no_weights.returncode == 2
    assert "no ImageNet weights for MobileNetV3Small" in no_weights.stderr


def test_options_queue_a_train_job(tmp_path: Path) -> None:
    settings, env, version = _world(tmp_path)
    done = run_cli(
        "train", str(version), "--weights", "none", "--image-size", "96", "--head-epochs", "2",
        "--fine-epochs", "3", "--fine-last", "20", "--no-augment", "--seed", "5", "--detach",
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no gpu worker is running" in done.stderr
    with session_scope(settings.db_url) as session:
        job = session.exec(select(Job)).one()
        assert f"job {job.id} queued" in done.stderr
        assert job.kind == "train" and job.queue == "gpu" and job.status == JobStatus.queued
        params = TrainParams.model_validate(job.params)
    assert params.weights is None and params.image_size == 96 and params.seed == 5
    assert [p.epochs for p in params.phases] == [2, 3]
    assert params.phases[1].unfreeze.last == 20  # type: ignore[union-attr]
    assert params.augmentation.flip is False and params.backbone == "MobileNetV3Small"


def test_a_recipe_file_is_the_whole_request(tmp_path: Path) -> None:
    settings, env, version = _world(tmp_path)
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({
        "backbone": "EfficientNetV2B0", "weights": None, "image_size": 128, "label_smoothing": 0.1,
        "phases": [{"epochs": 4, "unfreeze": "all", "learning_rate": 0.0005}],
    }))  # fmt: skip
    both = run_cli("train", str(version), "--recipe", str(recipe), "--seed", "3", env=env)
    assert both.returncode == 2 and "not both" in both.stderr
    done = run_cli("train", str(version), "--recipe", str(recipe), "--detach", env=env)
    assert done.returncode == 0, done.stderr
    with session_scope(settings.db_url) as session:
        params = TrainParams.model_validate(session.exec(select(Job)).one().params)
    assert params.dataset_version_id == version and params.backbone == "EfficientNetV2B0"
    assert params.label_smoothing == 0.1 and params.phases[0].unfreeze == "all"


def test_follow_shows_progress_until_the_job_ends(tmp_path: Path) -> None:
    from app.cli_train import follow

    settings, _, version = _world(tmp_path)
    with session_scope(settings.db_url) as session:
        job = jobs.create_job(session, "train", params={"dataset_version_id": version})
        assert job.id is not None
        job_id = job.id

    def run() -> None:
        time.sleep(0.5)
        with session_scope(settings.db_url) as session:
            jobs.start_job(
                session,
                job_id,
                worker_name="gpu@here",
                worker_host="here",
                worker_pid=1,
                task_id=None,
            )
        with session_scope(settings.db_url) as session:
            jobs.record_progress(session, job_id, 0.5, "epoch 1/2")
        time.sleep(1.2)
        with session_scope(settings.db_url) as session:
            jobs.finish_job(session, job_id, JobStatus.succeeded, result={"top1": 0.9})

    worker = threading.Thread(target=run)
    worker.start()
    assert follow(settings, job_id) == "succeeded"
    worker.join()
