"""TFLite exports of a small demo model: size, agreement with Keras and latency, per kind.

Trains a small classifier from scratch on the synthetic demo photos (MobileNetV3Small, N species,
single-machine SQLite world in a temporary folder), then runs the export job's code
(`app/services/exports.py`: float32, float16, dynamic range, int8 with uint8 edges) in a fresh
process where TensorFlow is pinned to one CPU thread, so that the peer, the Keras model itself
timed on the same test photos one at a time, runs under the same one-thread rule as the LiteRT
interpreter. Prints one JSON line: per kind, the file size (and its ratio to float32), top-1
agreement with the Keras model, top-1/top-5 accuracy, mean and p95 single-image latency; and the
Keras model's accuracy and latency.

    .venv/bin/python bench/tflite.py [--species 6] [--per-species 50] [--image-size 96]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def train(root: Path, args: argparse.Namespace) -> tuple[Path, int, dict[str, Any]]:
    """A demo world in `root` and one model trained in it; (data dir, model id, figures)."""
    from sqlmodel import Session

    from app.config import Settings
    from app.db import get_engine, session_scope
    from app.services import datasets, jobs, migrations
    from app.services.datasets import DatasetPolicy
    from app.services.demo_data import generate_demo_dataset
    from app.services.imports import import_folder
    from app.services.training import run_training

    settings = Settings(_env_file=None, data_dir=root / "data")
    settings.data_dir.mkdir(parents=True)
    generate_demo_dataset(
        root / "demo", per_species=args.per_species, species_count=args.species,
        image_size=max(args.image_size, 64), anomaly_fraction=0, seed=args.seed,
    )  # fmt: skip
    migrations.upgrade(settings.db_url)
    with Session(get_engine(settings.db_url), expire_on_commit=False) as session:
        import_folder(session, root / "demo", settings.data_dir)
        session.commit()
        policy = DatasetPolicy(name="bench", min_images=5, test_fraction=args.test_fraction)
        version = datasets.freeze(session, policy, user_id=None)
    params = {
        "dataset_version_id": version.id, "backbone": "MobileNetV3Small", "weights": None,
        "image_size": args.image_size, "batch_size": 16, "dropout": 0.1,
        "augmentation": {"flip": True, "rotation": 0.02, "translation": 0, "zoom": 0.05,
                         "contrast": 0, "brightness": 0},
        "phases": [{"epochs": args.epochs, "unfreeze": "all", "learning_rate": 3e-3}],
        "early_stopping_patience": 100, "mixed_precision": "off", "seed": args.seed,
    }  # fmt: skip
    with session_scope(settings.db_url) as session:
        job_id = jobs.create_job(session, "train", params=params).id
    assert job_id is not None
    started = time.perf_counter()
    with Session(get_engine(settings.db_url), expire_on_commit=False) as session:
        report = run_training(session, settings, params, job_id=job_id)
    figures = {
        "train_s": round(time.perf_counter() - started, 1),
        "train_images": report.metrics.get("train_images"),
        "test_images": report.metrics.get("test_images"),
        "keras_test_top1_at_training": report.metrics.get("top1"),
    }
    return settings.data_dir, report.trained_model_id, figures


def measure(data_dir: Path, model_id: int, keras_threads: int, latency_images: int) -> None:
    """Export and measure in this process (TensorFlow pinned first); prints the rows as JSON."""
    import tensorflow as tf

    if keras_threads:
        tf.config.threading.set_intra_op_parallelism_threads(keras_threads)
        tf.config.threading.set_inter_op_parallelism_threads(keras_threads)
    from sqlmodel import Session

    from app.config import Settings
    from app.db import get_engine
    from app.services.exports import run_export

    settings = Settings(_env_file=None, data_dir=data_dir)
    started = time.perf_counter()
    with Session(get_engine(settings.db_url), expire_on_commit=False) as session:
        rows = run_export(
            session, settings, {"trained_model_id": model_id, "latency_images": latency_images},
            job_id=None,
        )  # fmt: skip
    export_s = time.perf_counter() - started
    float32 = next(r for r in rows if r.quantization == "float32")
    out: dict[str, Any] = {"export_s": round(export_s, 1), "kinds": {}}
    for row in rows:
        out["kinds"][row.details["key"]] = {
            "size_bytes": row.size_bytes,
            "size_vs_float32": round((row.size_bytes or 0) / (float32.size_bytes or 1), 3),
            "top1_agreement": round(row.top1_agreement or 0, 4),
            "top1_accuracy": round(row.accuracy or 0, 4),
            "top5_accuracy": round(row.top5_accuracy or 0, 4),
            "latency_ms": round(row.latency_ms or 0, 3),
            "latency_p95_ms": round(row.latency_p95_ms or 0, 3),
            "disagreements": row.details["disagreements"],
            "convert_s": row.details["converter"]["convert_seconds"],
        }
    keras = float32.details["keras"]
    out["keras"] = {
        "size_bytes": keras["size_bytes"],
        "top1_accuracy": round(keras["accuracy"], 4),
        "top5_accuracy": round(keras["top5_accuracy"], 4),
        "latency_ms": round(keras["latency_ms"], 3),
        "latency_p95_ms": round(keras["latency_p95_ms"], 3),
        "threads": keras["latency_threads"],
    }
    out["evaluated_images"] = float32.test_images
    out["timed_images"] = float32.details["latency_images"]
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--species", type=int, default=6, help="demo species (classes)")
    parser.add_argument("--per-species", type=int, default=50, help="demo photos per species")
    parser.add_argument("--image-size", type=int, default=96, help="model input side, pixels")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs (from scratch)")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="share of test photos")
    parser.add_argument("--seed", type=int, default=0, help="photos, split and training seed")
    parser.add_argument(
        "--latency-images", type=int, default=200, help="test photos timed per model (at most)"
    )
    parser.add_argument(
        "--keras-threads", type=int, default=1,
        help="TensorFlow CPU threads for the Keras timing (0: all cores)",
    )  # fmt: skip
    parser.add_argument("--measure", nargs=2, metavar=("DATA_DIR", "MODEL_ID"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.measure:
        measure(Path(args.measure[0]), int(args.measure[1]), args.keras_threads,
                args.latency_images)  # fmt: skip
        return

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="bench-tflite-") as tmp:
        data_dir, model_id, figures = train(Path(tmp), args)
        child = subprocess.run(
            [sys.executable, __file__, "--measure", str(data_dir), str(model_id),
             "--keras-threads", str(args.keras_threads),
             "--latency-images", str(args.latency_images)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if child.returncode != 0:
            sys.stderr.write(child.stderr)
            raise SystemExit(f"the measuring process failed ({child.returncode})")
        measured = json.loads(child.stdout.strip().splitlines()[-1])
    print(json.dumps({
        "bench": "tflite", "backbone": "MobileNetV3Small", "image_px": args.image_size,
        "species": args.species, "per_species": args.per_species, "cpus": os.cpu_count(),
        "tflite_threads": 1, **figures, **measured,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
