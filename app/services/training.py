"""Training jobs: validated parameters, the dataset's file list, and the training run itself.

This module is imported by the web app (for `TrainParams`), so it never imports TensorFlow at
module level: `run_training` imports the Keras side (`workers.ml.*`) when it runs, on a worker.

A run trains the phases in order on one model. Each phase sets what is trainable ("head": the
backbone frozen; "all"; or {"last": N} backbone layers), recompiles with the phase's learning
rate (so a later phase starts with a fresh optimiser at its own, usually lower, rate) and fits
with ReduceLROnPlateau and EarlyStopping(restore_best_weights=True). Epochs are counted across
phases. After every complete epoch the checkpoint folder `<data dir>/models/job-<id>/` holds
`last.keras` + `progress.json` (for resume) and `best.keras` (the best by validation loss so far,
over all phases). At the end the best model is evaluated on the test split and recorded as a
`TrainedModel`.

Resume: a train job with `resume_from_job` loads that job's `last.keras` and `progress.json`
and carries on at the phase and epoch where it stopped, writing to its own folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlmodel import Session, col, select

from app.config import Settings
from app.models import DatasetItem, DatasetVersion, Image, Job, JobMetric, TrainedModel, utcnow

# Backbone name → its ImageNet no-top weights file, as keras.applications names it.
BACKBONES: dict[str, str] = {
    "MobileNetV3Small": "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
    "MobileNetV3Large": "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
    "ResNet50V2": "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "Xception": "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "ConvNeXtTiny": "convnext_tiny_notop.h5",
    "EfficientNetV2B0": "efficientnetv2-b0_notop.h5",
}


class TrainingError(ValueError):
    """A training request that cannot be honoured; the message says why."""


class TrainingCancelled(Exception):
    """The user asked the run to stop; the last complete epoch's checkpoint is kept."""


def weights_file(backbone: str, weights_dir: Path) -> Path | None:
    """The backbone's ImageNet weights in the weights directory or the Keras cache, or None."""
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    for folder in (weights_dir, cache):
        candidate = folder / BACKBONES[backbone]
        if candidate.is_file():
            return candidate
    return None


def backbones_with_weights(settings: Settings) -> list[str]:
    """The backbones whose ImageNet weights this machine has (weights folder or Keras cache)."""
    return [name for name in BACKBONES if weights_file(name, settings.weights_path) is not None]


def missing_weights(settings: Settings, params: TrainParams) -> str | None:
    """Why the run cannot start for want of ImageNet weights, or None when it can.

    A resumed run needs none: it loads its checkpoint. Checked when a job is submitted (the
    weights directory lives in the shared data directory) and again where it runs.
    """
    if params.weights != "imagenet" or params.resume_from_job is not None:
        return None
    if weights_file(params.backbone, settings.weights_path) is not None:
        return None
    return (
        f"no ImageNet weights for {params.backbone}: put {BACKBONES[params.backbone]} in "
        f"{settings.weights_path} (or the Keras cache, ~/.keras/models), or train from "
        'scratch (weights "none"; null in the JSON API)'
    )


# --- parameters ----------------------------------------------------------------------------


class LastLayers(BaseModel):
    model_config = ConfigDict(extra="forbid")

    last: int = Field(ge=1, le=10_000, description="Unfreeze this many backbone layers.")


class Phase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(description="Epochs in this phase (at least 1).")
    unfreeze: Literal["head", "all"] | LastLayers = Field(
        default="head", description='"head" (backbone frozen), "all", or {"last": N} layers.'
    )
    learning_rate: float = Field(default=1e-3, gt=0, le=1)

    @field_validator("epochs")
    @classmethod
    def _epochs(cls, value: int) -> int:
        if value < 1:
            raise ValueError("a phase needs at least 1 epoch")
        if value > 1000:
            raise ValueError("a phase can have at most 1000 epochs")
        return value


