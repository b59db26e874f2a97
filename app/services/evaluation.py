"""How good a trained model is on its dataset version's test split.

`evaluate` turns predicted probabilities into the figures a TrainedModel keeps in `metrics`:
top-1, top-5, per-class precision/recall/F1, macro F1, the confusion matrix, the most confused
species pairs, and the misclassified test photos with their top-5 (worst first, bounded).
It is pure NumPy, so tests reach it without TensorFlow.

`run_evaluation` is the evaluate job: it loads a TrainedModel's `.keras` file, predicts the test
split again and replaces the evaluation figures in `metrics`, keeping what training recorded
(epochs, seconds, image counts). Training calls `predict_split` + `evaluate` the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from app.config import Settings
from app.models import TrainedModel

if TYPE_CHECKING:
    from app.services.training import TrainingData

MAX_MISCLASSIFIED = 60
MAX_CONFUSED_PAIRS = 10
# Keys `evaluate` writes; a re-evaluation replaces exactly these.
EVALUATION_KEYS = (
    "test_images", "top1", "top5", "macro_f1", "per_class", "confusion", "most_confused",
    "misclassified",
)  # fmt: skip
# Bulky keys a job result or a summary line leaves out.
DETAIL_KEYS = ("per_class", "confusion", "most_confused", "misclassified")


class EvaluationError(ValueError):
    """An evaluation that cannot run; the message says why."""


class EvaluateParams(BaseModel):
    """Evaluate a trained model on its dataset version's test split again."""

    model_config = ConfigDict(extra="forbid")

    trained_model_id: int = Field(ge=1, description="The trained model to evaluate.")
    batch_size: int = Field(default=32, ge=1, le=1024)


@dataclass
class ModelSource:
    """A trained model, its file, and its dataset version's files (in its class order)."""

    model: TrainedModel
    model_path: Path
    data: TrainingData


def model_source(session: Session, settings: Settings, trained_model_id: int) -> ModelSource:
    """What evaluating or exporting a model needs, checked before TensorFlow is loaded: the
    row, its `.keras` file, and a dataset version with its classes and a test split to measure
    on. EvaluationError names what is missing."""
    from app.services.training import TrainingError, training_files

    model = session.get(TrainedModel, trained_model_id)
    if model is None:
        raise EvaluationError(f"there is no trained model {trained_model_id}")
    model_path = settings.data_dir / model.path
    if not model_path.is_file():
        raise EvaluationError(
            f"the file of trained model {trained_model_id} is missing from the data directory "
            f"({model.path}); train it again"
        )
    try:
        data = training_files(session, settings, model.dataset_version_id)
    except TrainingError as exc:
        raise EvaluationError(str(exc)) from None
    if data.labels != list(model.labels):
        raise EvaluationError(
            f"dataset version {model.dataset_version_id}'s classes are not the model's outputs"
        )
    if not data.splits["test"].paths:
        raise EvaluationError(
            f"dataset version {data.version.name!r} has no test split to measure the model on; "
            "freeze a version with a test fraction above 0"
        )
    return ModelSource(model, model_path, data)


def most_confused(confusion: Any, limit: int = MAX_CONFUSED_PAIRS) -> list[dict[str, Any]]:
    """Species pairs (a < b) by how often either was taken for the other, most first.

    Each: {"a", "b", "a_as_b", "b_as_a", "total", "share"}; share = total over both classes'
    test photos, so a pair of rare species is not hidden behind a pair of common ones.
    """
    import numpy as np

    matrix = np.asarray(confusion, dtype=np.int64)
    support = matrix.sum(axis=1)
    pairs = []
    for a in range(len(matrix)):
        for b in range(a + 1, len(matrix)):
            total = int(matrix[a, b] + matrix[b, a])
            if total:
                both = int(support[a] + support[b])
                pairs.append({
                    "a": a, "b": b, "a_as_b": int(matrix[a, b]), "b_as_a": int(matrix[b, a]),
                    "total": total, "share": total / both if both else 0.0,
                })  # fmt: skip
    pairs.sort(key=lambda p: (-p["total"], -p["share"], p["a"], p["b"]))
    return pairs[:limit]


