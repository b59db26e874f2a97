"""Zip imports: unsafe entries refused whole, zip bombs bounded, uploads size-bounded, atomic."""

from __future__ import annotations

import html
import io
import stat
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select
from support import PASSWORD, login, wait_for

from app.config import Settings
from app.db import session_scope
from app.main import create_app
from app.models import Image, Job, JobStatus, Role, Species
from app.services import auth, dispatch
from app.services.demo_data import generate_demo_dataset
from app.services.imports import import_folder
from app.services.zip_import import (
    ZipLimits,
    ZipRefused,
    check_zip,
    extract_zip,
    import_zip,
    uploads_dir,
)

LIMITS = ZipLimits(max_entries=1000, max_bytes=50 * 1024 * 1024)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[bytes]]:
    """A few real JPEGs per species folder name, from the demo generator."""
    root = tmp_path_factory.mktemp("zipdemo") / "photos"
    generate_demo_dataset(root, per_species=3, species_count=2, image_size=64, seed=3)
    return {
        folder.name: [p.read_bytes() for p in sorted(folder.glob("*.jpg"))]
        for folder in sorted(root.iterdir())
        if folder.is_dir()
    }


def make_zip(entries: Iterable[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def layout(photos: dict[str, list[bytes]], prefix: str = "") -> list[tuple[str, bytes]]:
    return [
        (f"{prefix}{folder}/{i:02d}.jpg", data)
        for folder, images in photos.items()
        for i, data in enumerate(images)
    ]


def _count(db: Session, model: type) -> int:
    return db.exec(select(func.count()).select_from(model)).one()


def _text(response: httpx.Response) -> str:
    return html.unescape(response.text)


def _write(tmp_path: Path, data: bytes, name: str = "upload.zip") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def _nothing_left(data_dir: Path) -> None:
    """No upload or extraction folder left, no stored photo, no thumbnail."""
    assert _files(uploads_dir(data_dir)) == []
    assert not list(uploads_dir(data_dir).glob(".extract-*"))
    assert _files(data_dir / "images") == []
    assert _files(data_dir / "thumbs") == []


# --- refusals: the whole zip, nothing imported -------------------------------------------------


@pytest.mark.parametrize(
    ("evil", "says"),
    [
        ("../evil.jpg", "'../evil.jpg' points outside"),
        ("Amanita_muscaria/../../evil.jpg", "points outside"),
        ("..\\evil.jpg", "points outside"),
        ("/tmp/evil.jpg", "'/tmp/evil.jpg' is an absolute path"),
        ("C:\\evil.jpg", "is an absolute path"),
    ],
)
def test_entry_outside_the_folder_refuses_the_whole_zip(
    db: Session, migrated: Settings, photos: dict, tmp_path: Path, evil: str, says: str
) -> None:
    good = layout(photos)
    zipped = _write(tmp_path, make_zip([*good[:2], (evil, good[0][1]), *good[2:]]))
    with pytest.raises(ZipRefused, match=says):
        import_zip(db, zipped, migrated.data_dir, label="t", limits=LIMITS)
    assert _count(db, Image) == 0 and _count(db, Species) == 0
    _nothing_left(migrated.data_dir)
    assert not (migrated.data_dir.parent / "evil.jpg").exists()
    assert not (uploads_dir(migrated.data_dir).parent / "evil.jpg").exists()
    assert not Path("/tmp/evil.jpg").exists()


def test_symlink_entry_is_refused(db: Session, migrated: Settings, photos, tmp_path) -> None:
    link = zipfile.ZipInfo("Amanita_muscaria/passwd.jpg")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    zipped = _write(tmp_path, make_zip([*layout(photos), (link, b"/etc/passwd")]))
    with pytest.raises(ZipRefused, match=r"'Amanita_muscaria/passwd\.jpg' is a symbolic link"):
        import_zip(db, zipped, migrated.data_dir, label="t", limits=LIMITS)
    assert _count(db, Image) == 0
    _nothing_left(migrated.data_dir)


def test_too_many_entries_is_refused(tmp_path: Path, photos) -> None:
    entries = [(f"Amanita_muscaria/{i}.txt", b"x") for i in range(30)]
    zipped = _write(tmp_path, make_zip(entries))
    with pytest.raises(ZipRefused, match="30 entries; at most 20"):
        check_zip(zipped, ZipLimits(max_entries=20, max_bytes=LIMITS.max_bytes))


def test_zip_bomb_is_refused_before_extracting(tmp_path: Path) -> None:
    # 64 MiB of zeros compresses to ~64 KiB: the ratio of a (small) zip bomb.
    bomb = make_zip([("Amanita_muscaria/bomb.jpg", bytes(64 * 1024 * 1024))])
    assert len(bomb) < 1024 * 1024
    zipped = _write(tmp_path, bomb)
    dest = tmp_path / "out"
    with pytest.raises(ZipRefused, match=r"unpack to 64\.0 MiB; at most 16\.0 MiB"):
        extract_zip(zipped, dest, ZipLimits(max_entries=10, max_bytes=16 * 1024 * 1024))
    assert not dest.exists()


def test_not_a_zip_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ZipRefused, match="not a readable zip"):
        check_zip(_write(tmp_path, b"PK\x03\x04 not really"), LIMITS)


# --- what is accepted ---------------------------------------------------------------------------


def test_non_images_are_reported_and_good_photos_imported(
    db: Session, migrated: Settings, photos, tmp_path
) -> None:
    entries = [
        *layout(photos),
        ("Amanita_muscaria/notes.txt", b"field notes"),
        ("Amanita_muscaria/fake.jpg", b"not a jpeg at all"),
        ("__MACOSX/Amanita_muscaria/._00.jpg", b"resource fork"),
        ("Amanita_muscaria/.DS_Store", b"finder"),
    ]
    zipped = _write(tmp_path, make_zip(entries))
    report = import_zip(db, zipped, migrated.data_dir, label="zip/a", limits=LIMITS)
    reasons = dict(report.rejected)
    assert report.imported == 6 and report.species_created == 2
    assert set(reasons) == {"Amanita_muscaria/notes.txt", "Amanita_muscaria/fake.jpg"}
    assert "not an image type" in reasons["Amanita_muscaria/notes.txt"]
    assert "not a readable image" in reasons["Amanita_muscaria/fake.jpg"]
    assert _count(db, Image) == 6
    assert list(uploads_dir(migrated.data_dir).iterdir()) == []  # extraction removed
    refs = set(db.exec(select(Image.source_ref)).all())
    assert "zip/a/Amanita_muscaria/00.jpg" in refs

    again = import_zip(db, zipped, migrated.data_dir, label="zip/a", limits=LIMITS)
    assert (again.imported, again.already_present) == (0, 6)


def test_single_wrapping_folder_is_unwrapped(db: Session, migrated: Settings, photos, tmp_path):
    zipped = _write(tmp_path, make_zip(layout(photos, prefix="my-photos/")))
    report = import_zip(db, zipped, migrated.data_dir, label="w", limits=LIMITS)
    assert report.imported == 6 and report.rejected == []
    names = set(db.exec(select(Species.scientific_name)).all())
    assert names == {"Amanita muscaria", "Boletus edulis"}


def test_zip_without_species_folders_is_refused(db: Session, migrated: Settings, photos, tmp_path):
    data = next(iter(photos.values()))[0]
    zipped = _write(tmp_path, make_zip([("loose.jpg", data)]))
    with pytest.raises(ZipRefused, match="no species folders"):
        import_zip(db, zipped, migrated.data_dir, label="l", limits=LIMITS)
    _nothing_left(migrated.data_dir)


def test_atomic_import_leaves_nothing_when_it_fails_midway(
    db: Session, migrated: Settings, photos, tmp_path
) -> None:
    root = tmp_path / "folder"
    for name, data in layout(photos):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)

    def explode(done: int, total: int) -> None:
        raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        import_folder(db, root, migrated.data_dir, progress=explode, atomic=True)
    assert _count(db, Image) == 0 and _count(db, Species) == 0
    _nothing_left(migrated.data_dir)
    # The same folder imports fine afterwards.
    assert import_folder(db, root, migrated.data_dir, atomic=True).imported == 6


