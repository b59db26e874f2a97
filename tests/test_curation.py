"""Curation: DBSCAN flags the planted anomalies, eps from the knee, duplicates, the feature
cache, human decisions surviving re-runs, parameters, and the curate job through a worker."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, func, select
from support import PASSWORD, login, wait_for

from app.config import Settings
from app.db import get_engine, session_scope
from app.main import create_app
from app.models import (
    CurationRun,
    Image,
    ImageFeature,
    Job,
    JobStatus,
    ReviewEvent,
    ReviewState,
    Role,
    Species,
)
from app.services import auth, dispatch, migrations
from app.services.curation import CurationError, run_curation
from app.services.demo_data import generate_demo_dataset, read_manifest
from app.services.imports import import_folder
from app.services.jobs import JobError, validate_params
from workers.ml import dbscan
from workers.ml.duplicates import find_groups
from workers.ml.features import ColourTextureExtractor

FALLBACK = {"extractor": "fallback"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full demo dataset (8 species x 60, planted anomalies), drawn small."""
    root = tmp_path_factory.mktemp("curate") / "demo"
    generate_demo_dataset(root, per_species=60, image_size=128, seed=0)
    return root


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("curate-small") / "demo"
    generate_demo_dataset(root, per_species=16, species_count=3, image_size=64, seed=2)
    return root


@pytest.fixture
def sdb(sqlite_settings: Settings) -> Iterator[Session]:
    """A migrated single-machine database (curation rules are the same on both backends)."""
    migrations.upgrade(sqlite_settings.db_url)
    with Session(get_engine(sqlite_settings.db_url), expire_on_commit=False) as session:
        yield session


class CountingExtractor(ColourTextureExtractor):
    def __init__(self) -> None:
        self.calls: list[int] = []

    def extract(self, paths, progress=None):  # type: ignore[no-untyped-def]
        self.calls.append(len(paths))
        return super().extract(paths, progress)


# --- the headline: planted anomalies are found ---------------------------------------------


def test_flags_planted_anomalies(sdb: Session, sqlite_settings: Settings, demo: Path) -> None:
    import_folder(sdb, demo, sqlite_settings.data_dir)
    sdb.commit()
    steps: list[float] = []
    report = run_curation(sdb, sqlite_settings, FALLBACK, progress=lambda f, t: steps.append(f))
    assert steps[-1] == 1.0 and steps == sorted(steps)
    assert report.extractor == "colour-texture@1" and report.images == 480

    manifest = read_manifest(demo)
    sha_of = {}
    from app.services.photos import sha256_file

    for item in manifest.images:
        sha_of[sha256_file(manifest.path_of(item))] = item
    planted = {sha for sha, item in sha_of.items() if item.anomaly}
    flagged = set(sdb.exec(select(Image.sha256).where(col(Image.flagged).is_(True))).all())
    hits = planted & flagged
    recall, precision = len(hits) / len(planted), len(hits) / max(len(flagged), 1)
    missed = sorted(sha_of[s].anomaly or "" for s in planted - flagged)
    print(
        f"\ncuration on the demo set (fallback extractor): planted {len(planted)}, flagged "
        f"{len(flagged)}, hits {len(hits)}, recall {recall:.2f}, precision {precision:.2f}, "
        f"missed {missed}"
    )
    assert recall >= 0.8, missed
    assert precision >= 0.5

    run = sdb.get(CurationRun, report.run_id)
    assert run is not None and run.extractor == "colour-texture@1"
    assert run.params["min_samples"] == 5 and run.params["eps"] is None
    stats = run.stats
    assert stats["flagged"] == len(flagged) and len(stats["species"]) == 8
    entry = next(iter(stats["species"].values()))
    assert stats["species"][str(entry["species_id"])] is entry
    assert entry["status"] == "clustered" and entry["eps_source"] == "knee"
    assert 0 < len(entry["k_distance"]) == len(entry["k_distance_ranks"]) <= 200
    assert entry["k_distance"] == sorted(entry["k_distance"])
    assert max(entry["k_distance"]) >= entry["eps"] >= min(entry["k_distance"])
    projection = entry["projection"]
    assert len(projection) == entry["images"] and not entry["projection_sampled"]
    assert sum(row[3] for row in projection) == entry["flagged"]
    # Every photo carries the run's opinion; the score orders flagged photos first.
    images = sdb.exec(select(Image)).all()
    assert {i.curation_run_id for i in images} == {run.id}
    assert all(i.phash and len(i.phash) == 16 for i in images)
    lowest_flagged = min(i.anomaly_score for i in images if i.flagged)
    assert lowest_flagged > 1.0  # noise is never a core point
    assert all(i.review_state == ReviewState.unreviewed for i in images)


