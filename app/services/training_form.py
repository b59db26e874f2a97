"""The web side of training: the two-phase form ↔ `TrainParams`, and metric rows for charts.

Never imports TensorFlow (the web app imports this).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlmodel import Session, col, select

from app.config import Settings
from app.models import JobMetric
from app.services.training import (
    BACKBONES,
    Augmentation,
    LastLayers,
    TrainParams,
    backbones_with_weights,
)

# Form fields as strings, in the order the form shows them.
FIELDS = (
    "dataset_version_id", "backbone", "weights", "image_size", "batch_size",
    "head_epochs", "head_lr", "fine_epochs", "fine_last", "fine_lr",
    "augment", "aug_magnitude", "dropout", "label_smoothing", "class_weights", "seed",
)  # fmt: skip
CHECKBOXES = ("augment", "class_weights")
# Where a TrainParams error lands on the form: the first parts of its location → a field.
_ERROR_FIELDS: dict[tuple[Any, ...], str] = {
    ("phases", 0, "epochs"): "head_epochs",
    ("phases", 0, "learning_rate"): "head_lr",
    ("phases", 1, "epochs"): "fine_epochs",
    ("phases", 1, "unfreeze"): "fine_last",
    ("phases", 1, "learning_rate"): "fine_lr",
    ("augmentation",): "aug_magnitude",
}
BACKBONE_NAMES = tuple(BACKBONES)


def default_form(
    dataset_version_id: int | None, settings: Settings | None = None, backbone: str | None = None
) -> dict[str, str]:
    """The form's starting values, taken from `TrainParams`' defaults. Given the settings, it
    starts from ImageNet only when this machine has the weights of the backbone (the default
    one unless named), and from scratch otherwise."""
    params = TrainParams(dataset_version_id=dataset_version_id or 1)
    if settings is not None and (backbone or params.backbone) not in backbones_with_weights(
        settings
    ):
        params.weights = None
    head, fine = params.phases[0], params.phases[1]
    assert isinstance(fine.unfreeze, LastLayers)
    return {
        "dataset_version_id": str(dataset_version_id or ""),
        "backbone": params.backbone,
        "weights": params.weights or "none",
        "image_size": str(params.image_size),
        "batch_size": str(params.batch_size),
        "head_epochs": str(head.epochs),
        "head_lr": f"{head.learning_rate:g}",
        "fine_epochs": str(fine.epochs),
        "fine_last": str(fine.unfreeze.last),
        "fine_lr": f"{fine.learning_rate:g}",
        "augment": "on" if params.augmentation.flip else "",
        # One magnitude drives the augmentation layers; rotation is half of it (a fraction
        # of a full turn), so the default 0.1 gives exactly Augmentation()'s defaults.
        "aug_magnitude": f"{params.augmentation.translation:g}",
        "dropout": f"{params.dropout:g}",
        "label_smoothing": f"{params.label_smoothing:g}",
        "class_weights": "on" if params.class_weights else "",
        "seed": str(params.seed),
    }


def _number(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value  # pydantic names the problem


def params_from_form(form: dict[str, str]) -> dict[str, Any]:
    """The job parameters a submitted form asks for (strings; `TrainParams` coerces them)."""
    if form.get("augment"):
        m = _number(form["aug_magnitude"])
        half = m / 2 if isinstance(m, float) else m
        augmentation: dict[str, Any] = {
            "flip": True, "rotation": half, "translation": m, "zoom": m,
            "contrast": m, "brightness": m,
        }  # fmt: skip
    else:
        augmentation = {**{k: 0 for k in Augmentation.model_fields}, "flip": False}
    fine_last = form["fine_last"]
    return {
        "dataset_version_id": form["dataset_version_id"],
        "backbone": form["backbone"],
        "weights": None if form["weights"] == "none" else form["weights"],
        "image_size": form["image_size"],
        "batch_size": form["batch_size"],
        "phases": [
            {"epochs": form["head_epochs"], "unfreeze": "head", "learning_rate": form["head_lr"]},
            {
                "epochs": form["fine_epochs"],
                "unfreeze": {"last": fine_last},
                "learning_rate": form["fine_lr"],
            },
        ],
        "augmentation": augmentation,
        "dropout": form["dropout"],
        "label_smoothing": form["label_smoothing"],
        "class_weights": bool(form.get("class_weights")),
        "seed": form["seed"],
    }


def form_errors(params: dict[str, Any]) -> dict[str, str]:
    """Validation messages keyed by form field ('form' for the whole); empty when valid."""
    try:
        TrainParams.model_validate(params)
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for err in exc.errors():
            loc = tuple(err["loc"])
            if any(str(part).startswith("literal[") for part in loc):
                continue  # the "head"/"all" side of the unfreeze union; the form sends {last}
            loc = tuple(p for p in loc if p != "LastLayers")
            field = next(
                (f for prefix, f in _ERROR_FIELDS.items() if loc[: len(prefix)] == prefix),
                str(loc[0]) if loc and loc[0] in FIELDS else "form",
            )
            message = str(err["msg"]).removeprefix("Value error, ")
            errors[field] = f"{errors[field]}; {message}" if field in errors else message
        return errors
    return {}


# --- metrics for the charts ----------------------------------------------------------------


def metric_row(metric: JobMetric) -> dict[str, Any]:
    """One JobMetric as the charts read it: id, phase, epoch, step and the values, flat."""
    return {
        **metric.values,
        "id": metric.id,
        "phase": metric.phase,
        "epoch": metric.epoch,
        "step": metric.step,
    }


def metrics_after(
    session: Session, job_id: int, after: int = 0, limit: int = 5000
) -> list[dict[str, Any]]:
    rows = session.exec(
        select(JobMetric)
        .where(JobMetric.job_id == job_id, col(JobMetric.id) > after)
        .order_by(col(JobMetric.id))
        .limit(limit)
    ).all()
    return [metric_row(m) for m in rows]
