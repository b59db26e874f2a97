"""TFLite exports of a trained model: the export job, its files, rows and model card.

An export job converts one TrainedModel into up to four TFLite files (`EXPORT_KINDS`: float32,
float16, dynamic-range, full-integer int8 with uint8 or float32 at the edges), runs each through
the LiteRT interpreter on the dataset version's test split and records, per file, one
`ModelExport` row: top-1 agreement with the Keras model, top-1 and top-5 accuracy, file size and
single-image latency (mean, p95) on one CPU thread. The conversion and the measuring live in
`workers/ml/tflite.py` (TensorFlow); this module only imports it when a run starts, so the web
app can import it.

Files, relative to the data directory: `exports/model-<id>/<key>/model.tflite` and
`bundle.zip`, where `<key>` is the kind, or `int8-uint8` / `int8-float32`. The bundle is all a
phone app (or `sporeprint predict`) needs: `model.tflite`, `labels.txt` (one label per line, in
the model's output order) and `model_card.json`. Both files are written atomically; exporting
the same kind again replaces the files and the row.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import Session, col, select

from app import __version__
from app.config import Settings
from app.models import DatasetItem, Image, Job, ModelExport, TrainedModel, utcnow
from app.services.evaluation import EvaluationError, ModelSource, model_source
from app.services.predict import BUNDLE_CARD, BUNDLE_LABELS, BUNDLE_MODEL, TfliteClassifier

EXPORT_KINDS = ("float32", "float16", "dynamic", "int8")
EXPORTS_DIR = "exports"
SAFETY_STATEMENT = (
    "This model is no advice on eating wild mushrooms. It identifies photos, often wrongly, and "
    "a photo can never show what decides whether a mushroom is safe to eat. Never eat a wild "
    "mushroom on the word of an app or of this model; ask a mycologist who holds it in hand."
)
KIND_DESCRIPTIONS = {
    "float32": "float32 weights and activations (the Keras model, converted as it is)",
    "float16": "float16 weights, float32 computation",
    "dynamic": "int8 weights, float activations quantised on the fly (dynamic range)",
    "int8": "int8 weights and activations, calibrated on training photos (full integer)",
}


class ExportError(ValueError):
    """An export request that cannot run; the message says why."""


class ExportCancelled(Exception):
    """The user asked the export to stop; rows and files of finished kinds are not written."""


class ExportParams(BaseModel):
    """Export a trained model to TFLite and measure every file on the test split."""

    model_config = ConfigDict(extra="forbid")

    trained_model_id: int = Field(ge=1, description="The trained model to export.")
    kinds: list[Literal["float32", "float16", "dynamic", "int8"]] = Field(
        default_factory=lambda: list(EXPORT_KINDS),
        min_length=1,
        description="Which files: float32, float16, dynamic (range), int8 (full integer).",
    )
    int8_io: Literal["uint8", "float32"] = Field(
        default="uint8", description="The int8 model's input and output: uint8 or float32."
    )
    representative_images: int = Field(
        default=100, ge=1, le=10_000, description="Training photos that calibrate int8."
    )
    evaluate_images: int | None = Field(
        default=None, ge=1, description="Measure on at most this many test photos (all: null)."
    )
    latency_images: int = Field(
        default=50, ge=1, le=10_000, description="Test photos timed one by one per file."
    )

    @field_validator("kinds")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        # The canonical order, each once.
        return [kind for kind in EXPORT_KINDS if kind in value]


def export_key(kind: str, int8_io: str = "uint8") -> str:
    """The folder name (and identity) of an export: its kind, and for int8 its edge dtype."""
    return f"int8-{int8_io}" if kind == "int8" else kind


def export_dir(settings: Settings, trained_model_id: int, key: str) -> Path:
    return settings.data_dir / EXPORTS_DIR / f"model-{trained_model_id}" / key


def check_source(session: Session, settings: Settings, trained_model_id: int) -> ModelSource:
    """The trained model, its file and its split (see `model_source`), or ExportError."""
    try:
        return model_source(session, settings, trained_model_id)
    except EvaluationError as exc:
        raise ExportError(str(exc)) from None


# --- the model card -------------------------------------------------------------------------


def licence_summary(session: Session, version_id: int) -> dict[str, Any]:
    """Photos per licence and the distinct attributions, over the whole dataset version."""
    rows = session.exec(
        select(Image.license, Image.attribution)
        .join(DatasetItem, col(DatasetItem.image_id) == col(Image.id))
        .where(DatasetItem.dataset_version_id == version_id)
    ).all()
    licences: Counter[str] = Counter()
    attributions: Counter[tuple[str, str]] = Counter()
    for licence, attribution in rows:
        name = licence or "unknown"
        licences[name] += 1
        if attribution:
            attributions[(attribution, name)] += 1
    return {
        "images": len(rows),
        "by_licence": dict(sorted(licences.items(), key=lambda kv: (-kv[1], kv[0]))),
        "attributions": [
            {"attribution": text, "license": licence, "images": count}
            for (text, licence), count in sorted(
                attributions.items(), key=lambda kv: (-kv[1], kv[0])
            )
        ],
        "note": (
            "Photos without a recorded licence were imported by their owner; check that you may "
            "publish a model trained on them."
            if licences.get("unknown")
            else "Every photo's licence and attribution is recorded in the dataset version."
        ),
    }


def training_recipe(session: Session, model: TrainedModel) -> dict[str, Any]:
    job = session.get(Job, model.job_id) if model.job_id is not None else None
    keep = ("epochs", "train_seconds", "train_images", "val_images", "mixed_precision")
    return {
        "backbone": model.backbone,
        "input_size": model.input_size,
        "job_id": model.job_id,
        "params": dict(job.params) if job is not None else {},
        **{k: model.metrics[k] for k in keep if k in model.metrics},
    }


def model_card(
    session: Session,
    source: ModelSource,
    row: ModelExport,
    classifier: TfliteClassifier,
) -> dict[str, Any]:
    model, version = source.model, source.data.version
    pre = model.preprocessing or {}
    keras_figures = row.details.get("keras", {})
    totals = version.stats.get("totals", {})
    inside = pre.get("inside_model", "the backbone's own preprocessing")
    return {
        "name": f"{model.name} — TFLite {row.quantization}",
        "format": "TFLite flatbuffer (LiteRT)",
        "quantization": row.quantization,
        "quantization_description": KIND_DESCRIPTIONS[row.quantization],
        "labels": list(model.labels),
        "input": {
            "size": [classifier.input_size, classifier.input_size, 3],
            "shape": [1, classifier.input_size, classifier.input_size, 3],
            "dtype": classifier.input_dtype,
            "quantization": row.details.get("input_quantization"),
            "range": [0, 255],
            "normalisation": (
                "none outside the model: feed RGB pixel values 0-255 ("
                + ("as uint8" if classifier.input_dtype == "uint8" else "as float32")
                + f"); inside: {inside}"
            ),
            "resize": pre.get("resize", "centre-crop to square, then bilinear resize"),
            "colour": "RGB, upright (EXIF orientation applied)",
        },
        "output": {
            "shape": [1, len(model.labels)],
            "dtype": classifier.output_dtype,
            "quantization": row.details.get("output_quantization"),
            "meaning": "softmax probabilities in the order of labels.txt",
        },
        "dataset_version": {
            "id": version.id,
            "name": version.name,
            "counts": {s: totals.get(s) for s in ("train", "val", "test", "total")},
            "classes": len(model.labels),
            "seed": version.seed,
        },
        "metrics": {
            "export": {
                "test_images": row.test_images,
                "top1_agreement_with_keras": row.top1_agreement,
                "top1_accuracy": row.accuracy,
                "top5_accuracy": row.top5_accuracy,
                "latency_ms_mean": row.latency_ms,
                "latency_ms_p95": row.latency_p95_ms,
                "latency_threads": 1,
            },
            "keras": {
                "test_images": keras_figures.get("test_images"),
                "top1_accuracy": keras_figures.get("accuracy"),
                "top5_accuracy": keras_figures.get("top5_accuracy"),
                "latency_ms_mean": keras_figures.get("latency_ms"),
                "latency_ms_p95": keras_figures.get("latency_p95_ms"),
                "recorded_at_training": {
                    k: model.metrics.get(k) for k in ("test_images", "top1", "top5", "macro_f1")
                },
            },
        },
        "size_bytes": row.size_bytes,
        "training_recipe": training_recipe(session, model),
        "trained_model_id": model.id,
        "licences": licence_summary(session, version.id or 0),
        "safety": SAFETY_STATEMENT,
        "created_at": row.created_at.isoformat(),
        "sporeprint_version": __version__,
    }


# --- files ----------------------------------------------------------------------------------


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bundle(path: Path, content: bytes, labels: list[str], card: dict[str, Any]) -> None:
    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w") as bundle:
            # Stored, not deflated: a phone can map the model straight out of the zip.
            bundle.writestr(BUNDLE_MODEL, content, compress_type=zipfile.ZIP_STORED)
            bundle.writestr(BUNDLE_LABELS, "".join(f"{label}\n" for label in labels),
                            compress_type=zipfile.ZIP_DEFLATED)  # fmt: skip
            bundle.writestr(BUNDLE_CARD, json.dumps(card, indent=2, ensure_ascii=False),
                            compress_type=zipfile.ZIP_DEFLATED)  # fmt: skip

    _atomic_write(path, write)


# --- the run --------------------------------------------------------------------------------


def run_export(
    session: Session,
    settings: Settings,
    params: ExportParams | dict[str, Any],
    *,
    job_id: int | None,
    progress: Callable[[float, str], None] | None = None,
    log: Callable[[str], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> list[ModelExport]:
    """Convert, measure and record every asked-for kind; see the module docstring.

    Raises ExportError before any work for a request that cannot run, ExportCancelled when
    `cancelled()` turned true (nothing is written then).
    """
    if not isinstance(params, ExportParams):
        params = ExportParams.model_validate(params)
    say = log or (lambda message: None)
    report = progress or (lambda fraction, text: None)
    source = check_source(session, settings, params.trained_model_id)
    model = source.model
    train_paths = source.data.splits["train"].paths
    test = source.data.splits["test"]
    assert model.id is not None

    def check() -> None:
        if cancelled is not None and cancelled():
            raise ExportCancelled

    from workers.ml import tflite

    started = time.monotonic()
    tflite.setup_devices()
    report(0.02, "loading the Keras model")
    keras_model, was_mixed = tflite.load_keras(source.model_path)
    if was_mixed:
        say("the model was trained in mixed precision; it is exported computing in float32")
    keys = [(export_key(kind, params.int8_io), kind) for kind in params.kinds]
    num_classes = len(model.labels)
    representative = None
    picked = 0
    if "int8" in params.kinds:
        chosen = tflite.sample(train_paths, params.representative_images)
        picked = len(chosen)
        representative = tflite.representative_dataset(
            [train_paths[i] for i in chosen], model.input_size, num_classes
        )
    check()
    converted, removed = tflite.convert_all(
        keras_model, keys, image_size=model.input_size, representative=representative,
        int8_io=params.int8_io,
        progress=lambda f, text: (report(0.05 + 0.35 * f, text), check()),
    )  # fmt: skip
    if removed:
        say(f"left out of the exported graph (training only): {', '.join(removed)}")
    classifiers = {
        key: TfliteClassifier(content, list(model.labels))
        for key, (content, _) in converted.items()
    }
    for key, classifier in classifiers.items():
        say(f"{key}: {classifier.size_bytes / 1e6:.2f} MB, input {classifier.input_dtype}")

    chosen_test = tflite.sample(test.paths, params.evaluate_images)
    paths = [test.paths[i] for i in chosen_test]
    truths = [test.labels[i] for i in chosen_test]
    check()
    scores, keras_scores, timed = tflite.evaluate(
        keras_model, classifiers, paths, truths, image_size=model.input_size,
        num_classes=num_classes, latency_images=params.latency_images,
        progress=lambda f, text: (report(0.4 + 0.5 * f, text), check()),
    )  # fmt: skip
    check()

    n = len(paths)
    keras_predicted = keras_scores.predicted
    keras_mean, keras_p95 = tflite.latency_summary(keras_scores.latencies_ms)
    keras_figures = {
        "test_images": n,
        "accuracy": sum(p == t for p, t in zip(keras_predicted, truths, strict=True)) / n,
        "top5_accuracy": sum(keras_scores.top5_hits) / n,
        "latency_ms": keras_mean,
        "latency_p95_ms": keras_p95,
        "latency_device": "CPU",
        "latency_threads": tflite.keras_threads() or "all cores",
        "size_bytes": model.size_bytes,
    }
    rows: list[ModelExport] = []
    for step, (key, kind) in enumerate(keys):
        content, converter_settings = converted[key]
        classifier, score = classifiers[key], scores[key]
        mean, p95 = tflite.latency_summary(score.latencies_ms)
        agree = sum(a == b for a, b in zip(score.predicted, keras_predicted, strict=True))
        details = {
            "key": key,
            "converter": {**converter_settings, "representative_images": picked}
            if kind == "int8"
            else converter_settings,
            "removed_layers": removed,
            "mixed_precision_made_float32": was_mixed,
            "ops": tflite.model_ops(content),
            "input_quantization": list(classifier.input_quantization),
            "output_quantization": list(classifier.output_quantization),
            "max_abs_prob_diff": max(score.abs_diff, default=0.0),
            "mean_max_abs_prob_diff": sum(score.abs_diff) / n,
            "disagreements": n - agree,
            "latency_images": timed,
            "latency_threads": 1,
            "keras": keras_figures,
        }
        row = ModelExport(
            trained_model_id=model.id,
            job_id=job_id,
            quantization=kind,
            input_dtype=classifier.input_dtype,
            output_dtype=classifier.output_dtype,
            path="",
            size_bytes=len(content),
            test_images=n,
            top1_agreement=agree / n,
            accuracy=sum(p == t for p, t in zip(score.predicted, truths, strict=True)) / n,
            top5_accuracy=sum(score.top5_hits) / n,
            latency_ms=mean,
            latency_p95_ms=p95,
            details=details,
            created_at=utcnow(),
        )
        folder = export_dir(settings, model.id, key)
        tflite_path, bundle_path = folder / BUNDLE_MODEL, folder / "bundle.zip"
        _atomic_write(tflite_path, lambda tmp, c=content: tmp.write_bytes(c))
        card = model_card(session, source, row, classifier)
        write_bundle(bundle_path, content, list(model.labels), card)
        row.path = str(tflite_path.relative_to(settings.data_dir))
        row.bundle_path = str(bundle_path.relative_to(settings.data_dir))
        details["bundle_size_bytes"] = bundle_path.stat().st_size
        rows.append(row)
        report(0.9 + 0.1 * (step + 1) / len(keys), f"wrote {key}")
        say(
            f"{key}: agreement {row.top1_agreement:.3f}, top-1 {row.accuracy:.3f}, "
            f"{row.size_bytes / 1e6:.2f} MB, {mean:.2f} ms (p95 {p95:.2f}) on {n} photos"
        )

    # The same kind exported before: its row goes (the files were just replaced).
    for row in rows:
        old = session.exec(
            select(ModelExport).where(
                ModelExport.trained_model_id == model.id,
                ModelExport.quantization == row.quantization,
                ModelExport.input_dtype == row.input_dtype,
            )
        ).all()
        for stale in old:
            session.delete(stale)
    session.flush()
    for row in rows:
        session.add(row)
    session.commit()
    for row in rows:
        session.refresh(row)
    say(f"exported {len(rows)} files in {time.monotonic() - started:.0f} s")
    return rows


def export_summary(row: ModelExport) -> dict[str, Any]:
    """The short figures of one export (a job result, a CLI line)."""
    return {
        "id": row.id,
        "quantization": row.quantization,
        "input_dtype": row.input_dtype,
        "size_bytes": row.size_bytes,
        "test_images": row.test_images,
        "top1_agreement": row.top1_agreement,
        "accuracy": row.accuracy,
        "top5_accuracy": row.top5_accuracy,
        "latency_ms": row.latency_ms,
        "latency_p95_ms": row.latency_p95_ms,
        "path": row.path,
        "bundle_path": row.bundle_path,
    }


def classifier_for(session: Session, settings: Settings, export_id: int) -> TfliteClassifier:
    """The loaded (cached) classifier of a ModelExport row, labelled by its trained model."""
    from app.services.media import contained
    from app.services.predict import PredictError, open_export

    row = session.get(ModelExport, export_id)
    if row is None:
        raise ExportError(f"there is no export {export_id}")
    model = session.get(TrainedModel, row.trained_model_id)
    path = contained(settings.data_dir, row.path)
    if model is None or path is None or not path.is_file():
        raise ExportError(f"the file of export {export_id} is missing")
    try:
        return open_export(path, list(model.labels))
    except PredictError as exc:
        raise ExportError(f"export {export_id}: {exc}") from None
