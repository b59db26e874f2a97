"""The Models page and Try it: trained models with their TFLite exports, the accuracy-vs-size
trade-off (with its Pareto front), which file a download may serve, and example photos.

Files are found by database lookup only, and a stored path (relative to the data directory) is
resolved and checked to lie inside the data directory before anything is served, the same rule
as photos (`app/services/media.py`). Nothing here imports TensorFlow.
"""

from __future__ import annotations

import io
import logging
import math
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from sqlmodel import Session, col, select

from app.models import (
    DatasetItem,
    DatasetVersion,
    DownloadState,
    Image,
    ModelExport,
    Species,
    TrainedModel,
)
from app.services.exports import EXPORT_KINDS, SAFETY_STATEMENT
from app.services.media import contained
from app.services.photos import MAX_PIXELS
from app.services.predict import PredictError, open_export, preprocess

log = logging.getLogger(__name__)

# The export kinds, in the order of rows on the page.
KIND_ORDER = EXPORT_KINDS
KIND_LABELS = {
    "float32": "float32",
    "float16": "float16",
    "dynamic": "dynamic range",
    "int8": "int8",
}
# Try it: how many species it names, example photos shown under each, dataset photos offered on
# the form, TFLite files kept loaded. (The largest photo it reads is a setting, max_try_bytes.)
TOP_K = 5
EXAMPLES_PER_SPECIES = 4
SAMPLE_PHOTOS = 8
NOT_AN_IMAGE = "not an image Sporeprint can read (JPEG, PNG, WebP…)"

T = TypeVar("T")


def export_key(export: ModelExport) -> str:
    """`float16`, or for int8 its edge dtype too (`int8-uint8`): two int8 files may coexist."""
    if export.quantization == "int8":
        return f"int8-{export.input_dtype}"
    return export.quantization


def kind_label(export: ModelExport) -> str:
    label = KIND_LABELS.get(export.quantization, export.quantization)
    return f"{label} ({export.input_dtype} in/out)" if export.quantization == "int8" else label


class CatalogNotFound(LookupError):
    """Nothing to serve; the message says why and what to do. (HTTP 404)"""


# --- the Pareto front -----------------------------------------------------------------------


def _attr(name: str) -> Callable[[Any], float | None]:
    return lambda item: getattr(item, name)


def pareto_front(
    points: Iterable[T],
    *,
    size: Callable[[T], float | None] = _attr("size_bytes"),
    accuracy: Callable[[T], float | None] = _attr("accuracy"),
) -> list[T]:
    """The points no other point beats: none is at most as large and at least as accurate while
    being strictly smaller or strictly more accurate. Smallest first.

    Points without a size or an accuracy (not measured yet) are left out; exact ties (the same
    size and accuracy) are all on the front.
    """
    valid = []
    for point in points:
        s, a = size(point), accuracy(point)
        if s is None or a is None or not (math.isfinite(s) and math.isfinite(a)) or s < 0:
            continue
        valid.append((float(s), float(a), point))
    valid.sort(key=lambda v: (v[0], -v[1]))
    front: list[T] = []
    best_smaller = -math.inf  # best accuracy among strictly smaller points
    i = 0
    while i < len(valid):
        s = valid[i][0]
        group = []
        while i < len(valid) and valid[i][0] == s:
            group.append(valid[i])
            i += 1
        top = group[0][1]  # sorted by accuracy, best first
        if top > best_smaller:
            front.extend(p for _, a, p in group if a == top)
            best_smaller = top
    return front


# --- the Models page ------------------------------------------------------------------------


@dataclass
class ExportRow:
    export: ModelExport
    ratio: float | None  # size / the same model's float32 export's size
    on_file: bool
    bundle_on_file: bool
    pareto: bool = False

    @property
    def size_bytes(self) -> int | None:
        return self.export.size_bytes

    @property
    def accuracy(self) -> float | None:
        return self.export.accuracy

    @property
    def kind_label(self) -> str:
        return kind_label(self.export)


