"""What the model page shows about one trained model: its evaluation in words and pictures.

Reads the figures `app/services/evaluation.py` stored in `TrainedModel.metrics` and puts names
on them: per-class scores (weakest first), the most confused species pairs, the misclassified
test photos with their top-5, the confusion matrix picture, and the model's TFLite exports.
Metrics from before a figure existed simply leave that part empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select

from app.models import DatasetVersion, Job, JobStatus, ModelExport, TrainedModel
from app.services.confusion_plot import ConfusionPicture, confusion_picture

ACTIVE = (JobStatus.queued.value, JobStatus.running.value)


@dataclass(frozen=True)
class ClassScore:
    index: int
    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ConfusedPair:
    a: str
    b: str
    a_as_b: int
    b_as_a: int
    total: int
    share: float


@dataclass(frozen=True)
class Guess:
    label: str
    probability: float
    correct: bool


@dataclass(frozen=True)
class Misclassified:
    image_id: int
    truth: str
    guesses: list[Guess]


@dataclass(frozen=True)
class ModelReport:
    model: TrainedModel
    version: DatasetVersion | None
    metrics: dict[str, Any]
    classes: list[ClassScore]
    pairs: list[ConfusedPair]
    misclassified: list[Misclassified]
    picture: ConfusionPicture | None
    exports: list[ModelExport]
    evaluating: Job | None  # a queued or running evaluate job of this model


def _label(labels: list[str], index: Any) -> str:
    if isinstance(index, int) and 0 <= index < len(labels):
        return labels[index]
    return f"class {index}"


def _classes(labels: list[str], per_class: Any) -> list[ClassScore]:
    if not isinstance(per_class, list):
        return []
    rows = [
        ClassScore(
            index=i, label=_label(labels, i), precision=float(p.get("precision", 0)),
            recall=float(p.get("recall", 0)), f1=float(p.get("f1", 0)),
            support=int(p.get("support", 0)),
        )
        for i, p in enumerate(per_class)
        if isinstance(p, dict)
    ]  # fmt: skip
    return sorted(rows, key=lambda r: (r.f1, -r.support, r.label))


def _pairs(labels: list[str], pairs: Any) -> list[ConfusedPair]:
    if not isinstance(pairs, list):
        return []
    return [
        ConfusedPair(
            a=_label(labels, p.get("a")), b=_label(labels, p.get("b")),
            a_as_b=int(p.get("a_as_b", 0)), b_as_a=int(p.get("b_as_a", 0)),
            total=int(p.get("total", 0)), share=float(p.get("share", 0)),
        )
        for p in pairs
        if isinstance(p, dict)
    ]  # fmt: skip


def _misclassified(labels: list[str], rows: Any) -> list[Misclassified]:
    if not isinstance(rows, list):
        return []
    out = []
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("image_id"), int):
            continue
        truth = row.get("truth")
        guesses = [
            Guess(_label(labels, c), float(p), c == truth)
            for c, p in row.get("top5", [])
            if isinstance(p, int | float)
        ]
        out.append(Misclassified(row["image_id"], _label(labels, truth), guesses))
    return out


def _evaluating(session: Session, model_id: int) -> Job | None:
    active = session.exec(
        select(Job)
        .where(Job.kind == "evaluate", col(Job.status).in_(ACTIVE))
        .order_by(col(Job.id).desc())
    ).all()
    return next((j for j in active if j.params.get("trained_model_id") == model_id), None)


def model_report(session: Session, model_id: int) -> ModelReport | None:
    model = session.get(TrainedModel, model_id)
    if model is None:
        return None
    metrics = model.metrics or {}
    exports = session.exec(
        select(ModelExport)
        .where(ModelExport.trained_model_id == model_id)
        .order_by(col(ModelExport.size_bytes), col(ModelExport.id))
    ).all()
    return ModelReport(
        model=model,
        version=session.get(DatasetVersion, model.dataset_version_id),
        metrics=metrics,
        classes=_classes(model.labels, metrics.get("per_class")),
        pairs=_pairs(model.labels, metrics.get("most_confused")),
        misclassified=_misclassified(model.labels, metrics.get("misclassified")),
        picture=confusion_picture(metrics.get("confusion"), model.labels),
        exports=list(exports),
        evaluating=_evaluating(session, model_id),
    )
