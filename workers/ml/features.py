"""Image features for curation: an ImageNet backbone where its weights can be had, else a
colour/texture descriptor that needs nothing but numpy.

An extractor has a `name` and a `version` (together its `key`, which is what the feature cache
and a curation run record) and turns a list of image files into a float32 matrix, one row per
file. Changing what an extractor computes means bumping its version, so stale cached vectors
are never mixed with new ones.

`ColourTextureExtractor` (the fallback, `colour-texture@1`) decodes each photo (EXIF-upright,
RGB) at a fixed 64 x 64 and describes it with, all computed on the whole batch at once:

- a joint HSV histogram, 8 hues x 3 saturations x 3 values (72 bins): what colours;
- a low-resolution layout: the mean RGB of each cell of a 4 x 4 grid (48 values): where they are;
- centre-versus-border contrast: mean and standard deviation of RGB in the middle quarter minus
  those of the outer ring (6 values): is there a subject in the middle;
- texture: a 9-bin gradient-orientation histogram weighted by magnitude, mean and standard
  deviation of the gradient magnitude, Laplacian energy, edge density, and the gradient energy
  of each cell of a 4 x 4 grid (9 + 4 + 16 = 29 values): fine detail and where it is.

Both histograms are stored as square roots of the bin shares (the Hellinger embedding), so that
after standardisation a rare colour that a normal photo shows a little of does not weigh as much
as a colour the photo is made of. 155 dimensions; a few milliseconds per photo, decoding
included, on one CPU core.

`KerasExtractor` (`keras-mobilenet_v2@1`) runs MobileNetV2 without its top, global-average
pooled (1,280 dimensions), on 224 x 224 inputs. It is only picked when TensorFlow imports and the
ImageNet weights file `mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5` is
in the weights directory (`SPOREPRINT_WEIGHTS_DIR`) or the Keras cache (`~/.keras/models`).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps

from app.config import Settings
from app.services.photos import MAX_PIXELS

Progress = Callable[[int, int], None]
ExtractorChoice = Literal["auto", "fallback", "keras"]


class FeatureExtractor(Protocol):
    name: str
    version: str

    @property
    def key(self) -> str: ...

    @property
    def dims(self) -> int: ...

    def extract(self, paths: Sequence[Path], progress: Progress | None = None) -> np.ndarray:
        """A float32 array of shape (len(paths), dims); raises ValueError for a bad file."""
        ...


class ExtractorUnavailable(ValueError):
    """The requested extractor cannot run here (no TensorFlow, no weights file)."""


def load_rgb(path: Path, size: int) -> np.ndarray:
    """Decode `path` upright (EXIF orientation applied) as a size x size uint8 RGB array."""
    try:
        with PILImage.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ValueError(f"{path.name}: too large ({image.width}x{image.height} pixels)")
            image.draft("RGB", (size, size))  # JPEG: decode at reduced scale, much faster
            upright = ImageOps.exif_transpose(image).convert("RGB")
            small = upright.resize((size, size), PILImage.Resampling.BILINEAR, reducing_gap=2.0)
            return np.asarray(small, dtype=np.uint8)
    except (OSError, PILImage.DecompressionBombError) as exc:
        raise ValueError(f"{path.name}: not a readable image ({exc})") from None


# --- the fallback: colour and texture ------------------------------------------------------


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """Vectorised RGB (float in [0, 1], any leading shape) to HSV, all channels in [0, 1]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(axis=-1)
    low = rgb.min(axis=-1)
    chroma = value - low
    safe = np.where(chroma > 0, chroma, 1.0)
    hue = np.where(
        value == r,
        ((g - b) / safe) % 6.0,
        np.where(value == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    hue = np.where(chroma > 0, hue / 6.0, 0.0)
    saturation = np.where(value > 0, chroma / np.where(value > 0, value, 1.0), 0.0)
    return np.stack([hue, saturation, value], axis=-1)


def _grid_means(values: np.ndarray, cells: int) -> np.ndarray:
    """Mean of (n, s, s, c) over a cells x cells grid → (n, cells*cells*c)."""
    n, s, _, c = values.shape
    step = s // cells
    trimmed = values[:, : step * cells, : step * cells]
    grid = trimmed.reshape(n, cells, step, cells, step, c).mean(axis=(2, 4))
    return grid.reshape(n, -1)


class ColourTextureExtractor:
    """Colour histogram + layout + texture statistics; see the module docstring."""

    name = "colour-texture"
    version = "1"
    size = 64
    hue_bins, sat_bins, val_bins = 8, 3, 3
    grid = 4
    orientation_bins = 9
    batch = 256

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def dims(self) -> int:
        colour = self.hue_bins * self.sat_bins * self.val_bins
        return colour + 3 * self.grid**2 + 6 + self.orientation_bins + 4 + self.grid**2

    def extract(self, paths: Sequence[Path], progress: Progress | None = None) -> np.ndarray:
        out = np.empty((len(paths), self.dims), dtype=np.float32)
        for start in range(0, len(paths), self.batch):
            chunk = paths[start : start + self.batch]
            pixels = np.stack([load_rgb(Path(p), self.size) for p in chunk])
            out[start : start + len(chunk)] = self.describe(pixels)
            if progress:
                progress(start + len(chunk), len(paths))
        return out

    def describe(self, pixels: np.ndarray) -> np.ndarray:
        """Features of a batch of (n, size, size, 3) uint8 images."""
        rgb = pixels.astype(np.float32) / 255.0
        n, s = rgb.shape[0], rgb.shape[1]
        parts = [self._colour_histogram(rgb), _grid_means(rgb, self.grid)]

        # Centre (middle quarter of the area) against the outer ring.
        q = s // 4
        centre = np.zeros((s, s), dtype=bool)
        centre[q : s - q, q : s - q] = True
        ring = np.zeros((s, s), dtype=bool)
        ring[: q // 2 or 1], ring[-(q // 2 or 1) :] = True, True
        ring[:, : q // 2 or 1], ring[:, -(q // 2 or 1) :] = True, True
        inner, outer = rgb[:, centre], rgb[:, ring]
        parts.append(inner.mean(axis=1) - outer.mean(axis=1))
        parts.append(inner.std(axis=1) - outer.std(axis=1))

        parts.append(self._texture(rgb.mean(axis=-1)))
        return np.concatenate(parts, axis=1).astype(np.float32).reshape(n, -1)

    def _colour_histogram(self, rgb: np.ndarray) -> np.ndarray:
        n = rgb.shape[0]
        hsv = rgb_to_hsv(rgb).reshape(n, -1, 3)
        h = np.minimum((hsv[..., 0] * self.hue_bins).astype(np.int64), self.hue_bins - 1)
        sat = np.minimum((hsv[..., 1] * self.sat_bins).astype(np.int64), self.sat_bins - 1)
        val = np.minimum((hsv[..., 2] * self.val_bins).astype(np.int64), self.val_bins - 1)
        bins = self.hue_bins * self.sat_bins * self.val_bins
        code = (h * self.sat_bins + sat) * self.val_bins + val
        offsets = (np.arange(n, dtype=np.int64) * bins)[:, None]
        counts = np.bincount((code + offsets).ravel(), minlength=n * bins).reshape(n, bins)
        return np.sqrt(counts / hsv.shape[1])

    def _texture(self, grey: np.ndarray) -> np.ndarray:
        n = grey.shape[0]
        gx = np.zeros_like(grey)
        gy = np.zeros_like(grey)
        gx[:, :, 1:-1] = (grey[:, :, 2:] - grey[:, :, :-2]) / 2
        gy[:, 1:-1, :] = (grey[:, 2:, :] - grey[:, :-2, :]) / 2
        magnitude = np.hypot(gx, gy)
        flat = magnitude.reshape(n, -1)
        # Unsigned orientation histogram, weighted by gradient magnitude, normalised per image.
        angle = np.mod(np.arctan2(gy, gx), np.pi).reshape(n, -1)
        which = np.minimum((angle / np.pi * self.orientation_bins).astype(np.int64), 8)
        offsets = (np.arange(n, dtype=np.int64) * self.orientation_bins)[:, None]
        hist = np.bincount(
            (which + offsets).ravel(), weights=flat.ravel(), minlength=n * self.orientation_bins
        ).reshape(n, self.orientation_bins)
        hist = np.sqrt(hist / np.maximum(hist.sum(axis=1, keepdims=True), 1e-9))
        laplacian = (
            grey[:, 1:-1, :-2] + grey[:, 1:-1, 2:] + grey[:, :-2, 1:-1] + grey[:, 2:, 1:-1]
            - 4 * grey[:, 1:-1, 1:-1]
        )  # fmt: skip
        stats = np.stack(
            [
                flat.mean(axis=1),
                flat.std(axis=1),
                np.sqrt((laplacian.reshape(n, -1) ** 2).mean(axis=1)),
                (flat > 0.08).mean(axis=1),
            ],
            axis=1,
        )
        cells = _grid_means(magnitude[..., None], self.grid)
        return np.concatenate([hist, stats, cells], axis=1)


# --- an ImageNet backbone ------------------------------------------------------------------

KERAS_WEIGHTS_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def keras_weights_file(weights_dir: Path) -> Path | None:
    """The backbone's weights: in the weights directory, else the Keras cache; None if absent."""
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    for folder in (weights_dir, cache):
        candidate = folder / KERAS_WEIGHTS_FILE
        if candidate.is_file():
            return candidate
    return None


def tensorflow_available() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


class KerasExtractor:
    """MobileNetV2 (ImageNet weights, no top) pooled features; TensorFlow is imported lazily."""

    name = "keras-mobilenet_v2"
    version = "1"
    size = 224
    batch = 64

    def __init__(self, weights: Path) -> None:
        self.weights = weights
        self._model: Any = None

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def dims(self) -> int:
        return 1280

    def _load(self) -> Any:
        if self._model is None:
            import tensorflow as tf  # optional and heavy: only here

            self._model = tf.keras.applications.MobileNetV2(
                include_top=False,
                weights=str(self.weights),
                pooling="avg",
                input_shape=(self.size, self.size, 3),
            )
        return self._model

    def extract(self, paths: Sequence[Path], progress: Progress | None = None) -> np.ndarray:
        model = self._load()
        out = np.empty((len(paths), self.dims), dtype=np.float32)
        for start in range(0, len(paths), self.batch):
            chunk = paths[start : start + self.batch]
            pixels = np.stack([load_rgb(Path(p), self.size) for p in chunk]).astype(np.float32)
            batch = pixels / 127.5 - 1.0  # MobileNetV2's preprocess_input
            out[start : start + len(chunk)] = model.predict(batch, verbose=0)
            if progress:
                progress(start + len(chunk), len(paths))
        return out


def pick_extractor(settings: Settings, choice: ExtractorChoice = "auto") -> FeatureExtractor:
    """`auto`: the Keras backbone when TensorFlow and its weights are here, else the fallback.

    `keras` insists on the backbone (ExtractorUnavailable when it cannot run); `fallback` never
    tries it.
    """
    weights_dir = settings.weights_path
    if choice == "fallback":
        return ColourTextureExtractor()
    weights = keras_weights_file(weights_dir)
    usable = weights is not None and tensorflow_available()
    if usable:
        assert weights is not None
        return KerasExtractor(weights)
    if choice == "keras":
        if not tensorflow_available():
            raise ExtractorUnavailable(
                "the keras extractor needs TensorFlow, which is not installed on this worker"
            )
        raise ExtractorUnavailable(
            f"the keras extractor needs {KERAS_WEIGHTS_FILE} in {weights_dir} or the Keras cache"
        )
    return ColourTextureExtractor()
