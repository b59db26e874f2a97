"""Training input speed: our tf.data pipeline against in-memory tensors and Keras' own loader.

Writes N synthetic JPEG photos (400 x 300 and 300 x 400, noisy, some with an EXIF orientation)
in class folders, then trains MobileNetV3Small from scratch (`workers.ml.backbones.build_model`,
compiled as training compiles it) on CPU fed three ways, same architecture, batch size and
number of timed steps:

- ours: `workers.ml.data.make_dataset` as training uses it (EXIF orientation read, decode,
  upright, centre crop, resize, cache, seeded shuffle, float32 + one-hot); its first epoch fills
  the cache and is not timed, the epochs after it are;
- ceiling: the same pixels pre-decoded into memory, `from_tensor_slices` + batch + prefetch
  (what the model alone can eat);
- peer: `keras.utils.image_dataset_from_directory` over the same folder, as a user would write
  it (no cache, `.prefetch`), decoding every epoch.

Training is timed in interleaved rounds of one epoch (each round: every feed once, in a
rotating order) and the best round of each feed is kept, which damps other load on the machine
(the load average is reported too). Each feed is also timed alone, without the model
(`*_feed_only_images_per_s`: how fast it can hand out batches after its first epoch). Prints
one JSON line; `ratio_to_ceiling` = ours / ceiling (goal >= 0.9), `ratio_to_peer` = ours / peer.

    .venv/bin/python bench/input_pipeline.py [--images 512] [--size 96] [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def write_photos(folder: Path, images: int, classes: int, seed: int) -> tuple[list[str], list[int]]:
    """Noisy 400 x 300 JPEGs in class folders: a class-coloured gradient, blobs, sensor noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths: list[str] = []
    labels: list[int] = []
    for i in range(images):
        label = i % classes
        portrait = i % 3 == 0
        height, width = (400, 300) if portrait else (300, 400)
        base = np.array([(label * 97) % 256, (label * 57 + 80) % 256, (label * 151 + 40) % 256])
        ramp = np.linspace(0.6, 1.2, width)[None, :, None]
        pixels = np.broadcast_to(base * ramp, (height, width, 3)).copy()
        for _ in range(6):
            y, x = rng.integers(0, height - 40), rng.integers(0, width - 40)
            h, w = rng.integers(20, 120), rng.integers(20, 120)
            pixels[y : y + h, x : x + w] = rng.integers(0, 256, 3)
        pixels += rng.normal(0, 12, pixels.shape)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        exif = Image.Exif()
        if i % 4 == 1:
            exif[0x0112] = 6  # stored sideways, as phones do
        path = folder / f"class_{label}" / f"photo_{i:05d}.jpg"
        path.parent.mkdir(exist_ok=True)
        image.save(path, quality=90, exif=exif)
        paths.append(str(path))
        labels.append(label)
    return paths, labels


def compiled_model(classes: int, size: int, seed: int) -> Any:
    """MobileNetV3Small from scratch, compiled as `app.services.training` compiles it."""
    import keras

    from workers.ml.backbones import build_model

    keras.utils.set_random_seed(seed)
    augmentation = {"flip": True}
    model = build_model(
        "MobileNetV3Small", classes, size, None, 0.1, augmentation,
        weights_dir=Path(tempfile.gettempdir()), seed=seed,
    )  # fmt: skip
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-3),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
        metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.TopKCategoricalAccuracy(k=5, name="top5"),
        ],
    )
    return model


def timed_fit(model: Any, ds: Any, epochs: int) -> float:
    started = time.perf_counter()
    model.fit(ds, epochs=epochs, verbose=0, shuffle=False)
    return time.perf_counter() - started