def evaluate(
    probs: Any,
    truth: Sequence[int] | Any,
    num_classes: int,
    image_ids: Sequence[int] | None = None,
    *,
    max_misclassified: int = MAX_MISCLASSIFIED,
) -> dict[str, Any]:
    """The evaluation figures described in the module docstring.

    `misclassified` (needs `image_ids`): [{"image_id", "truth", "top5": [[class, p], ...]}],
    the most confidently wrong first.
    """
    import numpy as np

    probs = np.asarray(probs, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.int64)
    n = len(truth)
    if n == 0:
        return {"test_images": 0}
    predicted = probs.argmax(axis=1)
    k = min(5, num_classes)
    top_k = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    per_class = []
    for c in range(num_classes):
        tp = int(confusion[c, c])
        predicted_c, actual_c = int(confusion[:, c].sum()), int(confusion[c, :].sum())
        precision = tp / predicted_c if predicted_c else 0.0
        recall = tp / actual_c if actual_c else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class.append({"precision": precision, "recall": recall, "f1": f1, "support": actual_c})
    present = [p["f1"] for p in per_class if p["support"]]
    wrong: list[dict[str, Any]] = []
    if image_ids is not None:
        rows = np.flatnonzero(predicted != truth)
        # Most confidently wrong first: what a person should look at (a mislabelled photo?).
        rows = rows[np.argsort(-probs[rows, predicted[rows]], kind="stable")][:max_misclassified]
        wrong = [
            {
                "image_id": int(image_ids[i]),
                "truth": int(truth[i]),
                "top5": [[int(c), round(float(probs[i, c]), 4)] for c in top_k[i]],
            }
            for i in rows
        ]
    return {
        "test_images": n,
        "top1": float((predicted == truth).mean()),
        "top5": float((top_k == truth[:, None]).any(axis=1).mean()),
        "macro_f1": float(sum(present) / len(present)) if present else 0.0,
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "most_confused": most_confused(confusion),
        "misclassified": wrong,
    }


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """`metrics` without the bulky detail (for job results and lists)."""
    return {k: v for k, v in metrics.items() if k not in DETAIL_KEYS}


def predict_split(
    model: Any, paths: Sequence[str], labels: Sequence[int], *, num_classes: int,
    image_size: int, batch_size: int,
) -> Any:  # fmt: skip
    """Class probabilities (float64, n x classes) of a Keras model on a list of files."""
    from workers.ml.data import make_dataset

    ds = make_dataset(
        paths, labels, num_classes=num_classes, image_size=image_size, batch_size=batch_size,
        training=False, cache=False,
    )  # fmt: skip
    return model.predict(ds, verbose=0).astype("float64")


def run_evaluation(
    session: Session,
    settings: Settings,
    params: EvaluateParams | dict[str, Any],
    *,
    progress: Callable[[float, str], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate a TrainedModel on its test split again; returns the new metrics (updated row)."""
    if not isinstance(params, EvaluateParams):
        params = EvaluateParams.model_validate(params)
    source = model_source(session, settings, params.trained_model_id)
    row, test = source.model, source.data.splits["test"]
    say = log or (lambda message: None)
    if progress is not None:
        progress(0.05, "loading the model")

    import keras

    model = keras.models.load_model(source.model_path)
    say(f"predicting {len(test.paths)} test photos")
    probs = predict_split(
        model, test.paths, test.labels, num_classes=len(row.labels), image_size=row.input_size,
        batch_size=params.batch_size,
    )  # fmt: skip
    figures = evaluate(probs, test.labels, len(row.labels), test.image_ids)
    row.metrics = {**{k: v for k, v in row.metrics.items() if k not in EVALUATION_KEYS}, **figures}
    session.add(row)
    session.commit()
    if progress is not None:
        progress(1.0, f"test top-1 {figures['top1']:.3f}")
    return row.metrics
