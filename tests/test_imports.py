"""Folder import: verified, content-addressed, idempotent, and bad files reported."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image as PILImage
from sqlmodel import Session, func, select

from app.config import Settings
from app.models import Image, Species
from app.services.demo_data import generate_demo_dataset
from app.services.imports import ImportFailed, import_folder, species_name
from app.services.thumbnails import THUMB_SIZE, thumbnail_path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "photos"
    generate_demo_dataset(root, per_species=4, species_count=3, image_size=64, seed=1)
    return root


def _count(db: Session, model: type) -> int:
    return db.exec(select(func.count()).select_from(model)).one()


def test_import_then_import_again(db: Session, migrated: Settings, demo: Path) -> None:
    calls: list[tuple[int, int]] = []
    report = import_folder(db, demo, migrated.data_dir, progress=lambda d, t: calls.append((d, t)))
    assert (report.imported, report.species_created, report.rejected) == (12, 3, [])
    assert calls[-1] == (12, 12)
    assert _count(db, Species) == 3 and _count(db, Image) == 12

    image = db.exec(select(Image)).first()
    stored = migrated.data_dir / image.path
    assert stored.is_file() and image.sha256 in stored.name
    thumb = migrated.data_dir / thumbnail_path(image.sha256)
    with PILImage.open(thumb) as t:
        assert t.format == "WEBP" and max(t.size) <= THUMB_SIZE
    assert (image.width, image.height) == (64, 64)
    assert image.observation_id is not None  # taken from the demo manifest
    names = set(db.exec(select(Species.scientific_name)).all())
    assert "Amanita muscaria" in names

    again = import_folder(db, demo, migrated.data_dir)
    assert (again.imported, again.already_present) == (0, 12)
    assert _count(db, Image) == 12


def test_bad_files_are_reported_and_not_stored(
    db: Session, migrated: Settings, demo: Path, tmp_path: Path
) -> None:
    root = tmp_path / "mixed"
    species = root / "Boletus_edulis"
    species.mkdir(parents=True)
    good = next((demo / "Boletus_edulis").glob("*.jpg"))
    (species / "good.jpg").write_bytes(good.read_bytes())
    (species / "truncated.jpg").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    (species / "empty.jpg").write_bytes(b"")
    (species / "notes.txt").write_text("field notes")
    (species / "fake.png").write_text("not really a png")

    report = import_folder(db, root, migrated.data_dir)
    reasons = dict(report.rejected)
    assert report.imported == 1
    assert set(reasons) == {
        "Boletus_edulis/truncated.jpg", "Boletus_edulis/empty.jpg",
        "Boletus_edulis/notes.txt", "Boletus_edulis/fake.png",
    }  # fmt: skip
    assert "damaged image" in reasons["Boletus_edulis/truncated.jpg"]
    assert reasons["Boletus_edulis/empty.jpg"] == "empty file"
    assert "not an image type" in reasons["Boletus_edulis/notes.txt"]
    assert "not a readable image" in reasons["Boletus_edulis/fake.png"]
    stored = list((migrated.data_dir / "images").rglob("*.*"))
    assert len(stored) == 1  # only the good photo was copied
    assert len(list((migrated.data_dir / "thumbs").rglob("*.webp"))) == 1


def test_folder_without_species_folders_is_refused(db: Session, tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "loose.jpg").write_bytes(b"x")
    with pytest.raises(ImportFailed, match="no species folders"):
        import_folder(db, flat, tmp_path / "data")
    with pytest.raises(ImportFailed, match="is not a folder"):
        import_folder(db, tmp_path / "missing", tmp_path / "data")


def test_species_name_from_folder() -> None:
    assert species_name("Amanita_muscaria") == "Amanita muscaria"
    assert species_name("  Boletus   edulis ") == "Boletus edulis"