@dataclass
class ModelRow:
    model: TrainedModel
    version_name: str | None
    on_file: bool
    exports: list[ExportRow] = field(default_factory=list)

    @property
    def top1(self) -> float | None:
        value = self.model.metrics.get("top1")
        return float(value) if isinstance(value, int | float) else None


def _on_file(data_dir: Path, relative: str | None) -> bool:
    if not relative:
        return False
    path = contained(data_dir, relative)
    return path is not None and path.is_file()


def _kind_rank(kind: str) -> int:
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)


def list_models(session: Session, data_dir: Path) -> list[ModelRow]:
    """Every trained model, newest first, with its exports (by kind, newest first) and which
    of them are on the Pareto front of all exports."""
    models = session.exec(select(TrainedModel).order_by(col(TrainedModel.id).desc())).all()
    versions = dict(session.exec(select(DatasetVersion.id, DatasetVersion.name)).all())
    exports = session.exec(select(ModelExport).order_by(col(ModelExport.id).desc())).all()
    by_model: dict[int, list[ModelExport]] = {}
    for export in exports:
        by_model.setdefault(export.trained_model_id, []).append(export)
    rows: list[ModelRow] = []
    for model in models:
        assert model.id is not None
        mine = sorted(by_model.get(model.id, []), key=lambda e: _kind_rank(e.quantization))
        float32 = next(
            (e.size_bytes for e in mine if e.quantization == "float32" and e.size_bytes), None
        )
        rows.append(
            ModelRow(
                model=model,
                version_name=versions.get(model.dataset_version_id),
                on_file=_on_file(data_dir, model.path),
                exports=[
                    ExportRow(
                        export=e,
                        ratio=(e.size_bytes / float32) if float32 and e.size_bytes else None,
                        on_file=_on_file(data_dir, e.path),
                        bundle_on_file=_on_file(data_dir, e.bundle_path),
                    )
                    for e in mine
                ],
            )
        )
    for row in pareto_front(r for m in rows for r in m.exports):
        row.pareto = True
    return rows


def _mb(size: int) -> float:
    return round(size / 1_000_000, 4)


def chart_data(rows: Sequence[ModelRow]) -> dict[str, Any]:
    """The scatter's data: one point per export with a size and an accuracy, each model's
    .keras file as a reference point, and the Pareto front of the exports (smallest first)."""
    points: list[dict[str, Any]] = []
    for row in rows:
        model = row.model
        if model.size_bytes and row.top1 is not None:
            points.append({
                "kind": "keras", "model_id": model.id, "export_id": None, "model": model.name,
                "label": f"{model.name} · .keras", "size_mb": _mb(model.size_bytes),
                "accuracy": row.top1, "pareto": False,
            })  # fmt: skip
        for e in row.exports:
            export = e.export
            if not export.size_bytes or export.accuracy is None:
                continue
            points.append({
                "kind": export.quantization, "model_id": model.id, "export_id": export.id,
                "model": model.name, "label": f"{model.name} · {e.kind_label}",
                "size_mb": _mb(export.size_bytes), "accuracy": export.accuracy,
                "pareto": e.pareto,
            })  # fmt: skip
    front = sorted((p for p in points if p["pareto"]), key=lambda p: p["size_mb"])
    return {
        "points": points,
        "front": [{"size_mb": p["size_mb"], "accuracy": p["accuracy"]} for p in front],
        "kinds": list(KIND_ORDER),
    }


def export_choices(rows: Sequence[ModelRow]) -> list[tuple[ModelRow, list[ExportRow]]]:
    """The exports Try it can run (their file is there), grouped by model."""
    return [
        (r, [e for e in r.exports if e.on_file]) for r in rows if any(e.on_file for e in r.exports)
    ]