# --- the upload route ---------------------------------------------------------------------------


def _upload(client: TestClient, token: str | None, data: bytes, name: str = "photos.zip"):
    headers = {"X-CSRF-Token": token} if token else {}
    return client.post(
        "/imports", files={"file": (name, data, "application/zip")}, headers=headers,
        follow_redirects=False,
    )  # fmt: skip


@pytest.fixture
def small_limit_client(migrated: Settings) -> Iterator[TestClient]:
    settings = migrated.model_copy(update={"max_upload_bytes": 20_000})
    with TestClient(create_app(settings), base_url="http://testserver") as c:
        yield c


def test_upload_over_the_limit_is_refused_and_nothing_kept(
    small_limit_client: TestClient, make_user: Callable, migrated: Settings
) -> None:
    make_user("ada")
    token = login(small_limit_client, "ada", PASSWORD)
    uploads = uploads_dir(migrated.data_dir)
    # Declared too large: refused before a byte of the body is read.
    big = _upload(small_limit_client, token, b"x" * 200_000)
    assert big.status_code == 413
    assert "larger than the limit of 19.5 KiB" in _text(big)
    # Declared within the form's slack, but the file itself is over: refused while streaming.
    over = _upload(small_limit_client, token, b"y" * 30_000)
    assert over.status_code == 413, over.text
    assert _files(uploads) == []
    with session_scope(migrated.db_url) as session:
        assert _count(session, Job) == 0


