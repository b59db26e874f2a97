"""TFLite conversion and its check against the Keras model (TensorFlow imported lazily).

Conversion: the `.keras` classifier is rebuilt for inference without its training-only layers
(the `Random*` augmentation layers and noise layers, which are identities at inference but
would still be carried in the graph), written as a SavedModel with one `serve` endpoint taking
a batch of one float32 RGB image in [0, 255] (the model's own preprocessing stays inside), and
converted with `tf.lite.TFLiteConverter.from_saved_model` to builtin ops only (no Flex ops):

- float32: no optimisation;
- float16: weights stored as float16 (`Optimize.DEFAULT` + `supported_types=[float16]`);
- dynamic: weights int8, activations float at run time (`Optimize.DEFAULT`);
- int8: weights and activations int8 (`TFLITE_BUILTINS_INT8`), calibrated on a representative
  set of training photos, with uint8 (quantised) or float32 input and output as asked.

Evaluation: the test photos go through the training pipeline's decoder once; each batch is
scored by the Keras model and, image by image, by every export through the LiteRT interpreter
(`app.services.predict.TfliteClassifier`, the same code the web and the CLI use). Latency is
timed afterwards on a bounded sample of the same photos, one image at a time, one CPU thread for
the interpreter (quantising the input and dequantising the output included); the Keras model is
timed on the same photos in the same loop (a traced `tf.function` on the CPU) for comparison.
"""

from __future__ import annotations

import itertools
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.services.predict import TfliteClassifier

# Layers that only act in training; the inference graph is rebuilt without them.
TRAINING_ONLY_LAYERS = frozenset(
    {"AugMix", "CutMix", "MixUp", "RandAugment", "Solarization", "GaussianNoise",
     "GaussianDropout", "AlphaDropout"}
)  # fmt: skip
# Op names that would betray randomness left in a converted graph.
RANDOM_OPS = ("RANDOM", "MULTINOMIAL")
WARMUP_RUNS = 3


def is_training_only(layer: Any) -> bool:
    name = type(layer).__name__
    return name.startswith("Random") or name in TRAINING_ONLY_LAYERS


def inference_model(model: Any) -> tuple[Any, list[str]]:
    """The model without its training-only layers (same weights, shared); and their names."""
    import keras

    removed: list[str] = [layer.name for layer in model.layers if is_training_only(layer)]
    if not removed:
        return model, []

    names = (f"inference_identity_{i}" for i in itertools.count())

    def clone(layer: Any) -> Any:
        # Shared, not copied: the rebuilt model runs on the trained weights themselves.
        return keras.layers.Identity(name=next(names)) if is_training_only(layer) else layer

    rebuilt = keras.models.clone_model(model, clone_function=clone)
    left = [layer.name for layer in rebuilt.layers if is_training_only(layer)]
    if left:  # pragma: no cover - clone_model visits every top-level layer
        raise RuntimeError(f"augmentation layers survived the rebuild: {left}")
    return rebuilt, removed


def write_saved_model(model: Any, folder: Path, image_size: int) -> None:
    """A SavedModel with one `serve` endpoint: (1, size, size, 3) float32 → probabilities."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda pixels: model(pixels, training=False),
        input_signature=[tf.TensorSpec([1, image_size, image_size, 3], tf.float32, name="pixels")],
    )
    archive.write_out(str(folder), verbose=False)


def convert(
    saved_model: Path,
    kind: str,
    *,
    representative: Callable[[], Any] | None = None,
    int8_io: str = "uint8",
) -> tuple[bytes, dict[str, Any]]:
    """One TFLite flatbuffer of the given kind, and the converter settings used."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    settings: dict[str, Any] = {"supported_ops": ["TFLITE_BUILTINS"], "optimizations": []}
    if kind != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        settings["optimizations"] = ["DEFAULT"]
    if kind == "float16":
        converter.target_spec.supported_types = [tf.float16]
        settings["supported_types"] = ["float16"]
    elif kind == "int8":
        if representative is None:
            raise ValueError("an int8 export needs a representative dataset")
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        settings["supported_ops"] = ["TFLITE_BUILTINS_INT8"]
        io_type = tf.uint8 if int8_io == "uint8" else tf.float32
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type
        settings["inference_input_type"] = settings["inference_output_type"] = int8_io
    elif kind != "dynamic" and kind != "float32":
        raise ValueError(f"unknown export kind {kind!r}")
    settings["tensorflow"] = tf.__version__
    return bytes(converter.convert()), settings


