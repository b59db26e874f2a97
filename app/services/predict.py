"""Running an exported TFLite model: one photo in, the top-k species out.

What the web process, the CLI and the export job's own evaluation use, so the three predict the
same way. It needs Pillow, NumPy and the LiteRT interpreter (`ai-edge-litert`), never TensorFlow.

`preprocess` prepares a photo the way training's tf.data pipeline does (workers/ml/data.py):
turned upright by its EXIF orientation, RGB, centre-cropped to a square, resized with an
antialiased bilinear filter, float32 pixels in [0, 255]. Pillow's resize agrees with
`tf.image.resize(..., antialias=True)` to within rounding (at most 1 level); JPEG decoding
differs by about one level on average between the two libraries' decoders, which is as close as
Pillow allows. The model does its own normalisation (it is inside the exported graph).

`TfliteClassifier` wraps one interpreter on one CPU thread; it quantises the input and
dequantises the output from the tensors' own parameters, so float32, float16, dynamic-range and
int8 exports (uint8 or float32 at the edges) are all used the same way. `load_bundle` needs
nothing but the bundle zip (model.tflite, labels.txt, model_card.json). `open_export` keeps a
few loaded interpreters, keyed by path and modification time.
"""

from __future__ import annotations

import io
import json
import threading
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from app.services.photos import MAX_PIXELS

BUNDLE_MODEL = "model.tflite"
BUNDLE_LABELS = "labels.txt"
BUNDLE_CARD = "model_card.json"
# A bundle member larger than this is refused (a zip bomb, not a phone model).
MAX_MODEL_BYTES = 2 * 1024**3
CACHE_SIZE = 8


class PredictError(ValueError):
    """A photo or a model file that cannot be used; the message says why, for a person.

    `status_code` is the HTTP answer a web page would give: 415 for what is not a usable image
    (or model), 413 for an image with too many pixels, 400 for an empty file.
    """

    def __init__(self, message: str, status_code: int = 415) -> None:
        super().__init__(message)
        self.status_code = status_code


# --- the photo ------------------------------------------------------------------------------


def _open(image: bytes | Path | str) -> PILImage.Image:
    if isinstance(image, bytes | bytearray | memoryview):
        data = bytes(image)
        if not data:
            raise PredictError("the file is empty (0 bytes); choose a photo", 400)
        source: Any = io.BytesIO(data)
    else:
        path = Path(image)
        try:
            size = path.stat().st_size
        except OSError:
            raise PredictError(f"cannot read {path.name}: no such file") from None
        if not path.is_file():
            raise PredictError(f"{path.name} is not a file")
        if size == 0:
            raise PredictError(f"{path.name} is empty (0 bytes); choose a photo", 400)
        source = path
    try:
        return PILImage.open(source)
    except UnidentifiedImageError:
        raise PredictError(
            "this is not an image Sporeprint can read (JPEG, PNG, WebP, GIF, BMP, TIFF …)"
        ) from None
    except PILImage.DecompressionBombError:
        raise PredictError("this image has too many pixels to be a photo", 413) from None
    except OSError as exc:
        raise PredictError(f"cannot read this image: {exc}") from None