# --- the pieces ----------------------------------------------------------------------------


def test_knee_on_synthetic_curves() -> None:
    x = np.arange(100)
    bend = np.where(x < 80, 1.0 + 0.01 * x, 1.8 + 0.5 * (x - 80))  # flat, then steep at 80
    assert abs(dbscan.find_knee(bend) - 80) <= 2
    hockey = np.exp(x / 10.0)
    knee = dbscan.find_knee(hockey)
    assert 60 <= knee <= 95
    assert dbscan.find_knee(np.linspace(0, 1, 50)) == 49  # straight: no knee
    assert dbscan.find_knee(np.ones(20)) == 19  # flat
    assert dbscan.find_knee(np.array([3.0, 1.0])) == 1
    with pytest.raises(ValueError):
        dbscan.find_knee(np.array([]))


def test_cluster_finds_outliers_and_scores_them() -> None:
    rng = np.random.default_rng(0)
    blob = rng.normal(0, 1, size=(80, 6))
    outliers = rng.normal(0, 1, size=(4, 6)) + 12
    outliers[1] -= 24
    result = dbscan.cluster(np.vstack([blob, outliers]), min_samples=5)
    assert result.flagged[-4:].all() and result.flagged[:80].sum() <= 4
    assert (result.scores[-4:] > result.scores[:80].max()).all()
    assert result.eps_source == "knee" and result.knee_index is not None
    assert result.projection.shape == (84, 2)

    given = dbscan.cluster(np.vstack([blob, outliers]), min_samples=5, eps=1e6)
    assert given.eps == 1e6 and given.eps_source == "given" and not given.flagged.any()
    reduced = dbscan.cluster(np.vstack([blob, outliers]), min_samples=5, pca_components=3)
    assert reduced.dims == 3 and reduced.flagged[-4:].all()
    with pytest.raises(ValueError, match="too few"):
        dbscan.cluster(blob[:5], min_samples=5)
    with pytest.raises(ValueError, match="pca_components"):
        dbscan.cluster(blob, pca_components=7)


def test_duplicate_groups_and_conflicts() -> None:
    base = "f0f0f0f0f0f0f0f0"
    near = "f0f0f0f0f0f0f0f1"  # 1 bit away
    far = "0f0f0f0f0f0f0f0f"
    groups = find_groups([1, 2, 3, 4], [10, 10, 20, 10], [base, near, base, far], threshold=2)
    assert len(groups) == 1
    assert groups[0].image_ids == (1, 2, 3) and groups[0].conflict
    assert groups[0].as_dict()["kind"] == "conflict"
    same = find_groups([1, 2], [10, 10], [base, near], threshold=2)
    assert same[0].as_dict()["kind"] == "duplicate"
    assert find_groups([1, 2], [10, 10], [base, near], threshold=0) == []


def test_features_are_upright_and_fixed_size(tmp_path: Path) -> None:
    from PIL import Image as PILImage

    picture = np.zeros((40, 80, 3), dtype=np.uint8)
    picture[:, :40] = (200, 30, 30)
    plain = tmp_path / "plain.jpg"
    PILImage.fromarray(picture).save(plain)
    rotated = tmp_path / "rotated.jpg"
    exif = PILImage.Exif()
    exif[0x0112] = 6  # stored sideways; viewers rotate it 90 degrees clockwise
    PILImage.fromarray(np.rot90(picture, 1).copy()).save(rotated, exif=exif)
    extractor = ColourTextureExtractor()
    vectors = extractor.extract([plain, rotated])
    assert vectors.shape == (2, extractor.dims) and vectors.dtype == np.float32
    assert np.abs(vectors[0] - vectors[1]).max() < 0.2  # same picture once upright
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    with pytest.raises(ValueError, match="not a readable image"):
        extractor.extract([broken])


# --- re-runs, the cache, conflicts, parameters ---------------------------------------------