def default_export_id(rows: Sequence[ModelRow]) -> int | None:
    """The export Try it starts with: the most accurate one on the Pareto front (the smaller of
    equals), or else the newest export whose file is there."""
    usable = [e for r in rows for e in r.exports if e.on_file]
    front = [e for e in usable if e.pareto]
    if front:
        best = max(front, key=lambda e: (e.export.accuracy or 0.0, -(e.export.size_bytes or 0)))
        return best.export.id
    newest = max(usable, key=lambda e: (e.export.created_at, e.export.id or 0), default=None)
    return newest.export.id if newest else None


# --- downloads ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Download:
    path: Path  # absolute, inside the data directory
    filename: str  # for Content-Disposition
    media_type: str


def slug(text: str, limit: int = 60) -> str:
    """`MobileNetV3Small on v1 (job 4)` → `mobilenetv3small-on-v1-job-4`."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "model"


def _served(data_dir: Path, relative: str | None, what: str, missing_hint: str) -> Path:
    if not relative:
        raise CatalogNotFound(f"{what} has no file; {missing_hint}")
    path = contained(data_dir, relative)
    if path is None:
        log.warning("%s has a path outside the data directory; not served", what)
        raise CatalogNotFound(f"{what} has a file outside the data directory; it is not served")
    if not path.is_file():
        raise CatalogNotFound(f"{what} is missing from the data directory; {missing_hint}")
    return path


def model_download(session: Session, model_id: int, data_dir: Path) -> Download:
    model = session.get(TrainedModel, model_id)
    if model is None:
        raise CatalogNotFound(f"there is no trained model {model_id}")
    path = _served(
        data_dir, model.path, f"the .keras file of model {model_id}",
        "train the model again (its TFLite exports are separate files)",
    )  # fmt: skip
    return Download(path, f"sporeprint-{slug(model.name)}.keras", "application/octet-stream")


def export_download(
    session: Session, export_id: int, data_dir: Path, what: Literal["tflite", "bundle"]
) -> Download:
    export = session.get(ModelExport, export_id)
    if export is None:
        raise CatalogNotFound(f"there is no export {export_id}")
    model = session.get(TrainedModel, export.trained_model_id)
    name = f"sporeprint-{slug(model.name if model else f'model {export.trained_model_id}')}"
    kind = slug(export_key(export), 24)
    hint = "export the model again from the Models page"
    if what == "tflite":
        path = _served(data_dir, export.path, f"the .tflite file of export {export_id}", hint)
        return Download(path, f"{name}-{kind}.tflite", "application/octet-stream")
    path = _served(data_dir, export.bundle_path, f"the bundle of export {export_id}", hint)
    return Download(path, f"{name}-{kind}.zip", "application/zip")


# --- Try it ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeciesExamples:
    label: str
    species_id: int | None
    image_ids: list[int]


def examples(
    session: Session,
    model: TrainedModel,
    labels: Sequence[str],
    per_species: int = EXAMPLES_PER_SPECIES,
) -> dict[str, SpeciesExamples]:
    """Up to `per_species` photos of each of `labels` from the model's dataset version (training
    photos first: what the model learnt the species from), with the species' id for a link."""
    ids = dict(
        session.exec(
            select(Species.scientific_name, Species.id).where(
                col(Species.scientific_name).in_(list(labels))
            )
        ).all()
    )
    split_rank = {"train": 0, "val": 1, "test": 2}
    found: dict[str, SpeciesExamples] = {}
    for label in labels:
        species_id = ids.get(label)
        image_ids: list[int] = []
        if species_id is not None:
            rows = session.exec(
                select(DatasetItem.image_id, DatasetItem.split)
                .join(Image, col(Image.id) == col(DatasetItem.image_id))
                .where(
                    DatasetItem.dataset_version_id == model.dataset_version_id,
                    DatasetItem.species_id == species_id,
                    col(Image.download_state) == DownloadState.done,
                )
                .order_by(col(DatasetItem.image_id))
                .limit(per_species * 8)
            ).all()
            ranked = sorted(rows, key=lambda r: (split_rank.get(r[1], 9), r[0]))
            image_ids = [r[0] for r in ranked[:per_species]]
        found[label] = SpeciesExamples(label, species_id, image_ids)
    return found


