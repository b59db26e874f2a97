"""The dataset on disk: the public entry points, the manifest, and safe writes into the folder."""

from __future__ import annotations

import contextlib
import csv
import io
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from app.services.demo_data.anomalies import ANOMALY_KINDS
from app.services.demo_data.photo import render
from app.services.demo_data.plan import plan
from app.services.demo_data.species import DEMO_SPECIES

MANIFEST_NAME = "manifest.csv"
_FIELDS = ("path", "species", "observation_id", "anomaly")


@dataclass(frozen=True)
class DemoImage:
    """One generated photo: `path` is relative to the dataset root, with forward slashes."""

    path: str
    species: str
    observation_id: int
    anomaly: str | None


@dataclass(frozen=True)
class DemoManifest:
    """Everything a generation produced, as recorded in `<root>/manifest.csv`."""

    root: Path
    images: tuple[DemoImage, ...]

    @property
    def species(self) -> tuple[str, ...]:
        """Scientific names present, sorted."""
        return tuple(sorted({image.species for image in self.images}))

    @property
    def anomalies(self) -> tuple[DemoImage, ...]:
        """The planted anomalies, in manifest order."""
        return tuple(image for image in self.images if image.anomaly)

    def path_of(self, image: DemoImage) -> Path:
        """Absolute location of `image` on disk."""
        return self.root / image.path


# ---------------------------------------------------------------- public entry points


def generate_demo_dataset(
    out_dir: Path,
    *,
    per_species: int = 60,
    species_count: int | None = None,
    anomaly_fraction: float = 0.04,
    image_size: int = 256,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> DemoManifest:
    """Draw the demo dataset into `out_dir` and write its manifest; returns the manifest.

    `out_dir` must be missing, empty, or a previous demo dataset (it has a manifest.csv); images a
    previous generation listed but this one does not are removed, nothing else is touched.
    `progress(done, total)` is called once before the first image and after every image.
    """
    per_species, count, image_size, seed = _validate(
        per_species, species_count, anomaly_fraction, image_size, seed
    )
    out_dir = Path(out_dir)
    previous = _claim_folder(out_dir)
    jobs = plan(count, per_species, anomaly_fraction, seed)
    if progress:
        progress(0, len(jobs))
    images = []
    for done, job in enumerate(jobs, start=1):
        species = DEMO_SPECIES[job.species_index]
        path = f"{species.folder}/{job.image_index:04d}.jpg"
        _write_atomic(out_dir / path, render(job, species, image_size, seed))
        images.append(DemoImage(path, species.name, job.observation_id, job.anomaly))
        if progress:
            progress(done, len(jobs))
    manifest = DemoManifest(out_dir, tuple(images))
    _write_manifest(manifest)
    if previous is not None:
        _remove_stale(previous, manifest)
    return manifest


def read_manifest(root: Path) -> DemoManifest:
    """Load `<root>/manifest.csv`; FileNotFoundError if absent, ValueError if malformed."""
    root = Path(root)
    where = root / MANIFEST_NAME
    with where.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        try:
            if tuple(reader.fieldnames or ()) != _FIELDS:
                raise ValueError(f"{where}: expected columns {', '.join(_FIELDS)}")
            rows = list(reader)
        except csv.Error as error:
            raise ValueError(f"{where}: {error}") from None
    images = []
    for line, row in enumerate(rows, start=2):
        anomaly = row["anomaly"] or None
        if anomaly is not None and anomaly not in ANOMALY_KINDS:
            raise ValueError(f"{where}:{line}: unknown anomaly {anomaly!r}")
        if not row["path"] or not row["species"]:
            raise ValueError(f"{where}:{line}: missing path or species")
        try:
            observation_id = int(row["observation_id"])
        except (TypeError, ValueError):
            raise ValueError(f"{where}:{line}: bad observation_id") from None
        images.append(DemoImage(row["path"], row["species"], observation_id, anomaly))
    return DemoManifest(root, tuple(images))


# ---------------------------------------------------------------- checks and files


def _validate(
    per_species: int,
    species_count: int | None,
    anomaly_fraction: float,
    image_size: int,
    seed: int,
) -> tuple[int, int, int, int]:
    """Check the arguments; returns them as plain ints: per_species, species count, size, seed."""
    count = len(DEMO_SPECIES) if species_count is None else species_count
    named = (
        ("per_species", per_species),
        ("species_count", count),
        ("image_size", image_size),
        ("seed", seed),
    )
    for name, value in named:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if per_species < 1:
        raise ValueError(f"per_species must be at least 1, got {per_species}")
    if not 1 <= count <= len(DEMO_SPECIES):
        raise ValueError(f"species_count must be between 1 and {len(DEMO_SPECIES)}, got {count}")
    if not 0 <= anomaly_fraction < 0.5:
        raise ValueError(f"anomaly_fraction must be in [0, 0.5), got {anomaly_fraction}")
    if not 32 <= image_size <= 1024:
        raise ValueError(f"image_size must be between 32 and 1024 pixels, got {image_size}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    return int(per_species), int(count), int(image_size), int(seed)


def _claim_folder(out_dir: Path) -> DemoManifest | None:
    """Refuse a folder holding anything but a previous demo dataset; return that one's manifest."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder")
    if not out_dir.exists():
        return None
    if (out_dir / MANIFEST_NAME).is_file():
        try:
            return read_manifest(out_dir)
        except ValueError as error:  # someone else's manifest.csv: not ours to overwrite
            raise FileExistsError(
                f"{out_dir} holds a manifest.csv that is not ours: {error}"
            ) from None
    if any(out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir} is not empty and holds no {MANIFEST_NAME}, so it is not a demo dataset; "
            "choose a new or empty folder"
        )
    return None


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary sibling and os.replace, so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _write_manifest(manifest: DemoManifest) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_FIELDS)
    for image in manifest.images:
        writer.writerow([image.path, image.species, image.observation_id, image.anomaly or ""])
    _write_atomic(manifest.root / MANIFEST_NAME, buffer.getvalue().encode("utf-8"))


def _remove_stale(previous: DemoManifest, current: DemoManifest) -> None:
    """Delete images an earlier generation listed that this one did not rewrite."""
    keep = {image.path for image in current.images}
    for image in previous.images:
        relative = PurePosixPath(image.path)
        if image.path in keep or relative.is_absolute() or ".." in relative.parts:
            continue  # never follow a hand-edited manifest out of the dataset
        target = current.root / relative
        target.unlink(missing_ok=True)
        if target.parent != current.root:
            with contextlib.suppress(OSError):  # only succeeds once the species folder is empty
                target.parent.rmdir()