def preprocess(image: bytes | Path | str, size: int, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A photo (its bytes or its path) → (size, size, 3) float32 RGB pixels in [0, 255].

    Raises PredictError for an empty file, a file that is not an image, a damaged image, or one
    with more than `max_pixels` pixels (checked from the header, before decoding).
    """
    if size < 1:
        raise ValueError(f"size must be positive, not {size}")
    with _open(image) as opened:
        width, height = opened.size
        if width * height > max_pixels:
            raise PredictError(
                f"this image is too large ({width} x {height} pixels; at most "
                f"{max_pixels / 1e6:g} megapixels)",
                413,
            )
        try:
            opened.load()
            upright = ImageOps.exif_transpose(opened)
            rgb = upright.convert("RGB")
        except PILImage.DecompressionBombError:
            raise PredictError("this image has too many pixels to be a photo", 413) from None
        except Exception as exc:  # untrusted bytes: any decoder or EXIF failure is damage
            raise PredictError(f"this image is damaged and cannot be decoded ({exc})") from None
    width, height = rgb.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    # Crop first, then resize: resizing with a box would let the filter reach past the crop.
    square = rgb.crop((left, top, left + side, top + side))
    if side != size:
        square = square.resize((size, size), PILImage.Resampling.BILINEAR)
    return np.asarray(square, dtype=np.float32)


# --- the model ------------------------------------------------------------------------------


def _interpreter(content: bytes) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_content=content, num_threads=1)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise PredictError(f"not a usable TFLite model: {exc}") from None
    return interpreter


class TfliteClassifier:
    """One TFLite image classifier on one CPU thread; thread-safe (calls are serialised)."""

    def __init__(
        self,
        model: Path | str | bytes,
        labels: list[str] | None = None,
        *,
        card: dict[str, Any] | None = None,
    ) -> None:
        self.path: Path | None
        if isinstance(model, bytes):
            content, self.path = model, None
        else:
            self.path = Path(model)
            try:
                content = self.path.read_bytes()
            except OSError as exc:
                raise PredictError(f"cannot read the model file {self.path.name}: {exc}") from None
            if labels is None and (self.path.parent / BUNDLE_LABELS).is_file():
                labels = read_labels(self.path.parent / BUNDLE_LABELS)
        self._content = content  # the interpreter reads from this buffer; keep it alive
        self._interpreter = _interpreter(content)
        self._lock = threading.Lock()
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise PredictError("this model does not have one input and one output")
        self._input, self._output = inputs[0], outputs[0]
        shape = [int(d) for d in self._input["shape"]]
        if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
            raise PredictError(f"this model's input {shape} is not a batch of square RGB images")
        self.input_size = shape[1]
        self.num_classes = int(self._output["shape"][-1])
        if labels is None:
            labels = [f"class {i}" for i in range(self.num_classes)]
        if len(labels) != self.num_classes:
            raise PredictError(f"{len(labels)} labels for a model with {self.num_classes} outputs")
        self.labels = list(labels)
        self.card = card or {}
        self.size_bytes = len(content)

    @property
    def input_dtype(self) -> str:
        return np.dtype(self._input["dtype"]).name

    @property
    def output_dtype(self) -> str:
        return np.dtype(self._output["dtype"]).name

    @property
    def input_quantization(self) -> tuple[float, int]:
        """(scale, zero point) of the input; (0.0, 0) for a float input."""
        scale, zero = self._input["quantization"]
        return float(scale), int(zero)

    @property
    def output_quantization(self) -> tuple[float, int]:
        scale, zero = self._output["quantization"]
        return float(scale), int(zero)

    def _quantise(self, pixels: np.ndarray) -> np.ndarray:
        dtype = np.dtype(self._input["dtype"])
        if dtype.kind == "f":
            return pixels.astype(dtype, copy=False)
        scale, zero = self._input["quantization"]
        info = np.iinfo(dtype)
        values = np.round(pixels / scale + zero) if scale else np.round(pixels)
        return np.clip(values, info.min, info.max).astype(dtype)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Float32 scores per class (dequantised) for (size, size, 3) float pixels in [0, 255]."""
        batch = np.asarray(pixels, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[None]
        expected = (1, self.input_size, self.input_size, 3)
        if batch.shape != expected:
            raise ValueError(f"pixels of shape {batch.shape[1:]}, the model takes {expected[1:]}")
        quantised = self._quantise(batch)
        with self._lock:
            self._interpreter.set_tensor(self._input["index"], quantised)
            self._interpreter.invoke()
            raw = self._interpreter.get_tensor(self._output["index"])[0].copy()
        if raw.dtype.kind == "f":
            return raw.astype(np.float32)
        scale, zero = self._output["quantization"]
        return ((raw.astype(np.float32) - zero) * scale) if scale else raw.astype(np.float32)

    def predict(self, pixels: np.ndarray, top: int = 5) -> list[tuple[str, float]]:
        """The `top` most likely labels with their scores, best first."""
        scores = self.probabilities(pixels)
        # A stable sort: ties keep the class order, as argmax does.
        order = np.argsort(-scores, kind="stable")[: max(1, min(top, self.num_classes))]
        return [(self.labels[i], float(scores[i])) for i in order]

    def predict_image(self, image: bytes | Path | str, top: int = 5) -> list[tuple[str, float]]:
        """`preprocess` + `predict`: a photo's bytes or path → the top labels."""
        return self.predict(preprocess(image, self.input_size), top)


def read_labels(path: Path) -> list[str]:
    return _parse_labels(path.read_text(encoding="utf-8"))


def _parse_labels(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def load_bundle(zip_path: Path | str) -> TfliteClassifier:
    """A classifier from an export bundle alone: model.tflite, labels.txt, model_card.json."""
    path = Path(zip_path)
    try:
        with zipfile.ZipFile(path) as bundle:
            names = set(bundle.namelist())
            for needed in (BUNDLE_MODEL, BUNDLE_LABELS):
                if needed not in names:
                    raise PredictError(f"{path.name} is not a Sporeprint bundle: no {needed}")
            if bundle.getinfo(BUNDLE_MODEL).file_size > MAX_MODEL_BYTES:
                raise PredictError(f"{path.name}: the model in this bundle is too large")
            content = bundle.read(BUNDLE_MODEL)
            labels = _parse_labels(bundle.read(BUNDLE_LABELS).decode("utf-8"))
            card = json.loads(bundle.read(BUNDLE_CARD)) if BUNDLE_CARD in names else {}
    except (zipfile.BadZipFile, OSError) as exc:
        raise PredictError(f"cannot read the bundle {path.name}: {exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PredictError(
            f"{path.name}: a damaged labels.txt or model_card.json ({exc})"
        ) from None
    classifier = TfliteClassifier(content, labels, card=card)
    classifier.path = path
    return classifier


_cache: OrderedDict[tuple[str, int, int, tuple[str, ...] | None], TfliteClassifier] = OrderedDict()
_cache_lock = threading.Lock()


def open_export(path: Path | str, labels: list[str] | None = None) -> TfliteClassifier:
    """A classifier for a `.tflite` file or a bundle `.zip`, reused while the file is unchanged.

    A `.tflite` file without `labels` takes them from a `labels.txt` beside it, if any.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        raise PredictError(f"no such model file: {path.name}") from None
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, tuple(labels) if labels else None)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    if path.suffix.lower() == ".zip":
        classifier = load_bundle(path)
    else:
        classifier = TfliteClassifier(path, labels)
    with _cache_lock:
        _cache[key] = classifier
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return classifier