def feed_only(ds: Any, epochs: int) -> tuple[float, float]:
    """Seconds of the first pass over `ds` and of the fastest of `epochs` passes after it, with
    nothing consuming the batches (the first decodes; ours fills its cache in it)."""
    started = time.perf_counter()
    for _ in ds:
        pass
    first = time.perf_counter() - started
    best = float("inf")
    for _ in range(epochs):
        started = time.perf_counter()
        for _ in ds:
            pass
        best = min(best, time.perf_counter() - started)
    return first, best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--images", type=int, default=512, help="synthetic photos to write")
    parser.add_argument("--classes", type=int, default=8, help="class folders")
    parser.add_argument("--size", type=int, default=96, help="model input size (px)")
    parser.add_argument("--batch", type=int, default=32, help="batch size")
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved one-epoch rounds; the best is kept"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from workers.ml.data import make_dataset, read_orientation

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        paths, labels = write_photos(folder, args.images, args.classes, args.seed)
        write_s = time.perf_counter() - started
        n = len(paths)
        steps_per_epoch = -(-n // args.batch)

        started = time.perf_counter()
        orientations = [read_orientation(p) for p in paths]  # what make_dataset does by default
        orientation_s = time.perf_counter() - started
        started = time.perf_counter()
        ours = make_dataset(
            paths, labels, num_classes=args.classes, image_size=args.size,
            batch_size=args.batch, training=True, seed=args.seed, orientations=orientations,
        )  # fmt: skip
        build_s = time.perf_counter() - started

        # The ceiling gets exactly our pixels, decoded before the clock starts.
        plain = make_dataset(
            paths, labels, num_classes=args.classes, image_size=args.size, batch_size=n,
            training=False, cache=False,
        )  # fmt: skip
        pixels, onehot = next(iter(plain))
        ceiling = (
            tf.data.Dataset.from_tensor_slices((pixels, onehot))
            .batch(args.batch)
            .prefetch(tf.data.AUTOTUNE)
        )
        peer = keras.utils.image_dataset_from_directory(
            folder, label_mode="categorical", image_size=(args.size, args.size),
            batch_size=args.batch, seed=args.seed, verbose=False,
        ).prefetch(tf.data.AUTOTUNE)  # fmt: skip

        feeds = {"ours": ours, "ceiling": ceiling, "peer": peer}
        load_before = os.getloadavg()[0]
        alone = {name: feed_only(ds, 3) for name, ds in feeds.items()}
        models = {name: compiled_model(args.classes, args.size, args.seed) for name in feeds}
        for name, ds in feeds.items():
            timed_fit(models[name], ds, 1)  # warm-up: tracing (ours' cache is full already)
        best = dict.fromkeys(feeds, float("inf"))
        order = list(feeds)
        for r in range(args.rounds):
            for name in order[r % 3 :] + order[: r % 3]:
                best[name] = min(best[name], timed_fit(models[name], feeds[name], 1))
        load_after = os.getloadavg()[0]

    rate = {name: n / s for name, s in best.items()}
    print(json.dumps({
        "bench": "input_pipeline", "images": n, "classes": args.classes,
        "photo_px": "400x300", "image_size": args.size, "batch": args.batch,
        "model": "MobileNetV3Small (weights=None)", "steps_per_epoch": steps_per_epoch,
        "rounds": args.rounds, "tensorflow": tf.__version__, "cores": os.cpu_count(),
        "load_average": [round(load_before, 1), round(load_after, 1)],
        "write_s": round(write_s, 1),
        "orientation_read_ms_per_1000_images": round(orientation_s / n * 1e6, 1),
        "ours_build_s": round(build_s, 2),
        "ours_images_per_s": round(rate["ours"], 1),
        "ceiling_images_per_s": round(rate["ceiling"], 1),
        "peer_images_per_s": round(rate["peer"], 1),
        "ratio_to_ceiling": round(rate["ours"] / rate["ceiling"], 3),
        "ratio_to_peer": round(rate["ours"] / rate["peer"], 3),
        "ours_decode_epoch_images_per_s": round(n / alone["ours"][0], 1),
        "peer_decode_epoch_images_per_s": round(n / alone["peer"][0], 1),
        "ours_feed_only_images_per_s": round(n / alone["ours"][1], 1),
        "ceiling_feed_only_images_per_s": round(n / alone["ceiling"][1], 1),
        "peer_feed_only_images_per_s": round(n / alone["peer"][1], 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