class Augmentation(BaseModel):
    """Magnitudes of the Keras augmentation layers; 0 (or false) switches one off."""

    model_config = ConfigDict(extra="forbid")

    flip: bool = True
    rotation: float = Field(default=0.05, ge=0, le=0.5, description="Fraction of a full turn.")
    translation: float = Field(default=0.1, ge=0, le=0.5)
    zoom: float = Field(default=0.1, ge=0, le=0.5)
    contrast: float = Field(default=0.1, ge=0, le=1)
    brightness: float = Field(default=0.1, ge=0, le=1)


def _default_phases() -> list[Phase]:
    return [
        Phase(epochs=5, unfreeze="head", learning_rate=1e-3),
        Phase(epochs=5, unfreeze=LastLayers(last=30), learning_rate=1e-4),
    ]


class TrainParams(BaseModel):
    """Train a classifier on a dataset version."""

    model_config = ConfigDict(extra="forbid")

    dataset_version_id: int = Field(ge=1, description="The dataset version to train on.")
    backbone: str = Field(default="MobileNetV3Small", description="A keras.applications model.")
    weights: Literal["imagenet"] | None = Field(
        default="imagenet", description='"imagenet" (needs the weights file) or null (scratch).'
    )
    image_size: int = Field(default=224, ge=32, le=512)
    batch_size: int = Field(default=32, ge=1, le=1024)
    phases: list[Phase] = Field(default_factory=_default_phases, min_length=1, max_length=10)
    augmentation: Augmentation = Field(default_factory=Augmentation)
    dropout: float = Field(default=0.2, ge=0, lt=1)
    label_smoothing: float = Field(default=0.0, ge=0, le=0.5)
    class_weights: bool = Field(default=True, description="Weigh classes against imbalance.")
    mixed_precision: Literal["auto", "on", "off"] = Field(
        default="auto", description='"auto": on when a GPU is visible.'
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    cache: Literal["memory", "file"] = Field(
        default="memory",
        description='Decoded pixels kept in "memory", or in "file"s beside the checkpoints '
        "(for a dataset bigger than memory; removed when the run ends).",
    )
    early_stopping_patience: int = Field(default=4, ge=1, le=1000)
    reduce_lr_patience: int = Field(default=2, ge=1, le=1000)
    metrics_every_steps: int = Field(default=10, ge=1, le=100_000)
    resume_from_job: int | None = Field(
        default=None, ge=1, description="Continue that train job from its last checkpoint."
    )

    @field_validator("backbone")
    @classmethod
    def _backbone(cls, value: str) -> str:
        if value not in BACKBONES:
            raise ValueError(f"unknown backbone '{value}'; choose one of {', '.join(BACKBONES)}")
        return value

    @model_validator(mode="after")
    def _unfreeze_needs_a_backbone_to_train(self) -> TrainParams:
        if self.weights is None and all(p.unfreeze == "head" for p in self.phases):
            raise ValueError(
                "with weights: null the backbone starts random; unfreeze it in some phase"
            )
        return self

    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)


# --- the data ------------------------------------------------------------------------------


@dataclass
class SplitFiles:
    paths: list[str]
    labels: list[int]
    image_ids: list[int]


@dataclass
class TrainingData:
    version: DatasetVersion
    labels: list[str]
    splits: dict[str, SplitFiles]


def training_files(session: Session, settings: Settings, version_id: int) -> TrainingData:
    """A version's absolute file paths and class indices per split."""
    from app.services import datasets

    version = session.get(DatasetVersion, version_id)
    if version is None:
        raise TrainingError(f"there is no dataset version {version_id}")
    rows = session.exec(
        select(DatasetItem.split, DatasetItem.class_index, Image.id, Image.path)
        .join(Image, col(Image.id) == col(DatasetItem.image_id))
        .where(DatasetItem.dataset_version_id == version_id)
        .order_by(col(DatasetItem.image_id))
    ).all()
    splits = {s: SplitFiles([], [], []) for s in ("train", "val", "test")}
    missing = 0
    for split, index, image_id, path in rows:
        if path is None:
            missing += 1
            continue
        splits[split].paths.append(str(settings.data_dir / path))
        splits[split].labels.append(index)
        splits[split].image_ids.append(image_id)
    if missing:
        raise TrainingError(f"{missing} photos of dataset version {version_id} have no file")
    if not splits["train"].paths:
        raise TrainingError(f"dataset version {version_id} has no training photos")
    return TrainingData(version=version, labels=datasets.labels(version), splits=splits)