def model_ops(content: bytes) -> list[str]:
    """The distinct operators in a TFLite flatbuffer (custom and Flex ops by their name)."""
    from ai_edge_litert import schema_py_generated as schema

    names = {value: name for name, value in vars(schema.BuiltinOperator).items() if name.isupper()}
    model = schema.Model.GetRootAs(content, 0)
    ops = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            ops.add(f"CUSTOM:{(code.CustomCode() or b'').decode()}")
        else:
            ops.add(names.get(builtin, str(builtin)))
    return sorted(ops)


def tensor_names(content: bytes) -> list[str]:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(content, 0)
    names = []
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        names += [(graph.Tensors(t).Name() or b"").decode() for t in range(graph.TensorsLength())]
    return names


def random_ops(content: bytes) -> list[str]:
    return [op for op in model_ops(content) if any(r in op.upper() for r in RANDOM_OPS)]


# --- evaluation -----------------------------------------------------------------------------


@dataclass
class Scores:
    """What one model (an export, or the Keras model itself) did on the evaluated photos."""

    predicted: list[int] = field(default_factory=list)
    top5_hits: list[bool] = field(default_factory=list)
    abs_diff: list[float] = field(default_factory=list)  # vs the Keras probabilities
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, probs: np.ndarray, truth: int, reference: np.ndarray | None, k: int) -> None:
        self.predicted.append(int(np.argmax(probs)))
        self.top5_hits.append(bool(truth in np.argsort(-probs, kind="stable")[:k]))
        if reference is not None:
            self.abs_diff.append(float(np.abs(probs - reference).max()))


def latency_summary(latencies_ms: Sequence[float]) -> tuple[float | None, float | None]:
    if not latencies_ms:
        return None, None
    values = np.asarray(latencies_ms)
    return float(values.mean()), float(np.percentile(values, 95))


def sample(items: Sequence[Any], count: int | None, seed: int = 0) -> list[int]:
    """Indices of a seeded random sample (in their original order); all when count is None."""
    n = len(items)
    if count is None or count >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), count))


def representative_dataset(
    paths: Sequence[str], image_size: int, num_classes: int
) -> Callable[[], Any]:
    """A generator factory for the int8 calibration: one (1, size, size, 3) float32 per photo."""
    from workers.ml.data import make_dataset

    def generate() -> Any:
        ds = make_dataset(
            list(paths), [0] * len(paths), num_classes=num_classes, image_size=image_size,
            batch_size=1, training=False, cache=False,
        )  # fmt: skip
        for pixels, _ in ds:
            yield [pixels.numpy()]

    return generate


def evaluate(
    keras_model: Any,
    exports: dict[str, TfliteClassifier],
    paths: Sequence[str],
    labels: Sequence[int],
    *,
    image_size: int,
    num_classes: int,
    batch_size: int = 32,
    latency_images: int = 50,
    progress: Callable[[float, str], None] | None = None,
) -> tuple[dict[str, Scores], Scores, int]:
    """Score the Keras model and every export on the photos; (per-export, Keras, timed images).

    `progress(fraction, text)` is called after every batch and every ten photos timed.
    """
    import tensorflow as tf

    from workers.ml.data import make_dataset

    k = min(5, num_classes)
    ds = make_dataset(
        list(paths), list(labels), num_classes=num_classes, image_size=image_size,
        batch_size=batch_size, training=False, cache=False,
    )  # fmt: skip
    scores = {key: Scores() for key in exports}
    keras_scores = Scores()
    timed: list[np.ndarray] = []
    done = 0
    for pixels, onehot in ds:
        batch = pixels.numpy()
        truths = onehot.numpy().argmax(axis=1)
        reference = np.asarray(keras_model.predict_on_batch(batch), dtype=np.float32)
        for image, truth, ref in zip(batch, truths, reference, strict=True):
            keras_scores.add(ref, int(truth), None, k)
            for key, classifier in exports.items():
                scores[key].add(classifier.probabilities(image), int(truth), ref, k)
            if len(timed) < latency_images:
                timed.append(image)
        done += len(batch)
        if progress is not None:
            progress(0.8 * done / max(len(paths), 1), f"evaluated {done}/{len(paths)} photos")

    # Timed round-robin, image by image, so that a burst of load elsewhere on the machine falls
    # on every model alike rather than on whichever happened to be timed at that moment.
    with tf.device("/CPU:0"):
        serve = tf.function(lambda x: keras_model(x, training=False))
        for image in timed[:WARMUP_RUNS]:
            serve(tf.constant(image[None])).numpy()
            for classifier in exports.values():
                classifier.probabilities(image)
        for index, image in enumerate(timed):
            for key, classifier in exports.items():
                started = time.perf_counter()
                classifier.probabilities(image)
                scores[key].latencies_ms.append((time.perf_counter() - started) * 1000)
            tensor = tf.constant(image[None])
            started = time.perf_counter()
            serve(tensor).numpy()
            keras_scores.latencies_ms.append((time.perf_counter() - started) * 1000)
            if progress is not None and index % 10 == 9:
                progress(0.8 + 0.2 * (index + 1) / len(timed), f"timed {index + 1} photos")
    if progress is not None:
        progress(1.0, "timed")
    return scores, keras_scores, len(timed)