def test_rerun_keeps_human_decisions_and_uses_the_cache(
    sdb: Session, sqlite_settings: Settings, small: Path
) -> None:
    import_folder(sdb, small, sqlite_settings.data_dir)
    sdb.commit()
    spy = CountingExtractor()
    first = run_curation(sdb, sqlite_settings, FALLBACK, extractor=spy)
    assert spy.calls and sum(spy.calls) == 48 and first.features_computed == 48
    assert sdb.exec(select(func.count()).select_from(ImageFeature)).one() == 48

    images = sdb.exec(select(Image).order_by(col(Image.id))).all()
    decisions = {images[0].id: ReviewState.kept, images[1].id: ReviewState.excluded}
    for image in images[:2]:
        sdb.add(
            ReviewEvent(
                image_id=image.id,
                decision=decisions[image.id],
                previous_state=image.review_state,
                curation_run_id=first.run_id,
            )
        )
        image.review_state = decisions[image.id]
        sdb.add(image)  # fmt: skip
    sdb.commit()
    events_before = [(e.id, e.decision) for e in sdb.exec(select(ReviewEvent)).all()]

    spy.calls.clear()
    second = run_curation(sdb, sqlite_settings, FALLBACK, extractor=spy)
    assert spy.calls == [] and second.features_cached == 48 and second.features_computed == 0
    assert second.run_id != first.run_id
    sdb.expire_all()
    for image_id, state in decisions.items():
        image = sdb.get(Image, image_id)
        assert image.review_state == state and image.curation_run_id == second.run_id
    assert [(e.id, e.decision) for e in sdb.exec(select(ReviewEvent)).all()] == events_before


def test_duplicate_across_species_is_a_conflict(
    sdb: Session, sqlite_settings: Settings, small: Path, tmp_path: Path
) -> None:
    root = tmp_path / "photos"
    shutil.copytree(small, root)
    (root / "manifest.csv").unlink()
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    stray = sorted(folders[0].glob("*.jpg"))[3]
    # The same picture, re-encoded, filed under another species: a label conflict.
    from PIL import Image as PILImage

    with PILImage.open(stray) as picture:
        picture.save(folders[1] / "stray.jpg", quality=80)
    import_folder(sdb, root, sqlite_settings.data_dir)
    sdb.commit()
    report = run_curation(sdb, sqlite_settings, FALLBACK)
    assert report.conflicts == 1
    run = sdb.get(CurationRun, report.run_id)
    conflicts = [g for g in run.stats["duplicates"]["items"] if g["kind"] == "conflict"]
    assert len(conflicts) == 1 and len(conflicts[0]["species_ids"]) == 2
    paths = {sdb.get(Image, i).source_ref.rsplit("/", 1)[-1] for i in conflicts[0]["image_ids"]}
    assert paths == {stray.name, "stray.jpg"}

    # Curating only the second species still sees the conflict with the first.
    name = sdb.get(Species, conflicts[0]["species_ids"][1]).scientific_name
    only = run_curation(sdb, sqlite_settings, {**FALLBACK, "species": [name]})
    assert only.conflicts == 1 and only.images == 17

    # The review page shows the run (and its extractor) and the conflict, with both photos.
    auth.create_user(sdb, "cora", PASSWORD, Role.curator)
    sdb.commit()
    with TestClient(create_app(sqlite_settings)) as client:
        login(client, "cora", PASSWORD)
        html = client.get("/review").text
    assert f"Latest run #{only.run_id}" in html and "<code>colour-texture@1</code>" in html
    panel = html[html.index("Label conflicts") :]
    for image_id in conflicts[0]["image_ids"]:
        assert f'href="/images/{image_id}"' in panel


def test_curation_can_be_started_from_the_review_page(
    sdb: Session, sqlite_settings: Settings
) -> None:
    auth.create_user(sdb, "cora", PASSWORD, Role.curator)
    auth.create_user(sdb, "vic", PASSWORD, Role.viewer)
    sdb.commit()
    with TestClient(create_app(sqlite_settings)) as client:
        csrf = login(client, "vic", PASSWORD)
        assert 'id="run-curation"' not in client.get("/review").text
        assert client.post("/review/curate", data={"csrf_token": csrf}).status_code == 403
        client.cookies.clear()
        csrf = login(client, "cora", PASSWORD)
        assert "No curation run yet" in client.get("/review").text
        started = client.post("/review/curate", data={"csrf_token": csrf}, follow_redirects=False)
    assert started.status_code == 303
    job = sdb.exec(select(Job)).one()
    assert (job.kind, job.queue, started.headers["location"]) == (
        "curate",
        "gpu",
        f"/jobs/{job.id}",
    )