def class_weight_map(labels: list[int], num_classes: int) -> dict[int, float]:
    """Balanced weights: n / (k * count); a class absent from training gets 1."""
    counts = [0] * num_classes
    for y in labels:
        counts[y] += 1
    total = len(labels)
    return {
        i: (total / (num_classes * c) if c else 1.0) for i, c in enumerate(counts)
    }  # fmt: skip


def metric_writer(db_url: str, job_id: int) -> Callable[[list[dict[str, Any]]], None]:
    """A writer for the metrics callback: each call appends its rows in one transaction."""
    from app.db import session_scope

    def write(rows: list[dict[str, Any]]) -> None:
        with session_scope(db_url) as session:
            for row in rows:
                values = dict(row)
                phase, epoch, step = values.pop("phase"), values.pop("epoch"), values.pop("step")
                session.add(
                    JobMetric(job_id=job_id, phase=phase, epoch=epoch, step=step, values=values)
                )

    return write


def checkpoint_dir(settings: Settings, job_id: int) -> Path:
    return settings.data_dir / "models" / f"job-{job_id}"


# --- the run -------------------------------------------------------------------------------


@dataclass
class TrainingReport:
    trained_model_id: int
    metrics: dict[str, Any]
    epochs: int
    seconds: float
    resumed_from: int | None

    def as_dict(self) -> dict[str, Any]:
        from app.services.evaluation import summary

        short = summary(self.metrics)
        return {
            "trained_model_id": self.trained_model_id,
            "epochs": self.epochs,
            "seconds": round(self.seconds, 1),
            "resumed_from": self.resumed_from,
            **short,
        }


