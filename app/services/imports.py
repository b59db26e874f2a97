"""Import a folder of photos in `species_name/image.jpg` layout into the data directory.

Each file is decoded and verified before anything is written; the copy lands under a
content-addressed name (sha256) with a temp-file + rename, so a crash never leaves half a
photo. Rows are committed in batches and importing the same folder again skips what is there,
so an interrupted import is finished by running it again.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlmodel import Session, col, select

from app.models import DownloadState, Image, ImageSource, Species
from app.services.photos import IMAGES_DIR, sha256_file, verify_image
from app.services.thumbnails import make_thumbnail, thumbnail_path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
BATCH = 50


@dataclass
class ImportReport:
    imported: int = 0
    already_present: int = 0
    species_created: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)

    def as_dict(self) -> dict[str, object]:
        return {
            "imported": self.imported,
            "already_present": self.already_present,
            "species_created": self.species_created,
            "rejected": [{"path": p, "reason": r} for p, r in self.rejected],
        }


class ImportFailed(ValueError):
    """The folder as a whole cannot be imported; the message says why."""


def species_name(folder: str) -> str:
    """`Amanita_muscaria` → `Amanita muscaria` (folder names cannot always hold spaces)."""
    return " ".join(folder.replace("_", " ").split())


def _observations(root: Path) -> dict[str, int]:
    """Observation ids from a demo-style `manifest.csv`, when the folder has one."""
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        return {}
    with manifest.open(newline="") as handle:
        rows = csv.DictReader(handle)
        if not rows.fieldnames or not {"path", "observation_id"} <= set(rows.fieldnames):
            return {}
        return {row["path"]: int(row["observation_id"]) for row in rows}


def _store(source: Path, destination: Path) -> None:
    if destination.exists():
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=destination.parent, prefix=".import-")
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out)
        os.replace(tmp, destination)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _species(session: Session, name: str, report: ImportReport) -> Species:
    species = session.exec(select(Species).where(Species.scientific_name == name)).first()
    if species is None:
        species = Species(scientific_name=name)
        session.add(species)
        session.flush()
        report.species_created += 1
    return species


def _write_rows(session: Session, rows: list[tuple[str, Image]], report: ImportReport) -> None:
    for name, row in rows:
        row.species_id = _species(session, name, report).id  # type: ignore[assignment]
        session.add(row)
    rows.clear()


def _remove_unreferenced(session: Session, created: list[tuple[str, Path]]) -> None:
    """After a failed atomic import: remove the files it wrote that no stored image uses."""
    digests = sorted({digest for digest, _ in created})
    used: set[str] = set()
    for start in range(0, len(digests), 500):
        chunk = digests[start : start + 500]
        used.update(session.exec(select(Image.sha256).where(col(Image.sha256).in_(chunk))).all())
    for digest, path in created:
        if digest not in used:
            path.unlink(missing_ok=True)


def import_folder(
    session: Session,
    root: Path,
    data_dir: Path,
    *,
    label: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    atomic: bool = False,
) -> ImportReport:
    """Import every image under `root/<species>/`; bad files are reported, not fatal.

    Commits every `BATCH` files.
    `label` names the import in each image's source reference (default: the folder's name),
    which is what makes a second import of the same folder a no-op.

    `atomic=True` (uploads use it) imports all or nothing: the rows are written in one
    transaction at the end (so progress can still be reported meanwhile, even on SQLite), and on
    any error, or a cancel raised by `progress`, the transaction is rolled back and the files this
    call stored are removed again.
    """
    created: list[tuple[str, Path]] = []  # (sha256, file) written by this call
    try:
        return _import(session, root, data_dir, label, progress, atomic, created)
    except BaseException:
        if atomic:
            session.rollback()
            _remove_unreferenced(session, created)
        raise


def _import(
    session: Session,
    root: Path,
    data_dir: Path,
    label: str | None,
    progress: Callable[[int, int], None] | None,
    atomic: bool,
    created: list[tuple[str, Path]],
) -> ImportReport:
    if not root.is_dir():
        raise ImportFailed(f"{root} is not a folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [
        f for folder in folders for f in sorted(folder.iterdir())
        if f.is_file() and not f.name.startswith(".")
    ]  # fmt: skip
    if not files:
        raise ImportFailed(
            f"{root} has no species folders with images (expected species/image.jpg)"
        )
    label = label or root.name
    observations = _observations(root)
    report = ImportReport()
    pending: list[tuple[str, Image]] = []  # (species name, row), written at each commit
    for done, path in enumerate(files, start=1):
        relative = path.relative_to(root).as_posix()
        ref = f"{label}/{relative}"
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            report.rejected.append((relative, f"not an image type we import ({path.suffix})"))
        elif session.exec(
            select(Image.id).where(Image.source == ImageSource.import_, Image.source_ref == ref)
        ).first():
            report.already_present += 1
        else:
            try:
                width, height = verify_image(path)
            except ValueError as exc:
                report.rejected.append((relative, str(exc)))
            else:
                digest = sha256_file(path)
                stored = Path(
                    IMAGES_DIR, path.parent.name, digest[:2], digest + path.suffix.lower()
                )
                for new in (data_dir / stored, data_dir / thumbnail_path(digest)):
                    if not new.exists():
                        created.append((digest, new))
                _store(path, data_dir / stored)
                make_thumbnail(data_dir / stored, data_dir, digest)
                pending.append((
                    species_name(path.parent.name),
                    Image(
                        source=ImageSource.import_, source_ref=ref,
                        observation_id=observations.get(relative), path=stored.as_posix(),
                        sha256=digest, width=width, height=height, size_bytes=path.stat().st_size,
                        download_state=DownloadState.done,
                    ),
                ))  # fmt: skip
                report.imported += 1
        if done % BATCH == 0 or done == len(files):
            # Commit before reporting: on SQLite the reporter writes from another connection.
            if not atomic:
                _write_rows(session, pending, report)
                session.commit()
            if progress is not None:
                progress(done, len(files))
    if atomic:
        _write_rows(session, pending, report)
        session.commit()
    return report
