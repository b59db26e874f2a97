"""TFLite export: four kinds of the session's demo model, measured against the Keras model.

One module-scoped export job (all four kinds, on a copy of the demo model's world, through the
`export` job's body) serves most tests; the figures are printed (`pytest -s`). The demo test
split is small (16 photos), so one disagreement is 6 %.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from demo_model import DemoModel
from sqlmodel import Session, col, select
from support import ROOT, settings_env

from app.config import Settings
from app.db import get_engine, session_scope
from app.models import DatasetItem, Job, JobStatus, ModelExport, TrainedModel
from app.services import datasets, jobs
from app.services.datasets import DatasetPolicy
from app.services.exports import (
    SAFETY_STATEMENT,
    ExportError,
    ExportParams,
    classifier_for,
    run_export,
)
from app.services.predict import load_bundle, open_export, preprocess

pytest.importorskip("tensorflow")

MODEL_CARD_KEYS = {
    "name", "labels", "input", "output", "dataset_version", "metrics", "size_bytes",
    "training_recipe", "licences", "safety", "created_at", "sporeprint_version",
}  # fmt: skip


def copy_world(demo: DemoModel, root: Path) -> Settings:
    """The demo model's data directory and database, copied (the original is shared)."""
    source = demo.settings.data_dir
    target = root / "data"
    shutil.copytree(
        source, target,
        ignore=shutil.ignore_patterns("sporeprint.db*", "broker.db*", "last.keras", "best.keras"),
    )  # fmt: skip
    with (
        sqlite3.connect(source / "sporeprint.db") as src,
        sqlite3.connect(target / "sporeprint.db") as dst,
    ):
        src.backup(dst)
    return Settings(_env_file=None, data_dir=target)


@dataclass
class Exported:
    settings: Settings
    model: TrainedModel
    job: Job
    rows: dict[str, ModelExport]  # by quantization


