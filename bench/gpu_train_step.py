"""A real training step of a big backbone on the GPU: images/s and peak memory, mixed vs float32.

Builds the classifier training builds (`workers.ml.backbones.build_model`: augmentation layers,
preprocessing, backbone, pooling, dropout, float32 softmax) around MobileNetV3Large at 224 px
(weights=None: the speed and memory of a step do not depend on the weights, and nothing is
downloaded), compiles it as training does, and times `fit` on in-memory batches, so the figure
is the model's and the GPU's, not the input pipeline's (`bench/input_pipeline.py` measures that).

Run twice in one process: with the `mixed_float16` policy (what a train job uses on a GPU) and
with `float32` (the peer). While each runs, a thread reads the GPUs every 0.5 s through the
same code the workers use (`workers.gpu.snapshot`: NVML, else nvidia-smi) and the peak memory
in use is reported beside TensorFlow's own peak (`get_memory_info`). Memory growth is on, as in
a train job. Prints one JSON line; `mixed_speedup` = mixed images/s / float32 images/s.

On a machine without a GPU it still runs (on the CPU, with tiny defaults worth nothing as
figures) and says so, so the script is checked everywhere and trusted on the GPU machine:

    .venv/bin/python bench/gpu_train_step.py                        # GPU: 224 px, batch 64
    .venv/bin/python bench/gpu_train_step.py --size 64 --steps 3    # a quick check on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class MemoryWatch:
    """Peak GPU memory in use (MiB, summed over the GPUs) while the block runs."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.peak_mb: float | None = None
        self.samples = 0
        self.provider = "none"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from workers import gpu

        while not self._stop.is_set():
            snap = gpu.snapshot("auto")
            self.provider = snap.provider
            used = [d.memory_used_mb for d in snap.devices if d.memory_used_mb is not None]
            if used:
                self.samples += 1
                self.peak_mb = max(self.peak_mb or 0.0, sum(used))
            self._stop.wait(self.interval)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def run(policy: str, args: argparse.Namespace, on_gpu: bool) -> dict[str, Any]:
    import keras
    import numpy as np
    import tensorflow as tf

    from workers.ml.backbones import build_model

    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    model = build_model(
        args.backbone, args.classes, args.size, None, 0.2, {"flip": True},
        weights_dir=ROOT / "data" / "weights",
    )  # fmt: skip
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    rng = np.random.default_rng(0)
    n = args.batch * 4  # four distinct batches, repeated
    x = rng.integers(0, 256, (n, args.size, args.size, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, args.classes, n), args.classes)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch).repeat()
    data = data.prefetch(tf.data.AUTOTUNE)
    # shuffle=False: the batches are synthetic; Keras would warn that it cannot shuffle them.
    fit = {"epochs": 1, "verbose": 0, "shuffle": False}
    model.fit(data, steps_per_epoch=args.warmup, **fit)  # graph build, autotune
    if on_gpu:
        tf.config.experimental.reset_memory_stats("GPU:0")
    with MemoryWatch() as watch:
        started = time.perf_counter()
        model.fit(data, steps_per_epoch=args.steps, **fit)
        seconds = time.perf_counter() - started
    tf_peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20 if on_gpu else None
    keras.backend.clear_session()
    return {
        "images_per_s": round(args.steps * args.batch / seconds, 1),
        "step_ms": round(1000 * seconds / args.steps, 2),
        "peak_memory_mb_nvml": round(watch.peak_mb, 1) if watch.peak_mb is not None else None,
        "peak_memory_mb_tensorflow": round(tf_peak, 1) if tf_peak is not None else None,
        "memory_samples": watch.samples,
        "memory_provider": watch.provider,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="MobileNetV3Large", help="a keras.applications name")
    parser.add_argument("--size", type=int, default=224, help="input size in pixels")
    parser.add_argument("--batch", type=int, default=64, help="images per step")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per policy")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--classes", type=int, default=100, help="output classes")
    args = parser.parse_args()

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for device in gpus:
        tf.config.experimental.set_memory_growth(device, True)
    from workers import gpu

    names = [d.name for d in gpu.snapshot("auto").devices]
    device = names[0] if names else "GPU" if gpus else "CPU (no GPU: not GPU figures)"
    mixed = run("mixed_float16", args, bool(gpus))
    full = run("float32", args, bool(gpus))
    figures = {
        "bench": "gpu_train_step", "backbone": args.backbone, "size": args.size,
        "batch": args.batch, "steps": args.steps, "tensorflow": tf.__version__,
        "device": device, "gpus": len(gpus), "mixed": mixed, "float32": full,
        "mixed_speedup": round(mixed["images_per_s"] / full["images_per_s"], 3),
    }  # fmt: skip
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
