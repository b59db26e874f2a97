"""One small trained model for every test that needs one (evaluation, export, try-it).

`train_demo_model` makes a single-machine world in a folder: demo photos of a few species, a
frozen dataset version and a MobileNetV3Small trained from scratch at 64 px; the conftest
fixture `demo_model` does it once per test session, so the files that need a model share it.
Tests must treat it as read-only (copy it before changing anything).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import Session

from app.config import Settings
from app.db import get_engine, session_scope
from app.services import datasets, jobs, migrations
from app.services.datasets import DatasetPolicy
from app.services.demo_data import generate_demo_dataset
from app.services.imports import import_folder

SPECIES = 6
PER_SPECIES = 30
IMAGE_SIZE = 64

DEMO_TRAIN_PARAMS: dict[str, Any] = {
    "backbone": "MobileNetV3Small",
    "weights": None,
    "image_size": IMAGE_SIZE,
    "batch_size": 16,
    "augmentation": {
        "flip": True, "rotation": 0, "translation": 0, "zoom": 0, "contrast": 0, "brightness": 0,
    },
    "dropout": 0.1,
    "phases": [
        {"epochs": 6, "unfreeze": "all", "learning_rate": 3e-3},
        {"epochs": 2, "unfreeze": {"last": 40}, "learning_rate": 5e-4},
    ],
    "early_stopping_patience": 10,
    "metrics_every_steps": 5,
    "mixed_precision": "off",
}  # fmt: skip


@dataclass(frozen=True)
class DemoModel:
    settings: Settings
    dataset_version_id: int
    job_id: int
    trained_model_id: int
    photos: Path  # the generated `species/photo.jpg` folder the dataset was imported from


def make_demo_world(
    root: Path, *, species: int = SPECIES, per_species: int = PER_SPECIES
) -> tuple[Settings, int]:
    """A migrated SQLite database in `root`, demo photos imported, one frozen version."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    settings = Settings(_env_file=None, data_dir=root / "data")
    generate_demo_dataset(
        root / "demo", per_species=per_species, species_count=species, image_size=IMAGE_SIZE,
        anomaly_fraction=0, seed=1,
    )  # fmt: skip
    migrations.upgrade(settings.db_url)
    with Session(get_engine(settings.db_url), expire_on_commit=False) as session:
        import_folder(session, root / "demo", settings.data_dir)
        session.commit()
        version = datasets.freeze(session, DatasetPolicy(name="v1", min_images=5), user_id=None)
        assert version.id is not None
        return settings, version.id


def train_demo_model(root: Path) -> DemoModel:
    from app.services.training import run_training

    settings, version_id = make_demo_world(root)
    params = {**DEMO_TRAIN_PARAMS, "dataset_version_id": version_id}
    with session_scope(settings.db_url) as session:
        job = jobs.create_job(session, "train", params=params)
        assert job.id is not None
        job_id = job.id
    with Session(get_engine(settings.db_url), expire_on_commit=False) as session:
        report = run_training(session, settings, params, job_id=job_id)
    return DemoModel(settings, version_id, job_id, report.trained_model_id, root / "demo")
