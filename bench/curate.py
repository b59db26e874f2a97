"""Curation speed: feature extraction + per-species clustering on the demo dataset, on CPU.

Draws N demo photos (8 species, 128 px, planted anomalies), then times the fallback colour/texture
extractor (`workers/ml/features.py`: decode, EXIF-upright, 64 x 64, vectorised numpy over
batches) and the per-species clustering (`workers/ml/dbscan.py`: standardise, k-distance curve,
knee, DBSCAN). The peer, measured in the same run on a sample of the same photos, is a naive
per-pixel Python version of the same descriptor (colorsys HSV, loops over pixels), which is what a
first script would do. Also reports recall and precision of the flags against the manifest.
Prints one JSON line.

    .venv/bin/python bench/curate.py [--images 5000] [--naive-sample 60]
"""

from __future__ import annotations

import argparse
import colorsys
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.services.demo_data import DEMO_SPECIES, generate_demo_dataset  # noqa: E402
from workers.ml import dbscan  # noqa: E402
from workers.ml.features import ColourTextureExtractor, load_rgb  # noqa: E402


def naive_describe(path: Path, size: int = 64) -> list[float]:
    """The colour histogram, 4x4 layout and gradient-orientation part, one pixel at a time."""
    pixels = load_rgb(path, size).tolist()
    hist = [0.0] * 72
    layout = [0.0] * 48
    cell = size // 4
    grey = [[0.0] * size for _ in range(size)]
    for y in range(size):
        for x in range(size):
            r, g, b = (c / 255 for c in pixels[y][x])
            h, s, v = colorsys.rgb_to_hsv(r, g, b)
            hist[(min(int(h * 8), 7) * 3 + min(int(s * 3), 2)) * 3 + min(int(v * 3), 2)] += 1
            k = ((y // cell) * 4 + x // cell) * 3
            layout[k] += r
            layout[k + 1] += g
            layout[k + 2] += b
            grey[y][x] = (r + g + b) / 3
    orientation = [0.0] * 9
    for y in range(1, size - 1):
        for x in range(1, size - 1):
            gx = (grey[y][x + 1] - grey[y][x - 1]) / 2
            gy = (grey[y + 1][x] - grey[y - 1][x]) / 2
            angle = math.atan2(gy, gx) % math.pi
            orientation[min(int(angle / math.pi * 9), 8)] += math.hypot(gx, gy)
    total = sum(orientation) or 1.0
    return (
        [math.sqrt(c / size / size) for c in hist]
        + [v / cell / cell for v in layout]
        + [math.sqrt(o / total) for o in orientation]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="demo photos to draw")
    parser.add_argument("--naive-sample", type=int, default=60, help="photos for the peer")
    parser.add_argument("--min-samples", type=int, default=5)
    args = parser.parse_args()
    species = len(DEMO_SPECIES)
    per_species = max(args.images // species, 8)

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        manifest = generate_demo_dataset(
            Path(tmp, "demo"), per_species=per_species, image_size=128, seed=0
        )
        draw_s = time.perf_counter() - started
        paths = [manifest.path_of(i) for i in manifest.images]
        n = len(paths)

        extractor = ColourTextureExtractor()
        started = time.perf_counter()
        features = extractor.extract(paths)
        extract_s = time.perf_counter() - started

        names = np.array([i.species for i in manifest.images])
        planted = np.array([bool(i.anomaly) for i in manifest.images])
        flagged = np.zeros(n, dtype=bool)
        cluster_s = 0.0
        dbscan.cluster(features[:50], min_samples=args.min_samples)  # warm-up: imports, threads
        for name in sorted(set(names)):
            rows = np.flatnonzero(names == name)
            started = time.perf_counter()
            result = dbscan.cluster(features[rows], min_samples=args.min_samples)
            cluster_s += time.perf_counter() - started
            flagged[rows] = result.flagged

        sample = paths[: args.naive_sample]
        started = time.perf_counter()
        extractor.extract(sample)
        ours_sample_s = time.perf_counter() - started
        started = time.perf_counter()
        for path in sample:
            naive_describe(path)
        naive_s = time.perf_counter() - started

    hits = int((flagged & planted).sum())
    ours_rate = len(sample) / ours_sample_s
    naive_rate = len(sample) / naive_s
    print(json.dumps({
        "bench": "curate", "images": n, "species": species, "image_px": 128,
        "extractor": extractor.key, "feature_dims": extractor.dims,
        "draw_s": round(draw_s, 1),
        "features_images_per_s": round(n / extract_s, 1),
        "features_plus_clustering_images_per_s": round(n / (extract_s + cluster_s), 1),
        "clustering_s_per_1000_images": round(cluster_s / n * 1000, 3),
        "recall": round(hits / max(int(planted.sum()), 1), 3),
        "precision": round(hits / max(int(flagged.sum()), 1), 3),
        "peer_naive_python_images_per_s": round(naive_rate, 1),
        "peer_sample_images": len(sample),
        "ratio_ours_over_naive_features": round(ours_rate / naive_rate, 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
