"""Export a dataset version as one zip: `split/species/image.jpg` plus a CSV manifest.

The zip is built in `<data dir>/exports/` under a temporary name and renamed into place when it
is complete, so a reader only ever sees a whole file (a crash leaves at most a `.tmp` file behind,
which the next export replaces). Photos are stored as they are (JPEG does not compress further);
the manifest and `labels.txt` are deflated. Photos whose file has gone missing are listed in
`missing.txt` inside the zip instead of failing the export.

Inside the zip:
- `<split>/<Species_name>/<image id>.<ext>` for every item;
- `manifest.csv`: one row per photo, with its split, class, source, licence and attribution;
- `labels.txt`: class names in class-index order (line n = class n).
"""

from __future__ import annotations

import csv
import io
import os
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import Session

from app.models import DatasetVersion
from app.services import datasets
from app.services.media import contained

EXPORT_DIR = "exports"
MANIFEST_COLUMNS = (
    "path", "split", "species", "class_index", "image_id", "observation_id", "observer_id",
    "license", "attribution", "source", "source_ref", "source_url", "sha256", "width", "height",
)  # fmt: skip


def export_path(data_dir: Path, version_id: int) -> Path:
    return data_dir / EXPORT_DIR / f"dataset-{version_id}.zip"


def download_name(version: DatasetVersion) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", version.name).strip("-.") or "dataset"
    return f"sporeprint-{slug}-v{version.id}.zip"


def folder_name(scientific_name: str) -> str:
    """`Amanita muscaria` → `Amanita_muscaria` (the layout imports read back)."""
    name = re.sub(r"[^\w.-]+", "_", scientific_name.strip(), flags=re.UNICODE).strip("._")
    return name or "unnamed"


@dataclass(frozen=True)
class ExportReport:
    path: Path
    photos: int
    missing: int
    size_bytes: int

    def as_dict(self) -> dict[str, int | str]:
        return {
            "file": self.path.name,
            "photos": self.photos,
            "missing": self.missing,
            "size_bytes": self.size_bytes,
        }


def export_version(
    session: Session,
    version_id: int,
    data_dir: Path,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> ExportReport:
    version = datasets.get_version(session, version_id)
    rows = list(datasets.items(session, version_id))
    target = export_path(data_dir, version_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    manifest = io.StringIO()
    writer = csv.writer(manifest, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    missing: list[str] = []
    written = 0
    try:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_STORED) as archive:
            for done, (item, image, species) in enumerate(rows, start=1):
                source = contained(data_dir, image.path) if image.path else None
                suffix = (Path(image.path).suffix.lower() if image.path else "") or ".jpg"
                member = f"{item.split}/{folder_name(species)}/{image.id}{suffix}"
                if source is None or not source.is_file():
                    missing.append(f"{member}\timage {image.id}: file missing")
                else:
                    archive.write(source, member)
                    written += 1
                    writer.writerow(
                        [
                            member, item.split, species, item.class_index, image.id,
                            image.observation_id, image.observer_id, image.license,
                            image.attribution, image.source, image.source_ref, image.source_url,
                            image.sha256, image.width, image.height,
                        ]
                    )  # fmt: skip
                if progress is not None:
                    progress(done, len(rows))
            deflate = zipfile.ZIP_DEFLATED
            archive.writestr("manifest.csv", manifest.getvalue(), compress_type=deflate)
            labels = "".join(f"{name}\n" for name in datasets.labels(version))
            archive.writestr("labels.txt", labels, compress_type=deflate)
            if missing:
                archive.writestr("missing.txt", "\n".join(missing) + "\n", compress_type=deflate)
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return ExportReport(
        path=target, photos=written, missing=len(missing), size_bytes=target.stat().st_size
    )
