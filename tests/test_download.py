"""The photo downloader against a local photo host that misbehaves on purpose."""

from __future__ import annotations

import hashlib
import io
import random
import socket
import struct
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from photohost import PhotoHost, Route
from PIL import Image as PILImage
from sqlmodel import Session, select
from support import wait_for

from app.config import Settings
from app.db import session_scope
from app.models import DownloadState, Image, ImageSource, Job, JobStatus, Species
from app.services import dispatch, jobs
from app.services.download import (
    DownloadConfig,
    DownloadError,
    DownloadProgress,
    backoff_delay,
    download_images,
    format_duration,
    retry_after_seconds,
)
from app.services.thumbnails import thumbnail_path

FAST = DownloadConfig(
    concurrency=8,
    per_host=8,
    max_attempts=3,
    timeout=5.0,
    backoff_base=0.05,
    backoff_cap=0.2,
    batch_interval=0.2,
    stop_grace=5.0,
    threads=2,
)


def jpeg(seed: int, size: tuple[int, int] = (64, 48), exif_orientation: int | None = None) -> bytes:
    """A small, distinct JPEG (noise drawn from `seed`)."""
    rng = random.Random(seed)
    image = PILImage.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    out = io.BytesIO()
    if exif_orientation is None:
        image.save(out, "JPEG", quality=85)
    else:
        exif = PILImage.Exif()
        exif[0x0112] = exif_orientation
        image.save(out, "JPEG", quality=85, exif=exif.tobytes())
    return out.getvalue()