def test_upload_checks(client: TestClient, make_user: Callable, migrated: Settings, photos):
    make_user("ada")
    make_user("vic", Role.viewer)
    uploads = uploads_dir(migrated.data_dir)
    token = login(client, "ada", PASSWORD)

    no_header = _upload(client, None, make_zip(layout(photos)))
    assert no_header.status_code == 403 and "security token" in _text(no_header)
    not_zip = _upload(client, token, b"just text")
    assert not_zip.status_code == 422 and "not a readable zip" in _text(not_zip)
    evil = _upload(client, token, make_zip([*layout(photos), ("../evil.jpg", b"x")]))
    assert evil.status_code == 422 and "'../evil.jpg' points outside" in _text(evil)
    missing = client.post(
        "/imports", files={"other": ("a.zip", b"x")}, headers={"X-CSRF-Token": token}
    )
    assert missing.status_code == 422 and "choose a file" in _text(missing)
    assert _files(uploads) == []

    folder = client.post("/imports/folder", data={"folder": "relative/path", "csrf_token": token})
    assert folder.status_code == 422 and "absolute path" in _text(folder)
    folder = client.post("/imports/folder", data={"folder": "/no/such/dir", "csrf_token": token})
    assert folder.status_code == 422 and "there is no folder at /no/such/dir" in _text(folder)

    client.cookies.clear()
    viewer_token = login(client, "vic", PASSWORD)
    denied = _upload(client, viewer_token, make_zip(layout(photos)))
    assert denied.status_code == 403 and "needs the curator role" in _text(denied)
    assert _files(uploads) == []
    with session_scope(migrated.db_url) as session:
        assert _count(session, Job) == 0


# --- the job, through a real worker on PostgreSQL -----------------------------------------------


def _finished(settings: Settings, job_id: int) -> Job | None:
    with session_scope(settings.db_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job if JobStatus(job.status).finished else None


@pytest.mark.integration
def test_upload_imported_by_a_worker(
    migrated: Settings, start_worker: Callable, photos, tmp_path: Path
) -> None:
    """On PostgreSQL + Redis, and on SQLite (where progress is written from another connection
    while the all-or-nothing import holds its rows back)."""
    server = migrated
    with session_scope(server.db_url) as session:
        auth.create_user(session, "ada", PASSWORD, Role.curator)
    worker = start_worker(server, "io", name="io@zip")
    uploads = uploads_dir(server.data_dir)
    entries = [*layout(photos, prefix="wrapped/"), ("wrapped/Boletus_edulis/readme.txt", b"hi")]

    with TestClient(create_app(server), base_url="http://testserver") as client:
        token = login(client, "ada", PASSWORD)
        response = _upload(client, token, make_zip(entries), name="field trip.zip")
        assert response.status_code == 303, response.text
        job_id = int(response.headers["location"].rsplit("/", 1)[1])
        job = wait_for(lambda: _finished(server, job_id), 60, what="the import job")
        assert job.status == JobStatus.succeeded, (job.error, worker.output())
        assert job.result["imported"] == 6
        assert job.result["rejected"] == [
            {"path": "Boletus_edulis/readme.txt", "reason": "not an image type we import (.txt)"}
        ]
        assert job.params["label"].startswith("upload/field trip.zip@")
        assert list(uploads.iterdir()) == []  # the zip and its extraction are gone
        page = client.get("/species").text
        assert "Amanita muscaria" in page and "Boletus edulis" in page

    # A zip that only the worker sees (queued by another client) is refused there, whole.
    bad = make_zip([*layout(photos), ("../../evil.jpg", b"x")])
    name = "0" * 32 + ".zip"
    (uploads / name).write_bytes(bad)
    with session_scope(server.db_url) as session:
        job = dispatch.submit(session, server, "import", params={"upload": name, "label": "bad"})
        bad_id = job.id
    failed = wait_for(lambda: _finished(server, bad_id), 60, what="the bad import")
    assert failed.status == JobStatus.failed
    assert "'../../evil.jpg' points outside" in failed.error
    assert list(uploads.iterdir()) == []
    with session_scope(server.db_url) as session:
        assert _count(session, Image) == 6  # only the first import's photos