@pytest.fixture(scope="module")
def exported(demo_model: DemoModel, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """An `export` job of all four kinds, run by its task body as a worker would."""
    from workers.tasks.base import JobContext
    from workers.tasks.export import export_body

    settings = copy_world(demo_model, tmp_path_factory.mktemp("export"))
    params = {"trained_model_id": demo_model.trained_model_id}
    with session_scope(settings.db_url) as session:
        job = jobs.create_job(session, "export", params=params)
        assert job.queue == "gpu" and job.id is not None
        jobs.start_job(
            session, job.id, worker_name="gpu@test", worker_host="test", worker_pid=os.getpid(),
            task_id=None,
        )  # fmt: skip
        job_id = job.id
        clean = dict(job.params)
    result = export_body(JobContext(settings, job_id, clean))
    with Session(get_engine(settings.db_url), expire_on_commit=False) as session:
        jobs.finish_job(session, job_id, JobStatus.succeeded, result=result)
        session.commit()
        rows = session.exec(select(ModelExport)).all()
        model = session.get(TrainedModel, demo_model.trained_model_id)
        job_row = session.get(Job, job_id)
        assert model is not None and job_row is not None
    return Exported(settings, model, job_row, {r.quantization: r for r in rows})


def test_four_kinds_agree_with_keras(exported: Exported) -> None:
    rows = exported.rows
    assert list(rows) == ["float32", "float16", "dynamic", "int8"]
    keras = rows["float32"].details["keras"]
    print(
        f"\nkeras: top-1 {keras['accuracy']:.3f}, top-5 {keras['top5_accuracy']:.3f}, "
        f"{keras['latency_ms']:.2f} ms (p95 {keras['latency_p95_ms']:.2f}), "
        f"{keras['size_bytes'] / 1e6:.2f} MB .keras"
    )
    for kind, row in rows.items():
        print(
            f"{kind:8} {row.input_dtype:7} {row.size_bytes / 1e6:5.2f} MB  agreement "
            f"{row.top1_agreement:.3f}  top-1 {row.accuracy:.3f}  top-5 {row.top5_accuracy:.3f}"
            f"  {row.latency_ms:.2f} ms (p95 {row.latency_p95_ms:.2f})  on {row.test_images}"
            f" photos, max |p - p_keras| {row.details['max_abs_prob_diff']:.4f}"
        )
        tested = exported.model.metrics["test_images"]
        assert row.test_images == tested and row.job_id == exported.job.id
        assert row.latency_ms > 0 and row.latency_p95_ms >= row.latency_ms * 0.5
        assert row.details["latency_threads"] == 1
        assert row.details["latency_images"] == min(50, tested)
        assert not Path(row.path).is_absolute() and not Path(row.bundle_path).is_absolute()
        file = exported.settings.data_dir / row.path
        assert file.stat().st_size == row.size_bytes
    float32, float16, int8 = rows["float32"], rows["float16"], rows["int8"]
    assert float32.top1_agreement >= 0.99
    assert float32.details["max_abs_prob_diff"] < 1e-3
    assert float16.top1_agreement >= 0.98
    ratio = int8.size_bytes / float32.size_bytes
    print(f"int8 / float32 size: {ratio:.3f}; float16 / float32: "
          f"{float16.size_bytes / float32.size_bytes:.3f}")  # fmt: skip
    assert ratio <= 0.35
    assert int8.top1_agreement >= 0.90
    assert int8.input_dtype == "uint8" and int8.output_dtype == "uint8"
    # At most 100 (the default) photos of the train split.
    train_images = exported.model.metrics["train_images"]
    assert int8.details["converter"]["representative_images"] == min(100, train_images)
    assert rows["dynamic"].size_bytes < float16.size_bytes < float32.size_bytes
    assert (exported.settings.data_dir / float32.path).parent.name == "float32"
    assert (exported.settings.data_dir / int8.path).parent.name == "int8-uint8"


def test_the_job_records_its_result(exported: Exported) -> None:
    assert exported.job.status == JobStatus.succeeded
    result = exported.job.result or {}
    assert result["trained_model_id"] == exported.model.id
    assert [e["quantization"] for e in result["exports"]] == list(exported.rows)
    assert {e["id"] for e in result["exports"]} == {r.id for r in exported.rows.values()}


def test_no_augmentation_in_the_exported_graph(exported: Exported) -> None:
    """The demo model trains with RandomFlip; the files carry no trace of it."""
    import keras

    from workers.ml import tflite

    keras_model = keras.models.load_model(exported.settings.data_dir / exported.model.path)
    assert any(tflite.is_training_only(layer) for layer in keras_model.layers)
    inference, removed = tflite.inference_model(keras_model)
    assert removed == ["random_flip"]
    assert not any(tflite.is_training_only(layer) for layer in inference.layers)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    assert np.allclose(inference(pixels, training=False), keras_model(pixels, training=False))
    for row in exported.rows.values():
        content = (exported.settings.data_dir / row.path).read_bytes()
        ops = tflite.model_ops(content)
        assert ops == row.details["ops"]
        assert tflite.random_ops(content) == [] and not any(op.startswith("CUSTOM") for op in ops)
        assert not any("random" in name.lower() for name in tflite.tensor_names(content))
        assert row.details["removed_layers"] == ["random_flip"]


def test_the_bundle_holds_model_labels_and_card(exported: Exported) -> None:
    model = exported.model
    with Session(get_engine(exported.settings.db_url)) as session:
        version_images = len(
            session.exec(
                select(DatasetItem.id).where(
                    DatasetItem.dataset_version_id == model.dataset_version_id
                )
            ).all()
        )
    for kind, row in exported.rows.items():
        path = exported.settings.data_dir / row.bundle_path
        with zipfile.ZipFile(path) as bundle:
            assert sorted(bundle.namelist()) == ["labels.txt", "model.tflite", "model_card.json"]
            assert (
                bundle.read("model.tflite") == (exported.settings.data_dir / row.path).read_bytes()
            )
            labels = bundle.read("labels.txt").decode().splitlines()
            card = json.loads(bundle.read("model_card.json"))
        assert labels == model.labels
        assert row.details["bundle_size_bytes"] == path.stat().st_size
        assert set(card) >= MODEL_CARD_KEYS
        assert card["labels"] == labels and card["quantization"] == kind
        assert card["safety"] == SAFETY_STATEMENT
        assert card["safety"].startswith("This model is no advice on eating wild mushrooms")
        assert card["input"]["size"] == [64, 64, 3] and card["input"]["dtype"] == row.input_dtype
        assert card["input"]["range"] == [0, 255] and card["input"]["colour"].startswith("RGB")
        assert card["output"]["shape"] == [1, len(labels)]
        assert card["size_bytes"] == row.size_bytes
        assert card["metrics"]["export"]["top1_agreement_with_keras"] == row.top1_agreement
        assert card["metrics"]["keras"]["top1_accuracy"] == row.details["keras"]["accuracy"]
        assert card["dataset_version"]["id"] == model.dataset_version_id
        assert card["dataset_version"]["counts"]["test"] == model.metrics["test_images"]
        assert card["training_recipe"]["params"]["backbone"] == "MobileNetV3Small"
        # Imported demo photos carry no licence: all counted, under "unknown".
        assert card["licences"]["by_licence"] == {"unknown": version_images}
        # The bundle's classifier: labels in the model's output order.
        classifier = load_bundle(path)
        assert classifier.labels == labels and classifier.num_classes == len(labels)
        assert classifier.input_dtype == row.input_dtype and classifier.input_size == 64


def test_the_bundle_alone_predicts_what_the_app_predicts(
    exported: Exported, demo_model: DemoModel, tmp_path: Path
) -> None:
    """A bundle copied out, run by `sporeprint predict` with no database, = the app's answer."""
    import keras

    photos = sorted(demo_model.photos.glob("*/*.jpg"))[::17][:6]
    keras_model = keras.models.load_model(exported.settings.data_dir / exported.model.path)
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    # No database anywhere: an empty data directory and an unreachable server URL.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOREPRINT_")}
    env.update(
        SPOREPRINT_DATA_DIR=str(empty), DATABASE_URL="postgresql+psycopg2://x@127.0.0.1:1/none"
    )
    for kind in ("float32", "int8"):
        row = exported.rows[kind]
        bundle = tmp_path / f"{kind}.zip"
        shutil.copy(exported.settings.data_dir / row.bundle_path, bundle)
        with Session(get_engine(exported.settings.db_url)) as session:
            assert row.id is not None
            app_classifier = classifier_for(session, exported.settings, row.id)
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", "predict", str(bundle), *map(str, photos[:1]),
             "--top", "3", "--json"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        printed = json.loads(result.stdout)["top"]
        app_top = app_classifier.predict_image(photos[0], 3)
        assert [name for name, _ in printed] == [name for name, _ in app_top]
        assert np.allclose([p for _, p in printed], [p for _, p in app_top], atol=1e-6)
        assert not list(empty.iterdir())  # nothing was created there
        standalone = load_bundle(bundle)
        for photo in photos:
            ours = standalone.predict_image(photo, 4)
            assert ours == app_classifier.predict_image(photo, 4)
            pixels = preprocess(photo, exported.model.input_size)
            keras_probs = np.asarray(keras_model(pixels[None], training=False))[0]
            if kind == "float32":
                assert ours[0][0] == exported.model.labels[int(keras_probs.argmax())]
                assert abs(ours[0][1] - float(keras_probs.max())) < 1e-4


def test_predict_cli_by_export_id_and_by_tflite_file(
    exported: Exported, demo_model: DemoModel
) -> None:
    photo = sorted(demo_model.photos.glob("*/*.jpg"))[0]
    row = exported.rows["float16"]
    env = settings_env(exported.settings)
    by_id = subprocess.run(
        [sys.executable, "-m", "app.cli", "predict", str(row.id), str(photo)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert by_id.returncode == 0, by_id.stderr
    lines = by_id.stdout.splitlines()
    assert len(lines) == min(5, len(exported.model.labels))
    assert "no advice on eating wild mushrooms" in by_id.stderr
    tflite_file = exported.settings.data_dir / row.path  # labels.txt is not beside it
    labels = exported.settings.data_dir.parent / "labels.txt"
    labels.write_text("\n".join(exported.model.labels) + "\n")
    by_file = subprocess.run(
        [sys.executable, "-m", "app.cli", "predict", str(tflite_file), str(photo),
         "--labels", str(labels)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert by_file.returncode == 0 and by_file.stdout == by_id.stdout
    for args, message in (
        (["999", str(photo)], "there is no export 999"),
        ([str(tflite_file), str(photo.with_suffix(".missing"))], "no such file"),
        ([str(row.bundle_path), str(photo)], "no such export file"),
    ):
        bad = subprocess.run(
            [sys.executable, "-m", "app.cli", "predict", *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr


def test_exporting_again_replaces_files_and_rows(exported: Exported) -> None:
    """`sporeprint export` of float32 + int8 with float32 edges: float32 is replaced, int8
    with uint8 edges stays beside the new int8 with float32 edges."""
    settings, model = exported.settings, exported.model
    old = exported.rows["float32"]
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "export", str(model.id), "--kind", "int8",
         "--kind", "float32", "--int8-io", "float32", "--evaluate-images", "8",
         "--representative-images", "60", "--latency-images", "3"],
        cwd=ROOT, env=settings_env(settings), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    print(result.stderr)
    with Session(get_engine(settings.db_url)) as session:
        rows = session.exec(select(ModelExport).order_by(col(ModelExport.id))).all()
    by_key = {(r.quantization, r.input_dtype): r for r in rows}
    assert len(rows) == 5 and len(by_key) == 5
    new = by_key[("float32", "float32")]
    assert new.id != old.id and new.test_images == 8 and new.job_id is None
    assert new.path == old.path  # the same file, replaced
    assert by_key[("int8", "uint8")].id == exported.rows["int8"].id
    float_edges = by_key[("int8", "float32")]
    assert float_edges.output_dtype == "float32" and float_edges.path.startswith(
        f"exports/model-{model.id}/int8-float32/"
    )
    assert float_edges.details["converter"]["representative_images"] == 60
    assert float_edges.top1_agreement >= 0.75  # a sanity check on 8 photos
    classifier = open_export(settings.data_dir / float_edges.bundle_path)
    assert classifier.input_dtype == "float32" and classifier.input_quantization == (0.0, 0)
    leftovers = [p for p in (settings.data_dir / "exports").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_requests_that_cannot_run_are_refused(exported: Exported) -> None:
    from workers.tasks.base import JobContext, JobRefused
    from workers.tasks.export import export_body

    settings, model = exported.settings, exported.model
    with Session(get_engine(settings.db_url), expire_on_commit=False) as session:
        with pytest.raises(ExportError, match="there is no trained model 999"):
            run_export(session, settings, {"trained_model_id": 999}, job_id=None)
        ghost = TrainedModel(**{**model.model_dump(exclude={"id"}), "path": "models/gone.keras"})
        session.add(ghost)
        version = datasets.freeze(
            session, DatasetPolicy(name="no-test", min_images=5, test_fraction=0), user_id=None
        )
        untested = TrainedModel(**{**model.model_dump(exclude={"id"}),
                                   "dataset_version_id": version.id})  # fmt: skip
        session.add(untested)
        session.commit()
        ghost_id, untested_id = ghost.id, untested.id
        with pytest.raises(ExportError, match=r"the file of trained model \d+ is missing"):
            run_export(session, settings, {"trained_model_id": ghost_id}, job_id=None)
    with session_scope(settings.db_url) as session:
        job = jobs.create_job(session, "export", params={"trained_model_id": untested_id})
        job_id, clean = job.id, dict(job.params)
    assert job_id is not None
    with pytest.raises(JobRefused, match="has no test split"):
        export_body(JobContext(settings, job_id, clean))
    for bad, message in (
        ({"trained_model_id": 1, "kinds": ["int4"]}, "kinds"),
        ({"trained_model_id": 1, "kinds": []}, "kinds"),
        ({"trained_model_id": 1, "int8_io": "int16"}, "int8_io"),
        ({}, "trained_model_id"),
    ):
        with pytest.raises(jobs.JobError, match=message):
            jobs.validate_params("export", None, bad)
    with pytest.raises(jobs.JobError, match="runs on queue gpu"):
        jobs.validate_params("export", "io", {"trained_model_id": 1})
    assert ExportParams(trained_model_id=1, kinds=["int8", "float32", "int8"]).kinds == [
        "float32", "int8",
    ]  # fmt: skip


def test_a_mixed_precision_model_exports_in_float32(tmp_path: Path) -> None:
    """A model saved under mixed_float16 is loaded computing in float32 (no float16 casts)."""
    import keras

    from workers.ml import backbones, tflite

    try:
        keras.mixed_precision.set_global_policy("mixed_float16")
        model = backbones.build_model(
            "MobileNetV3Small", 3, 32, None, 0.1, {"flip": True, "contrast": 0.1},
            weights_dir=tmp_path,
        )  # fmt: skip
        model.save(tmp_path / "mixed.keras")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    loaded, was_mixed = tflite.load_keras(tmp_path / "mixed.keras")
    assert was_mixed
    policies = {layer.dtype_policy.name for layer in loaded.layers}
    policies |= {layer.dtype_policy.name for layer in backbones.get_backbone(loaded).layers}
    assert policies == {"float32"}
    for mine, theirs in zip(loaded.weights, model.weights, strict=True):
        assert np.array_equal(np.asarray(mine), np.asarray(theirs))
    inference, removed = tflite.inference_model(loaded)
    assert [name.startswith(("random_flip", "random_contrast")) for name in removed] == [True] * 2
    saved = tmp_path / "saved"
    tflite.write_saved_model(inference, saved, 32)
    content, _ = tflite.convert(saved, "float32")
    assert "CAST" not in tflite.model_ops(content) and tflite.random_ops(content) == []