def keras_threads() -> int:
    """TensorFlow's intra-op threads for the Keras timing (0: as many as there are cores)."""
    import tensorflow as tf

    return int(tf.config.threading.get_intra_op_parallelism_threads())


def setup_devices() -> None:
    """GPU memory growth, as training does, so an export never grabs a whole GPU."""
    import contextlib

    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)


def float32_config(config: Any) -> tuple[Any, bool]:
    """A saved model's config with every mixed-precision policy made float32; and if any was.

    A model trained in mixed precision keeps float32 weights but computes in float16; exported
    as it is, its graph would be full of casts and float16 maths (which full-integer
    quantisation cannot calibrate). Loaded from this config it computes in float32 throughout.
    """
    changed = False

    def walk(node: Any) -> Any:
        nonlocal changed
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {key: walk(value) for key, value in node.items()}
        inner = out.get("config")
        if isinstance(inner, dict):
            mixed = str(inner.get("name", "")).startswith("mixed_")
            if out.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and mixed:
                out["config"] = {**inner, "name": "float32"}
                changed = True
            half = inner.get("dtype") in ("float16", "bfloat16")
            if out.get("class_name") == "__keras_tensor__" and half:
                out["config"] = {**inner, "dtype": "float32"}
                changed = True
        if out.get("dtype") in ("mixed_float16", "mixed_bfloat16"):
            out["dtype"] = "float32"
            changed = True
        return out

    return walk(config), changed


def load_keras(path: Path) -> tuple[Any, bool]:
    """The `.keras` model, computing in float32; and whether it was saved in mixed precision."""
    import json
    import zipfile

    import keras

    keras.mixed_precision.set_global_policy("float32")
    with zipfile.ZipFile(path) as archive:
        config, changed = float32_config(json.loads(archive.read("config.json")))
        if not changed:
            return keras.models.load_model(path, compile=False), False
        with tempfile.TemporaryDirectory(prefix="sporeprint-float32-") as tmp:
            copy = Path(tmp, "model.keras")
            with zipfile.ZipFile(copy, "w") as out:
                for item in archive.infolist():
                    data = json.dumps(config) if item.filename == "config.json" else None
                    out.writestr(item, data if data is not None else archive.read(item))
            return keras.models.load_model(copy, compile=False), True


def convert_all(
    model: Any,
    kinds: Sequence[tuple[str, str]],
    *,
    image_size: int,
    representative: Callable[[], Any] | None,
    int8_io: str,
    progress: Callable[[float, str], None] | None = None,
) -> tuple[dict[str, tuple[bytes, dict[str, Any]]], list[str]]:
    """Convert the model once per (key, kind); returns {key: (flatbuffer, settings)}, removed."""
    inference, removed = inference_model(model)
    out: dict[str, tuple[bytes, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="sporeprint-export-") as tmp:
        saved = Path(tmp, "saved_model")
        write_saved_model(inference, saved, image_size)
        for step, (key, kind) in enumerate(kinds):
            if progress is not None:
                progress(step / len(kinds), f"converting {key}")
            started = time.monotonic()
            content, settings = convert(
                saved, kind, representative=representative if kind == "int8" else None,
                int8_io=int8_io,
            )  # fmt: skip
            settings["convert_seconds"] = round(time.monotonic() - started, 2)
            out[key] = (content, settings)
    if progress is not None:
        progress(1.0, "converted")
    return out, removed