def test_parameters_are_honoured(sdb: Session, sqlite_settings: Settings, small: Path) -> None:
    import_folder(sdb, small, sqlite_settings.data_dir)
    sdb.commit()
    names = sorted(sdb.exec(select(Species.scientific_name)).all())
    report = run_curation(
        sdb, sqlite_settings,
        {**FALLBACK, "species": names[:2], "min_samples": 4, "eps": 1000.0, "pca_components": 8},
    )  # fmt: skip
    assert report.images == 32 and report.flagged == 0
    run = sdb.get(CurationRun, report.run_id)
    for entry in run.stats["species"].values():
        assert (entry["eps"], entry["eps_source"]) == (1000.0, "given")
        assert (entry["min_samples"], entry["dims"]) == (4, 8) and entry["knee_index"] is None
    untouched = sdb.exec(select(Image).join(Species).where(Species.scientific_name == names[2]))
    assert all(i.curation_run_id is None for i in untouched)

    tiny = run_curation(sdb, sqlite_settings, {**FALLBACK, "eps": 1e-3, "species": names[:1]})
    assert tiny.flagged == 16  # nothing is a core point at so small an eps

    skipped = run_curation(sdb, sqlite_settings, {**FALLBACK, "min_samples": 16})
    assert sorted(skipped.skipped_species) == names and skipped.flagged == 0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"species": ["Nonexistent fungus"]}, "unknown species: Nonexistent fungus"),
        ({"species_ids": [999]}, "unknown species id"),
        ({"min_samples": 1}, "min_samples"),
        ({"eps": -1}, "eps"),
        ({"pca_components": 500}, "pca_components=500"),
        ({"extractor": "magic"}, "extractor"),
        ({"colour": "red"}, "colour"),
        ({"extractor": "keras"}, "keras extractor needs"),
    ],
)
def test_bad_parameters_are_refused(
    sdb: Session, sqlite_settings: Settings, small: Path, params: dict, message: str
) -> None:
    import_folder(sdb, small, sqlite_settings.data_dir)
    sdb.commit()
    with pytest.raises(CurationError, match=message):
        run_curation(sdb, sqlite_settings, params)
    assert sdb.exec(select(func.count()).select_from(CurationRun)).one() == 0
    assert all(i.curation_run_id is None for i in sdb.exec(select(Image)).all())


def test_job_parameters() -> None:
    queue, params = validate_params("curate", None, {})
    assert queue == "gpu" and params["min_samples"] == 5 and params["extractor"] == "auto"
    for bad in ({"min_samples": 0}, {"eps": 0}, {"unknown": 1}, {"duplicate_threshold": 99}):
        with pytest.raises(JobError, match="invalid parameters for a curate job"):
            validate_params("curate", None, bad)
    with pytest.raises(JobError, match="runs on queue gpu"):
        validate_params("curate", "io", {})


# --- through a real worker ---------------------------------------------------------------


@pytest.mark.integration
def test_curate_job_through_a_gpu_worker(pg_settings: Settings, small: Path, start_worker) -> None:  # type: ignore[no-untyped-def]
    migrations.upgrade(pg_settings.db_url)
    with session_scope(pg_settings.db_url) as session:
        import_folder(session, small, pg_settings.data_dir)
    start_worker(pg_settings, "gpu")
    with session_scope(pg_settings.db_url) as session:
        job = dispatch.submit(session, pg_settings, "curate", params={"extractor": "fallback"})
        job_id = job.id

    def finished() -> Job | None:
        with session_scope(pg_settings.db_url) as session:
            row = session.get(Job, job_id)
            return row if row and JobStatus(row.status).finished else None

    done = wait_for(finished, 120, what="the curate job to finish")
    assert done.status == JobStatus.succeeded, done.error
    assert done.result["images"] == 48 and done.result["extractor"] == "colour-texture@1"
    with session_scope(pg_settings.db_url) as session:
        run = session.exec(select(CurationRun)).one()
        assert run.job_id == job_id and len(run.stats["species"]) == 3
        images = session.exec(select(Image)).all()
        assert {i.curation_run_id for i in images} == {run.id}
        assert session.exec(select(func.count()).select_from(ImageFeature)).one() == 48
