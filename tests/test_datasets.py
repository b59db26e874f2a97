"""Dataset versions: the grouped, stratified split (property tests), freezing, export, routes."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, col, select
from support import PASSWORD, login

from app.config import Settings
from app.models import DatasetItem, DatasetVersion, Image, Job, ReviewState, Species
from app.services import dataset_export, datasets
from app.services.datasets import Candidate, DatasetError, DatasetPolicy, Inclusion
from app.services.demo_data import generate_demo_dataset
from app.services.imports import import_folder

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}

# --- the split, as a pure function ---------------------------------------------------------


@st.composite
def photo_sets(draw: st.DrawFn) -> list[Candidate]:
    """Photos of a few species; observations hold 1-4 photos; some photos have none."""
    candidates: list[Candidate] = []
    next_image, next_obs = 1, 1
    for s in range(draw(st.integers(1, 5))):
        for _ in range(draw(st.integers(0, 12))):
            size = draw(st.integers(1, 4))
            grouped = draw(st.booleans())
            for _ in range(size if grouped else 1):
                obs = next_obs if grouped else None
                candidates.append(Candidate(next_image, f"Species {s}", obs))
                next_image += 1
            next_obs += 1
    return candidates


fractions_strategy = st.tuples(st.floats(0, 0.4), st.floats(0, 0.4)).map(
    lambda vt: {"train": 1 - vt[0] - vt[1], "val": vt[0], "test": vt[1]}
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(photos=photo_sets(), fractions=fractions_strategy, seed=st.integers(0, 2**31 - 1))
def test_split_properties(photos: list[Candidate], fractions: dict, seed: int) -> None:
    assignment = datasets.assign_splits(photos, fractions, seed)
    # Every photo lands in exactly one split, and only in a split with a share.
    assert sorted(assignment) == sorted(p.image_id for p in photos)
    assert all(fractions.get(s, 0) > 0 or s == "train" for s in assignment.values())
    # An observation never straddles two splits.
    by_group = defaultdict(set)
    for p in photos:
        by_group[datasets.group_key(p)].add(assignment[p.image_id])
    assert all(len(splits) == 1 for splits in by_group.values())
    # Stratified: per species, each split is within two groups' size of its share.
    for species in {p.species for p in photos}:
        mine = [p for p in photos if p.species == species]
        largest = max(Counter(datasets.group_key(p) for p in mine).values())
        counts = Counter(assignment[p.image_id] for p in mine)
        for split, share in fractions.items():
            assert abs(counts[split] - share * len(mine)) <= 2 * largest + 1e-9
    # Deterministic given the seed, whatever order the photos come in.
    assert datasets.assign_splits(list(reversed(photos)), fractions, seed) == assignment


def test_split_depends_on_the_seed_and_mixed_observations_stay_whole() -> None:
    photos = [Candidate(i, f"S{i % 2}", None) for i in range(1, 101)]
    splits = {seed: datasets.assign_splits(photos, FRACTIONS, seed) for seed in range(4)}
    assert len({tuple(sorted(s.items())) for s in splits.values()}) > 1
    # One observation, two names: the group follows the species with most photos in it.
    mixed = [Candidate(1, "A", 7), Candidate(2, "A", 7), Candidate(3, "B", 7)]
    mixed += [Candidate(10 + i, "B", None) for i in range(10)]
    assignment = datasets.assign_splits(mixed, FRACTIONS, 0)
    assert len({assignment[1], assignment[2], assignment[3]}) == 1


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="training"):
        DatasetPolicy(name="x", val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError):
        DatasetPolicy(name="   ")
    assert DatasetPolicy(name="  my   set ").name == "my set"


# --- freezing on a database ----------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("datasets-demo") / "photos"
    generate_demo_dataset(root, per_species=6, image_size=64, seed=4)
    return root


@pytest.fixture
def loaded(db: Session, migrated: Settings, demo: Path) -> Session:
    """48 photos of 8 species; pairs share observations; a spread of review states."""
    import_folder(db, demo, migrated.data_dir)
    for i, image in enumerate(db.exec(select(Image).order_by(col(Image.id))).all()):
        image.observation_id = 1000 + i // 2 if i % 6 < 4 else None
        image.flagged = i % 6 == 5
        image.review_state = ReviewState.excluded if i % 12 == 0 else ReviewState.unreviewed
        if i % 4 == 1:
            image.review_state = ReviewState.kept
        db.add(image)
    db.add(Species(scientific_name="Aaa emptyus"))
    db.commit()
    return db


def _eligible(image: Image, inclusion: Inclusion) -> bool:
    if image.review_state == ReviewState.kept:
        return True
    return inclusion is Inclusion.kept_and_unflagged and (
        image.review_state == ReviewState.unreviewed and not image.flagged
    )


def test_freeze_follows_the_policy(loaded: Session) -> None:
    db = loaded
    policy = DatasetPolicy(name="v1", inclusion=Inclusion.kept_and_unflagged, min_images=4, seed=7)
    version = datasets.freeze(db, policy, user_id=None)
    items = db.exec(select(DatasetItem).where(DatasetItem.dataset_version_id == version.id)).all()
    images = {i.id: i for i in db.exec(select(Image)).all()}
    names = {s.id: s.scientific_name for s in db.exec(select(Species)).all()}

    eligible = Counter(i.species_id for i in images.values() if _eligible(i, policy.inclusion))
    included = sorted((sid for sid, n in eligible.items() if n >= 4), key=lambda s: names[s])
    assert {item.image_id for item in items} == {
        i.id for i in images.values() if _eligible(i, policy.inclusion) and i.species_id in included
    }
    # Class indices follow the sorted species names.
    assert {item.species_id: item.class_index for item in items} == {
        sid: n for n, sid in enumerate(included)
    }
    assert datasets.labels(version) == [names[s] for s in included]
    # Observations stay whole.
    by_obs = defaultdict(set)
    for item in items:
        if images[item.image_id].observation_id is not None:
            by_obs[images[item.image_id].observation_id].add(item.split)
    assert by_obs and all(len(s) == 1 for s in by_obs.values())
    # Stats match the items; skipped species are listed.
    for row in version.stats["species"]:
        counts = Counter(i.split for i in items if i.species_id == row["id"])
        assert (row["train"], row["val"], row["test"]) == (
            counts["train"], counts["val"], counts["test"],
        )  # fmt: skip
    assert version.stats["totals"]["total"] == len(items)
    skipped = {row["id"] for row in version.stats["skipped"]}
    assert skipped == {sid for sid, n in eligible.items() if n < 4}
    assert version.seed == 7 and version.policy["inclusion"] == "kept_and_unflagged"

    # The same seed on the same photos gives the same split; a name can be used once.
    again = datasets.freeze(db, policy.model_copy(update={"name": "v1 again"}), user_id=None)
    again_items = db.exec(
        select(DatasetItem).where(DatasetItem.dataset_version_id == again.id)
    ).all()
    assert {(i.image_id, i.split) for i in again_items} == {(i.image_id, i.split) for i in items}
    with pytest.raises(DatasetError, match="already"):
        datasets.freeze(db, policy, user_id=None)


def test_kept_only_and_minimum_too_high(loaded: Session) -> None:
    db = loaded
    version = datasets.freeze(
        db, DatasetPolicy(name="kept", inclusion=Inclusion.kept, min_images=1), user_id=None
    )
    items = db.exec(select(DatasetItem).where(DatasetItem.dataset_version_id == version.id)).all()
    assert items and all(db.get(Image, i.image_id).review_state == ReviewState.kept for i in items)
    with pytest.raises(DatasetError, match="no species"):
        datasets.freeze(db, DatasetPolicy(name="big", min_images=100), user_id=None)
    assert db.exec(select(DatasetVersion).where(DatasetVersion.name == "big")).first() is None


def test_export_zip_layout_and_manifest(loaded: Session, migrated: Settings) -> None:
    db = loaded
    version = datasets.freeze(db, DatasetPolicy(name="zip me", min_images=2), user_id=None)
    # A photo whose file vanished is reported, not fatal.
    gone = db.exec(select(DatasetItem).where(DatasetItem.dataset_version_id == version.id)).first()
    gone_path = migrated.data_dir / db.get(Image, gone.image_id).path
    gone_path.rename(gone_path.with_suffix(".moved"))
    report = dataset_export.export_version(db, version.id, migrated.data_dir)
    assert report.path == dataset_export.export_path(migrated.data_dir, version.id)
    assert [p.name for p in report.path.parent.iterdir()] == [report.path.name]  # no temp left
    total = version.stats["totals"]["total"]
    assert (report.photos, report.missing) == (total - 1, 1)
    with zipfile.ZipFile(report.path) as archive:
        names = archive.namelist()
        photos = [n for n in names if n.count("/") == 2]
        assert len(photos) == total - 1
        assert all(re.fullmatch(r"(train|val|test)/[A-Z][a-z]+_[a-z]+/\d+\.\w+", n) for n in photos)
        rows = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
        assert {"license", "attribution", "split", "species", "class_index"} <= set(rows[0])
        assert sorted(r["path"] for r in rows) == sorted(photos)
        labels = archive.read("labels.txt").decode().splitlines()
        assert labels == datasets.labels(version)
        assert f"image {gone.image_id}: file missing" in archive.read("missing.txt").decode()
        for row in rows:
            assert row["path"].startswith(f"{row['split']}/")
            assert labels[int(row["class_index"])] == row["species"]


# --- routes --------------------------------------------------------------------------------


@pytest.fixture
def ada(client: TestClient, make_user: Callable) -> tuple[TestClient, str]:
    make_user("ada")
    return client, login(client, "ada", PASSWORD)


def test_dataset_pages(ada: tuple[TestClient, str], loaded: Session, migrated: Settings) -> None:
    client, csrf = ada
    page = client.get("/datasets")
    assert page.status_code == 200 and "No versions yet" in page.text
    assert 'id="dataset-preview"' in page.text  # min 10 by default: more than 6 per species
    preview = client.get("/datasets/preview", params={"inclusion": "kept", "min_images": 100})
    assert "No species has 100 or more photos" in preview.text

    form = {
        "name": "first", "inclusion": "kept_and_unflagged", "min_images": "3",
        "val_fraction": "0.2", "test_fraction": "0.2", "seed": "11", "csrf_token": csrf,
    }  # fmt: skip
    created = client.post("/datasets", data=form, follow_redirects=False)
    assert created.status_code == 303, created.text
    location = created.headers["location"]
    version = loaded.exec(select(DatasetVersion).where(DatasetVersion.name == "first")).one()
    assert location == f"/datasets/{version.id}"

    duplicate = client.post("/datasets", data=form)
    assert duplicate.status_code == 422 and "already a dataset version named" in duplicate.text
    bad = client.post("/datasets", data={**form, "name": "b", "val_fraction": "0.9"})
    assert bad.status_code == 422 and "training" in bad.text

    detail = client.get(location)
    assert detail.status_code == 200
    for row in version.stats["species"]:
        match = re.search(
            rf'<tr data-species-id="{row["id"]}">.*?data-split="train">(\d+)<.*?'
            r'data-split="val">(\d+)<.*?data-split="test">(\d+)<',
            detail.text,
            re.S,
        )
        assert match and tuple(map(int, match.groups())) == (row["train"], row["val"], row["test"])
    assert "Build the zip" in detail.text
    assert client.get(f"{location}/export.zip").status_code == 404

    dataset_export.export_version(loaded, version.id, migrated.data_dir)
    download = client.get(f"{location}/export.zip")
    assert download.status_code == 200 and download.headers["content-type"] == "application/zip"
    assert "sporeprint-first-v" in download.headers["content-disposition"]
    assert zipfile.ZipFile(io.BytesIO(download.content)).testzip() is None

    started = client.post(f"{location}/export", data={"csrf_token": csrf}, follow_redirects=False)
    assert started.status_code == 303
    job = loaded.exec(select(Job).where(Job.kind == "dataset-export")).one()
    assert job.params == {"dataset_version_id": version.id}
    followed = client.get(location, headers={"HX-Request": "true", "HX-Target": "dataset-export"})
    assert followed.text.lstrip().startswith('<section id="dataset-export"')
    assert f"/jobs/{job.id}" in followed.text
    assert client.get("/datasets/99999").status_code == 404


def test_export_job_runs_on_a_worker(
    sqlite_settings: Settings, demo: Path, start_worker: Callable
) -> None:
    from support import wait_for

    from app.db import session_scope
    from app.services import dispatch, migrations

    settings = sqlite_settings
    migrations.upgrade(settings.db_url)
    with session_scope(settings.db_url) as session:
        import_folder(session, demo, settings.data_dir)
        version = datasets.freeze(session, DatasetPolicy(name="w", min_images=1), user_id=None)
        job = dispatch.submit(
            session, settings, "dataset-export", params={"dataset_version_id": version.id}
        )
    start_worker(settings, "io")

    def finished() -> Job | None:
        with session_scope(settings.db_url) as session:
            row = session.get(Job, job.id)
            return row if row.status in ("succeeded", "failed") else None

    done = wait_for(finished, 90, what="the export job")
    assert done.status == "succeeded", done.error
    assert done.result["photos"] == 48
    assert zipfile.is_zipfile(dataset_export.export_path(settings.data_dir, version.id))