@dataclass(frozen=True)
class SamplePhoto:
    image_id: int
    species: str


def sample_photos(
    session: Session, model: TrainedModel, limit: int = SAMPLE_PHOTOS
) -> list[SamplePhoto]:
    """A few photos from the model's test split, spread over its species, to try it on."""
    rows = session.exec(
        select(DatasetItem.image_id, DatasetItem.class_index, Species.scientific_name)
        .join(Image, col(Image.id) == col(DatasetItem.image_id))
        .join(Species, col(Species.id) == col(DatasetItem.species_id))
        .where(
            DatasetItem.dataset_version_id == model.dataset_version_id,
            DatasetItem.split == "test",
            col(Image.download_state) == DownloadState.done,
        )
        .order_by(col(DatasetItem.image_id))
        .limit(limit * 50)
    ).all()
    per_class: dict[int, list[SamplePhoto]] = {}
    for image_id, class_index, name in rows:
        per_class.setdefault(class_index, []).append(SamplePhoto(image_id, name))
    picked: list[SamplePhoto] = []
    depth = 0
    while len(picked) < limit and any(len(v) > depth for v in per_class.values()):
        for key in sorted(per_class):
            if len(per_class[key]) > depth and len(picked) < limit:
                picked.append(per_class[key][depth])
        depth += 1
    return picked


class TryError(ValueError):
    """The photo cannot be tried; the message says why, `status_code` how to answer."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


def check_photo(data: bytes) -> tuple[int, int]:
    """Width and height of an uploaded photo, read from its header (in memory), or TryError:
    400 for an empty file, 415 for something that is not an image, 413 for too many pixels."""
    if not data:
        raise TryError(400, "empty file: the photo has no bytes; choose another")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data)) as image:
                width, height = image.size
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
        raise TryError(413, _too_many_pixels()) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise TryError(415, f"{NOT_AN_IMAGE}; choose a photo") from None
    if width * height > MAX_PIXELS:
        raise TryError(413, _too_many_pixels(width, height))
    return width, height


def _too_many_pixels(width: int | None = None, height: int | None = None) -> str:
    size = f" ({width} x {height})" if width and height else ""
    return (
        f"the photo has too many pixels{size}; Try it reads at most "
        f"{MAX_PIXELS // 1_000_000} megapixels, so send a smaller one"
    )


@dataclass(frozen=True)
class Guess:
    label: str
    probability: float
    species_id: int | None
    image_ids: list[int]


@dataclass(frozen=True)
class TryResult:
    export: ModelExport
    model: TrainedModel
    guesses: list[Guess]
    width: int
    height: int


def try_photo(
    session: Session, data_dir: Path, export: ModelExport, model: TrainedModel, photo: bytes
) -> TryResult:
    """The export's top-5 species for `photo` (bytes in memory; nothing is written), read from
    the TFLite file itself through `app/services/predict.py`, with example photos of each."""
    width, height = check_photo(photo)
    assert export.id is not None
    path = _served(
        data_dir, export.path, f"the .tflite file of export {export.id}",
        "export the model again from the Models page",
    )  # fmt: skip
    if not model.labels:
        raise TryError(409, f"model {model.id} has no species labels; train it again")
    try:
        classifier = open_export(path, list(model.labels))
    except PredictError as exc:
        raise TryError(409, f"export {export.id}: {exc}; export the model again") from None
    try:
        top = classifier.predict(preprocess(photo, classifier.input_size), TOP_K)
    except PredictError as exc:  # what the header check above lets through: a damaged image
        raise TryError(415, str(exc)) from None
    shown = examples(session, model, [label for label, _ in top])
    return TryResult(
        export=export,
        model=model,
        guesses=[
            Guess(label, float(p), shown[label].species_id, shown[label].image_ids)
            for label, p in top
        ],
        width=width,
        height=height,
    )


def safety_statement() -> str:
    return SAFETY_STATEMENT