def huge_png(width: int, height: int) -> bytes:
    """A well-formed PNG that claims `width`x`height` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


@pytest.fixture
def host() -> Iterator[PhotoHost]:
    with PhotoHost().start() as photo_host:
        yield photo_host


def seed_images(
    session: Session, host: PhotoHost, routes: dict[str, Route], species: str = "Amanita muscaria"
) -> dict[str, int]:
    """One pending Image per route (name → image id), all of one species."""
    row = session.exec(select(Species).where(Species.scientific_name == species)).first()
    if row is None:
        row = Species(scientific_name=species)
        session.add(row)
        session.flush()
    ids: dict[str, int] = {}
    for name, route in routes.items():
        url = host.add(f"/photos/{name}", route)
        image = Image(
            species_id=row.id, source=ImageSource.inat, source_ref=f"{species}/{name}",
            source_url=url, license="cc-by", attribution="(c) someone",
        )  # fmt: skip
        session.add(image)
        session.flush()
        ids[name] = image.id
    session.commit()
    return ids


def images_by_id(settings: Settings) -> dict[int, Image]:
    with session_scope(settings.db_url) as session:
        return {image.id: image for image in session.exec(select(Image)).all()}


def leftovers(data_dir: Path) -> list[Path]:
    """Temp or partial files anywhere under the data directory."""
    return [
        p for p in data_dir.rglob("*")
        if p.is_file() and (p.name.startswith(".") or p.suffix in (".part", ".tmp"))
    ]  # fmt: skip


def stored_files(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "images").rglob("*") if p.is_file()]


def test_a_mixed_batch_ends_in_the_right_states(
    db: Session, migrated: Settings, host: PhotoHost
) -> None:
    good = {f"good{i}.jpg": Route(body=jpeg(i)) for i in range(6)}
    twin = jpeg(100)
    truncated = jpeg(101)
    known = jpeg(102)  # already stored for an imported image
    sideways = jpeg(103, exif_orientation=6)
    routes = {
        **good,
        "slow.jpg": Route(body=jpeg(7), delay=0.6),
        "sideways.jpg": Route(body=sideways),
        "missing.jpg": Route(status=404),
        "forbidden.jpg": Route(status=403),
        "gone.jpg": Route(status=410),
        "flaky.jpg": Route(body=jpeg(8), fail_first=1, fail_status=500),
        "limited.jpg": Route(body=jpeg(9), fail_first=1, fail_status=429, retry_after="1"),
        "dropped.jpg": Route(body=jpeg(10), cut_first=1),
        "broken.jpg": Route(body=jpeg(11), fail_first=99, fail_status=503),
        "truncated.jpg": Route(body=truncated[: len(truncated) // 2]),
        "page.jpg": Route(body=b"<html><body>Sign in</body></html>", content_type="text/html"),
        "empty.jpg": Route(body=b""),
        "bomb.png": Route(body=huge_png(9000, 9000), content_type="image/png"),
        "twin-a.jpg": Route(body=twin),
        "twin-b.jpg": Route(body=twin),
        "known.jpg": Route(body=known),
    }
    ids = seed_images(db, host, routes)
    species_id = db.get(Image, ids["good0.jpg"]).species_id
    imported = Image(
        species_id=species_id, source=ImageSource.import_, source_ref="old/known.jpg",
        path="images/old/known.jpg", sha256=hashlib.sha256(known).hexdigest(),
        download_state=DownloadState.done,
    )  # fmt: skip
    db.add(imported)
    db.commit()

    seen: list[DownloadProgress] = []
    report = download_images(migrated, config=FAST, progress=seen.append)

    rows = images_by_id(migrated)
    state = {name: rows[i].download_state for name, i in ids.items()}
    error = {name: rows[i].download_error for name, i in ids.items()}
    attempts = {name: rows[i].download_attempts for name, i in ids.items()}
    done = {n for n, s in state.items() if s == DownloadState.done}
    # Whichever twin finished first is stored; the other is its duplicate.
    kept, copy = sorted(["twin-a.jpg", "twin-b.jpg"], key=lambda n: state[n] != "done")
    assert done == {*good, "slow.jpg", "sideways.jpg", "flaky.jpg", "limited.jpg",
                    "dropped.jpg", kept}  # fmt: skip
    assert (report.selected, report.done, report.duplicate, report.failed, report.left) == (
        len(routes),
        12,
        2,
        8,
        0,
    )
    # Permanent failures: one try, the status in words.
    assert error["missing.jpg"] == "HTTP 404 Not Found" and attempts["missing.jpg"] == 1
    assert error["forbidden.jpg"] == "HTTP 403 Forbidden" and attempts["forbidden.jpg"] == 1
    assert error["gone.jpg"] == "HTTP 410 Gone" and host.hits["/photos/gone.jpg"] == 1
    assert error["broken.jpg"] == "HTTP 503 Service Unavailable (gave up after 3 attempts)"
    assert attempts["broken.jpg"] == 3 and host.hits["/photos/broken.jpg"] == 3
    assert error["truncated.jpg"].startswith("damaged image")
    assert error["page.jpg"] == "not an image (the server sent text/html)"
    assert error["empty.jpg"] == "empty file"
    assert error["bomb.png"] == "too large (9000x9000 pixels)"
    # Retried transient failures: a 500, a dropped connection, a 429 that waited its Retry-After.
    assert host.hits["/photos/flaky.jpg"] == 2 and attempts["flaky.jpg"] == 2
    assert host.hits["/photos/dropped.jpg"] == 2
    first, second = host.hit_times["/photos/limited.jpg"]
    assert second - first >= 0.95
    assert report.retries == 2 + 3 and report.attempts == sum(attempts.values())
    # Duplicates: named, hashed, and not stored twice.
    assert state[copy] == DownloadState.duplicate
    assert error[copy] == f"same photo as image {ids[kept]}"
    assert rows[ids[copy]].path is None
    assert rows[ids[copy]].sha256 == rows[ids[kept]].sha256
    assert state["known.jpg"] == DownloadState.duplicate
    assert error["known.jpg"] == f"same photo as image {imported.id}"

    # Stored as downloaded, content-addressed, with a thumbnail; nothing else on disk.
    for name in done:
        image = rows[ids[name]]
        body = routes[name].body
        stored = migrated.data_dir / image.path
        assert stored.read_bytes() == body
        assert image.sha256 == hashlib.sha256(body).hexdigest()
        assert image.path == f"images/Amanita_muscaria/{image.sha256[:2]}/{image.sha256}.jpg"
        assert (image.width, image.height, image.size_bytes) == (64, 48, len(body))
        assert (migrated.data_dir / thumbnail_path(image.sha256)).is_file()
        assert image.download_error is None
    assert len(stored_files(migrated.data_dir)) == len(done)
    with PILImage.open(migrated.data_dir / thumbnail_path(rows[ids["sideways.jpg"]].sha256)) as t:
        assert t.size == (48, 64)  # thumbnails apply the EXIF orientation; the original keeps it
    assert leftovers(migrated.data_dir) == []

    last = seen[-1]
    assert (last.done, last.duplicate, last.failed, last.remaining) == (12, 2, 8, 0)
    assert last.fraction == 1.0
    assert last.text().startswith("12 done · 2 duplicates · 8 failed · 0 left · ")
    assert seen[0].remaining == len(routes) and seen[0].done == 0


def test_stop_then_resume_downloads_each_photo_once(
    sqlite_settings: Settings, host: PhotoHost
) -> None:
    from app.services import migrations

    migrations.upgrade(sqlite_settings.db_url)
    with session_scope(sqlite_settings.db_url) as session:
        ids = seed_images(
            session, host, {f"p{i}.jpg": Route(body=jpeg(i), delay=0.02) for i in range(30)}
        )
    config = DownloadConfig(**{**FAST.__dict__, "concurrency": 2, "per_host": 2})

    first = download_images(
        sqlite_settings, config=config, should_stop=lambda: host.total_hits() >= 6
    )
    assert first.stopped and 6 <= first.done < 30
    assert first.left == 30 - first.done and first.failed == 0
    assert host.connections <= 2  # keep-alive: one connection per concurrent download
    rows = images_by_id(sqlite_settings)
    states = [rows[i].download_state for i in ids.values()]
    assert states.count(DownloadState.done) == first.done
    assert states.count(DownloadState.pending) == 30 - first.done
    assert leftovers(sqlite_settings.data_dir) == []
    hits_after_first = host.total_hits()

    second = download_images(sqlite_settings, config=config)
    assert (second.selected, second.done, second.stopped) == (
        30 - first.done,
        30 - first.done,
        False,
    )
    assert all(
        image.download_state == DownloadState.done
        for image in images_by_id(sqlite_settings).values()
    )
    # Every photo was fetched exactly once over both runs.
    assert set(host.hits.values()) == {1} and len(host.hits) == 30
    assert host.total_hits() == hits_after_first + second.done
    assert len(stored_files(sqlite_settings.data_dir)) == 30

    third = download_images(sqlite_settings, config=config)
    assert (third.selected, third.done) == (0, 0)
    assert host.total_hits() == 30


def test_cancel_abandons_in_flight_and_waiting_downloads_cleanly(
    sqlite_settings: Settings, host: PhotoHost
) -> None:
    from app.services import migrations

    migrations.upgrade(sqlite_settings.db_url)
    routes = {
        "quick.jpg": Route(body=jpeg(1)),
        # Half the body, then a long pause: it is mid-download when the stop comes.
        "trickle.jpg": Route(body=jpeg(2, size=(256, 256)), trickle=5.0),
        # Waiting 30 s to retry when the stop comes.
        "busy.jpg": Route(body=jpeg(3), fail_first=9, fail_status=503, retry_after="30"),
    }
    with session_scope(sqlite_settings.db_url) as session:
        ids = seed_images(session, host, routes)
    config = DownloadConfig(**{**FAST.__dict__, "stop_grace": 0.3})

    def stop() -> bool:
        return host.hits["/photos/trickle.jpg"] >= 1 and host.hits["/photos/busy.jpg"] >= 1

    report = download_images(sqlite_settings, config=config, should_stop=stop)
    assert report.stopped and report.elapsed_s < 4
    rows = images_by_id(sqlite_settings)
    assert rows[ids["quick.jpg"]].download_state == DownloadState.done
    assert rows[ids["trickle.jpg"]].download_state == DownloadState.pending
    assert rows[ids["busy.jpg"]].download_state == DownloadState.pending
    assert rows[ids["busy.jpg"]].download_attempts == 1  # the try it made is counted
    assert report.left == 2
    assert leftovers(sqlite_settings.data_dir) == []
    assert len(stored_files(sqlite_settings.data_dir)) == 1


def test_retry_failed_species_filter_and_limit(sqlite_settings: Settings, host: PhotoHost) -> None:
    from app.services import migrations

    migrations.upgrade(sqlite_settings.db_url)
    with session_scope(sqlite_settings.db_url) as session:
        a = seed_images(
            session, host, {"a1.jpg": Route(body=jpeg(1)), "a2.jpg": Route(body=jpeg(2))}
        )
        flaky = Route(body=jpeg(3), fail_first=2, fail_status=502)
        b = seed_images(
            session, host, {"b1.jpg": flaky, "b2.jpg": Route(body=jpeg(4))}, "Boletus edulis"
        )
        species_a = session.get(Image, a["a1.jpg"]).species_id
        species_b = session.get(Image, b["b1.jpg"]).species_id
    config = DownloadConfig(**{**FAST.__dict__, "max_attempts": 2})

    with pytest.raises(DownloadError, match=r"unknown species id: \[999\]"):
        download_images(sqlite_settings, species_ids=[species_a, 999], config=config)
    assert (
        download_images(sqlite_settings, species_ids=[species_a], limit=1, config=config).done == 1
    )
    assert download_images(sqlite_settings, species_ids=[species_a], config=config).done == 1
    report = download_images(sqlite_settings, species_ids=[species_b], config=config)
    assert (report.done, report.failed) == (1, 1)
    rows = images_by_id(sqlite_settings)
    assert rows[b["b1.jpg"]].download_error == "HTTP 502 Bad Gateway (gave up after 2 attempts)"

    assert download_images(sqlite_settings, config=config).selected == 0  # failed stays failed
    again = download_images(sqlite_settings, retry_failed=True, config=config)
    assert (again.selected, again.done) == (1, 1)
    image = images_by_id(sqlite_settings)[b["b1.jpg"]]
    assert image.download_state == DownloadState.done and image.download_error is None
    assert image.download_attempts == 3  # two in the first run, one in the retry
    assert image.path.startswith("images/Boletus_edulis/")


def test_timeouts_and_refused_connections_are_retried_then_fail(
    sqlite_settings: Settings, host: PhotoHost
) -> None:
    from app.services import migrations

    migrations.upgrade(sqlite_settings.db_url)
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with session_scope(sqlite_settings.db_url) as session:
        ids = seed_images(session, host, {"stuck.jpg": Route(body=jpeg(1), delay=2.0)})
        species_id = session.get(Image, ids["stuck.jpg"]).species_id
        refused = Image(
            species_id=species_id, source=ImageSource.inat, source_ref="refused",
            source_url=f"http://127.0.0.1:{closed_port}/photo.jpg",
        )  # fmt: skip
        session.add(refused)
        session.flush()
        refused_id = refused.id
    config = DownloadConfig(**{**FAST.__dict__, "max_attempts": 2, "timeout": 0.3})

    report = download_images(sqlite_settings, config=config)
    rows = images_by_id(sqlite_settings)
    assert (report.failed, report.retries) == (2, 2)
    assert rows[ids["stuck.jpg"]].download_error == (
        "timed out (ReadTimeout) (gave up after 2 attempts)"
    )
    assert host.hits["/photos/stuck.jpg"] == 2
    assert rows[refused_id].download_error.startswith("connection failed (ConnectError")
    assert rows[refused_id].download_error.endswith("(gave up after 2 attempts)")
    assert rows[refused_id].download_attempts == 2
    assert leftovers(sqlite_settings.data_dir) == []


def test_many_copies_of_one_photo_are_stored_once(
    sqlite_settings: Settings, host: PhotoHost
) -> None:
    from app.services import migrations

    migrations.upgrade(sqlite_settings.db_url)
    same = jpeg(7)
    with session_scope(sqlite_settings.db_url) as session:
        ids = seed_images(session, host, {f"copy{i}.jpg": Route(body=same) for i in range(8)})
    report = download_images(sqlite_settings, config=FAST)
    assert (report.done, report.duplicate) == (1, 7)
    rows = images_by_id(sqlite_settings)
    (kept,) = [i for i in ids.values() if rows[i].download_state == DownloadState.done]
    for image_id in set(ids.values()) - {kept}:
        assert rows[image_id].download_error == f"same photo as image {kept}"
        assert (rows[image_id].width, rows[image_id].height) == (64, 48)
    assert len(stored_files(sqlite_settings.data_dir)) == 1


def test_retry_after_backoff_and_progress_text() -> None:
    now = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("1") == 1.0
    assert retry_after_seconds(" 120 ") == 120.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert retry_after_seconds(format_datetime(now - timedelta(hours=1), usegmt=True), now) == 0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None

    rng = random.Random(0)
    delays = [backoff_delay(attempt, FAST, rng) for attempt in (1, 2, 3, 8) for _ in range(200)]
    assert all(0 <= d <= FAST.backoff_cap for d in delays)
    assert max(delays[:200]) <= FAST.backoff_base  # first retry: up to base
    assert len(set(delays)) > 700  # jittered, not a fixed schedule

    progress = DownloadProgress(412, 0, 3, 85, 500, 11.1, 37.2, 85 / 37.2)
    assert progress.text() == "412 done · 3 failed · 85 left · 37.2 img/s · ETA 2 s"
    assert progress.fraction == pytest.approx(415 / 500)
    assert format_duration(200) == "3 min 20 s" and format_duration(3900) == "1 h 5 min"


def test_download_job_body_is_cancelled_by_request(
    sqlite_settings: Settings, host: PhotoHost
) -> None:
    """The job body turns a cancel request (seen at a progress report) into a stop."""
    from app.services import migrations
    from workers.tasks.base import JobCancelled, JobContext
    from workers.tasks.download import download_body

    migrations.upgrade(sqlite_settings.db_url)
    with session_scope(sqlite_settings.db_url) as session:
        ids = seed_images(
            session, host, {f"s{i}.jpg": Route(body=jpeg(i), delay=0.3) for i in range(200)}
        )
        job = jobs.create_job(session, "download", params={})
        jobs.start_job(
            session, job.id, worker_name="t@h", worker_host="h", worker_pid=1, task_id=None
        )
        jobs.request_cancel(session, job.id)
    ctx = JobContext(sqlite_settings, job.id, {})
    with pytest.raises(JobCancelled):
        download_body(ctx)
    rows = images_by_id(sqlite_settings)
    pending = [i for i in ids.values() if rows[i].download_state == DownloadState.pending]
    assert len(pending) > 100  # stopped at the first progress report, not after all 200
    assert leftovers(sqlite_settings.data_dir) == []


@pytest.mark.integration
def test_download_job_through_a_real_worker(
    pg_settings: Settings, host: PhotoHost, start_worker: Callable
) -> None:
    from app.services import migrations

    migrations.upgrade(pg_settings.db_url)
    routes = {f"w{i}.jpg": Route(body=jpeg(i)) for i in range(20)}
    routes["w-missing.jpg"] = Route(status=404)
    routes["w-twin.jpg"] = Route(body=jpeg(0))
    with session_scope(pg_settings.db_url) as session:
        seed_images(session, host, routes)
    start_worker(pg_settings, "io", name="io@dl")
    with session_scope(pg_settings.db_url) as session:
        job_id = dispatch.submit(session, pg_settings, "download", params={}).id

    def finished() -> Job | None:
        with session_scope(pg_settings.db_url) as session:
            job = session.get(Job, job_id)
            return job if JobStatus(job.status).finished else None

    job = wait_for(finished, 60, what="the download job")
    assert job.status == JobStatus.succeeded, job.error
    assert {k: job.result[k] for k in ("selected", "done", "duplicate", "failed", "left")} == {
        "selected": 22, "done": 20, "duplicate": 1, "failed": 1, "left": 0,
    }  # fmt: skip
    assert job.result["failures"][0]["reason"] == "HTTP 404 Not Found"
    assert job.progress == 1.0
    assert "20 done · 1 duplicate · 1 failed · 0 left · " in job.progress_text
    states = [i.download_state for i in images_by_id(pg_settings).values()]
    assert states.count(DownloadState.done) == 20
    assert len(stored_files(pg_settings.data_dir)) == 20
    assert leftovers(pg_settings.data_dir) == []