def _setup_devices(params: TrainParams) -> bool:
    """Memory growth on every GPU; returns whether mixed precision is on."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        with contextlib.suppress(RuntimeError):  # already initialised in this process
            tf.config.experimental.set_memory_growth(gpu, True)
    mixed = params.mixed_precision == "on" or (params.mixed_precision == "auto" and bool(gpus))
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    return mixed


class ResumeRefused(ValueError):
    """This job cannot be resumed; the message says why."""


def resume_params(settings: Settings, job: Job) -> dict[str, Any]:
    """Parameters for a new train job that continues `job` from its last checkpoint."""
    if job.kind != "train":
        raise ResumeRefused(f"job {job.id} is a {job.kind} job; only training can be resumed")
    if job.status not in ("failed", "cancelled"):
        raise ResumeRefused(f"job {job.id} is {job.status}; only a failed or cancelled run resumes")
    if not (checkpoint_dir(settings, job.id) / "progress.json").is_file():
        raise ResumeRefused(f"job {job.id} stopped before it finished an epoch: nothing to resume")
    return {**job.params, "resume_from_job": job.id}


def _resume_state(settings: Settings, params: TrainParams, job_id: int) -> dict[str, Any] | None:
    if params.resume_from_job is None:
        return None
    source = checkpoint_dir(settings, params.resume_from_job)
    progress_path = source / "progress.json"
    if not progress_path.is_file() or not (source / "last.keras").is_file():
        raise TrainingError(
            f"job {params.resume_from_job} left no checkpoint to resume from (no complete epoch)"
        )
    state = json.loads(progress_path.read_text())
    for key in ("dataset_version_id", "backbone", "image_size"):
        if state.get(key) != getattr(params, key):
            raise TrainingError(
                f"cannot resume job {params.resume_from_job}: its {key} was {state.get(key)!r}, "
                f"not {getattr(params, key)!r}"
            )
    target = checkpoint_dir(settings, job_id)
    target.mkdir(parents=True, exist_ok=True)
    for name in ("last.keras", "best.keras"):
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    state["source"] = source
    return state


def run_training(
    session: Session,
    settings: Settings,
    params: TrainParams | dict[str, Any],
    *,
    job_id: int,
    write_metrics: Callable[[list[dict[str, Any]]], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    progress: Callable[[float, str], None] | None = None,
    log: Callable[[str], None] | None = None,
    cancel_interval_s: float = 0.5,
) -> TrainingReport:
    """Train, evaluate on the test split and record a TrainedModel; see the module docstring.

    Raises TrainingError for a request that cannot run (before any training), and
    TrainingCancelled when `cancelled()` turned true (the last complete epoch stays resumable).
    """
    if not isinstance(params, TrainParams):
        params = TrainParams.model_validate(params)
    say = log or (lambda message: None)
    write = write_metrics or metric_writer(settings.db_url, job_id)
    data = training_files(session, settings, params.dataset_version_id)
    num_classes = len(data.labels)
    if num_classes < 2:
        raise TrainingError("a classifier needs at least two classes")
    problem = missing_weights(settings, params)
    if problem:
        raise TrainingError(problem)
    folder = checkpoint_dir(settings, job_id)
    state = _resume_state(settings, params, job_id)
    folder.mkdir(parents=True, exist_ok=True)

    import keras

    from app.services.evaluation import evaluate, predict_split
    from workers.ml import backbones
    from workers.ml.callbacks import (
        EpochCheckpoint,
        EpochProgress,
        MetricsCallback,
        StopRequested,
    )
    from workers.ml.data import make_dataset

    mixed = _setup_devices(params)
    keras.utils.set_random_seed(params.seed)
    started = time.monotonic()
    train_split, val_split, test_split = (data.splits[s] for s in ("train", "val", "test"))
    common = {"num_classes": num_classes, "image_size": params.image_size}
    cache_dir = folder / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)  # a killed run's partial cache is unusable
    if params.cache == "file":
        cache_dir.mkdir()

    def cache_for(split: str) -> bool | Path:
        return cache_dir / split if params.cache == "file" else True

    train_ds = make_dataset(
        train_split.paths, train_split.labels, **common, batch_size=params.batch_size,
        training=True, seed=params.seed, cache=cache_for("train"),
    )  # fmt: skip
    val_ds = (
        make_dataset(val_split.paths, val_split.labels, **common, batch_size=params.batch_size,
                     training=False, cache=cache_for("val"))
        if val_split.paths else None
    )  # fmt: skip
    monitor = "val_loss" if val_ds is not None else "loss"
    steps = -(-len(train_split.paths) // params.batch_size)
    weights_by_class = (
        class_weight_map(train_split.labels, num_classes) if params.class_weights else None
    )

    pretrained = params.weights is not None
    if state is not None:
        model = keras.models.load_model(folder / "last.keras")
        start_phase = int(state["phase"])
        epochs_done = int(state["epochs_done"])
        phase_done = int(state["phase_epochs_done"])
        if phase_done >= params.phases[start_phase].epochs:
            start_phase, phase_done = start_phase + 1, 0
        best = state.get("best")
        resume_lr = float(state["learning_rate"]) if phase_done else None
        say(
            f"resuming job {params.resume_from_job} at phase {start_phase + 1}, epoch {epochs_done}"
        )
    else:
        model = backbones.build_model(
            params.backbone, num_classes, params.image_size, params.weights, params.dropout,
            params.augmentation.model_dump(), weights_dir=settings.weights_path, seed=params.seed,
        )  # fmt: skip
        start_phase, epochs_done, phase_done, best, resume_lr = 0, 0, 0, None, None

    top_k = min(5, num_classes)
    saved_state = {
        "dataset_version_id": params.dataset_version_id,
        "backbone": params.backbone,
        "image_size": params.image_size,
    }
    for index in range(start_phase, len(params.phases)):
        phase = params.phases[index]
        unfreeze = (
            phase.unfreeze if isinstance(phase.unfreeze, str) else phase.unfreeze.model_dump()
        )
        trainable = backbones.set_trainable(model, unfreeze, pretrained=pretrained)
        lr = resume_lr if (resume_lr and index == start_phase) else phase.learning_rate
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=lr),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=params.label_smoothing),
            metrics=[
                keras.metrics.CategoricalAccuracy(name="accuracy"),
                keras.metrics.TopKCategoricalAccuracy(k=top_k, name="top5"),
            ],
        )
        remaining = phase.epochs - (phase_done if index == start_phase else 0)
        say(
            f"phase {index + 1}/{len(params.phases)}: unfreeze {unfreeze} "
            f"({trainable} backbone layers with weights trainable), lr {lr:g}, {remaining} epochs"
        )
        metrics_cb = MetricsCallback(
            write, phase=index, steps_per_epoch=steps, batch_size=params.batch_size,
            total_epochs=epochs_done + remaining, every_steps=params.metrics_every_steps,
            cancelled=cancelled, cancel_interval_s=cancel_interval_s,
            first_step=epochs_done * steps,
        )  # fmt: skip
        checkpoint_cb = EpochCheckpoint(
            folder, phase=index, phase_first_epoch=epochs_done - (phase.epochs - remaining),
            monitor=monitor, best=best, extra=saved_state,
        )  # fmt: skip
        callbacks = [
            metrics_cb,
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor, factor=0.3, patience=params.reduce_lr_patience, min_lr=1e-7
            ),
            keras.callbacks.EarlyStopping(
                monitor=monitor,
                patience=params.early_stopping_patience,
                restore_best_weights=True,
            ),
            checkpoint_cb,
        ]
        if progress is not None:
            callbacks.append(EpochProgress(progress, params.total_epochs))
        try:
            history = model.fit(
                train_ds, validation_data=val_ds, initial_epoch=epochs_done,
                epochs=epochs_done + remaining, class_weight=weights_by_class,
                callbacks=callbacks, verbose=0,
                shuffle=False,  # the tf.data pipeline shuffles, seeded, each epoch
            )  # fmt: skip
        except StopRequested:
            say(f"cancelled during epoch {metrics_cb.epoch + 1}; last checkpoint kept")
            shutil.rmtree(cache_dir, ignore_errors=True)
            raise TrainingCancelled from None
        epochs_done += len(history.epoch)
        best = checkpoint_cb.best

    seconds = time.monotonic() - started
    del train_ds, val_ds  # release the cache files before removing them
    shutil.rmtree(cache_dir, ignore_errors=True)
    best_path = folder / "best.keras"
    final = keras.models.load_model(best_path if best_path.is_file() else folder / "last.keras")
    final_path = folder / "model.keras"
    final.save(final_path)
    metrics: dict[str, Any] = {}
    if test_split.paths:
        probs = predict_split(
            final, test_split.paths, test_split.labels, **common, batch_size=params.batch_size
        )
        metrics = evaluate(probs, test_split.labels, num_classes, test_split.image_ids)
    metrics.update(
        epochs=epochs_done, train_seconds=round(seconds, 1), mixed_precision=mixed,
        train_images=len(train_split.paths), val_images=len(val_split.paths),
    )  # fmt: skip
    row = TrainedModel(
        name=f"{params.backbone} on {data.version.name} (job {job_id})",
        job_id=job_id,
        dataset_version_id=params.dataset_version_id,
        backbone=params.backbone,
        input_size=params.image_size,
        labels=data.labels,
        preprocessing=backbones.preprocessing_config(params.backbone, params.image_size),
        metrics=metrics,
        path=str(final_path.relative_to(settings.data_dir)),
        size_bytes=final_path.stat().st_size,
        created_at=utcnow(),
    )
    session.add(row)
    if params.resume_from_job is not None:
        job = session.get(Job, job_id)
        if job is not None and job.resumed_from_id is None:
            job.resumed_from_id = params.resume_from_job
            session.add(job)
    session.commit()
    assert row.id is not None
    if progress is not None:
        progress(1.0, f"test top-1 {metrics.get('top1', float('nan')):.3f}")
    return TrainingReport(
        trained_model_id=row.id,
        metrics=metrics,
        epochs=epochs_done,
        seconds=seconds,
        resumed_from=params.resume_from_job,
    )
