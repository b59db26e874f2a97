"""Species list, gallery, photo page and media routes, on both databases."""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select
from support import PASSWORD, login

from app.config import Settings
from app.models import DownloadState, Image, ReviewState, Role, Species
from app.services.demo_data import generate_demo_dataset
from app.services.imports import import_folder
from app.services.thumbnails import thumbnail_path

HX = {"HX-Request": "true"}
DASH, TIMES = "\N{EN DASH}", "\N{MULTIPLICATION SIGN}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("species-demo") / "photos"
    generate_demo_dataset(root, per_species=6, image_size=64, seed=2)
    return root


@pytest.fixture
def loaded(db: Session, migrated: Settings, demo: Path) -> Session:
    """The demo photos imported, then a spread of states set by hand, plus an empty species."""
    report = import_folder(db, demo, migrated.data_dir)
    assert report.imported == 48
    images = db.exec(select(Image).order_by(col(Image.id))).all()
    for i, image in enumerate(images):
        if i % 5 == 0:
            image.flagged = True
        if i % 7 == 1:
            image.review_state = ReviewState.kept
        if i % 11 == 2:
            image.review_state = ReviewState.excluded
        if i % 13 == 3:
            image.download_state, image.path = DownloadState.failed, None
        db.add(image)
    db.add(Species(scientific_name="Zzz emptyus", common_name="Nothing yet"))
    db.commit()
    return db


@pytest.fixture
def ada(client: TestClient, make_user: Callable) -> TestClient:
    make_user("ada")
    login(client, "ada", PASSWORD)
    return client


def _expected(db: Session) -> dict[int, dict[str, int]]:
    """Counts computed the slow, obvious way, to check the grouped query against."""
    expected: dict[int, dict[str, int]] = {}
    for species in db.exec(select(Species)).all():
        images = db.exec(select(Image).where(Image.species_id == species.id)).all()
        tally = Counter()
        for image in images:
            tally["total"] += 1
            tally["downloaded"] += image.download_state == DownloadState.done
            tally["failed"] += image.download_state == DownloadState.failed
            tally["flagged"] += image.flagged
            tally["kept"] += image.review_state == ReviewState.kept
            tally["excluded"] += image.review_state == ReviewState.excluded
        keys = ("total", "downloaded", "failed", "flagged", "kept", "excluded")
        expected[species.id] = {k: tally[k] for k in keys}
    return expected


def _rows(page: str) -> dict[int, dict[str, int]]:
    """Species id → counts, read from the rendered table."""
    rows = {}
    for match in re.finditer(r'<tr data-species-id="(\d+)">(.*?)</tr>', page, re.S):
        cells = re.findall(r'data-count="(\w+)">(.*?)</td>', match[2], re.S)
        rows[int(match[1])] = {k: int(re.sub(r"<[^>]+>", "", v).strip()) for k, v in cells}
    return rows


def _names(page: str) -> list[str]:
    return re.findall(
        r'<tr data-species-id="\d+">\s*<td class="species-name">\s*<a [^>]*><em>([^<]+)', page
    )


def test_list_counts_match_the_database(ada: TestClient, loaded: Session) -> None:
    page = ada.get("/species")
    assert page.status_code == 200
    assert _rows(page.text) == _expected(loaded)
    assert "Zzz emptyus" in page.text and "Nothing yet" in page.text
    assert 'id="load-demo"' not in page.text  # the first-run offer is gone once there are species
    assert 'action="/imports"' in page.text  # curators get the import forms
    # The target bar counts usable photos: downloaded and not excluded.
    amanita = loaded.exec(
        select(Species).where(Species.scientific_name == "Amanita muscaria")
    ).one()
    usable = len(
        loaded.exec(
            select(Image).where(
                Image.species_id == amanita.id,
                Image.download_state == DownloadState.done,
                Image.review_state != ReviewState.excluded,
            )
        ).all()
    )
    row = re.search(rf'<tr data-species-id="{amanita.id}">(.*?)</tr>', page.text, re.S)[1]
    assert f'aria-valuenow="{usable}"' in row and f'{usable}<span class="muted"> / 200' in row


def test_first_run_offers_the_demo(client: TestClient, make_user: Callable) -> None:
    make_user("ada")
    login(client, "ada", PASSWORD)
    page = client.get("/species").text
    assert 'id="load-demo"' in page and 'action="/species/demo"' in page


def test_search_and_sort(ada: TestClient, loaded: Session) -> None:
    found = ada.get(
        "/species", params={"q": "amanita"}, headers={**HX, "HX-Target": "species-table"}
    )
    assert found.status_code == 200
    assert "<html" not in found.text  # the table fragment only
    assert _names(found.text) == ["Amanita muscaria"]
    assert found.headers["vary"].startswith("HX-Request")
    common = ada.get("/species", params={"q": "nothing YET"})
    assert _names(common.text) == ["Zzz emptyus"]
    wildcard = ada.get("/species", params={"q": "%"})
    assert "No species match" in html.unescape(wildcard.text)

    expected = _expected(loaded)
    names = {s.id: s.scientific_name for s in loaded.exec(select(Species)).all()}
    by_name = ada.get("/species").text
    assert _names(by_name) == sorted(names.values(), key=str.lower)
    assert _names(ada.get("/species", params={"sort": "name", "dir": "desc"}).text) == sorted(
        names.values(), key=str.lower, reverse=True
    )
    for key in ("total", "downloaded", "flagged"):
        page = ada.get("/species", params={"sort": key, "dir": "desc"}).text
        order = [names[i] for i in _rows(page)]
        want = sorted(names, key=lambda i: (-expected[i][key], names[i].lower()))
        assert order == [names[i] for i in want], key
        assert f'data-sort="{key}"' in page
    # The active header says so, and links to the other direction.
    page = ada.get("/species", params={"sort": "total", "dir": "desc"}).text
    assert 'aria-sort="descending"' in page
    assert "/species?q=&amp;sort=total&amp;dir=asc" in page
    assert ada.get("/species", params={"sort": "size"}).status_code == 422


def _tile_ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<li class="tile[^"]*">\s*<a href="/images/(\d+)"', page)]


def test_gallery_pages_and_filters(ada: TestClient, loaded: Session) -> None:
    amanita = loaded.exec(
        select(Species).where(Species.scientific_name == "Amanita muscaria")
    ).one()
    template = loaded.exec(
        select(Image).where(Image.species_id == amanita.id, Image.download_state == "done")
    ).first()
    for n in range(125):  # 131 photos in all: pages of 60, 60 and 11
        loaded.add(
            Image(
                species_id=amanita.id, source="import", source_ref=f"extra/{n}",
                path=template.path, sha256=template.sha256, width=64, height=64,
                download_state=DownloadState.done, flagged=n % 10 == 0,
            )
        )  # fmt: skip
    loaded.commit()
    all_ids = loaded.exec(
        select(Image.id).where(Image.species_id == amanita.id).order_by(col(Image.id))
    ).all()
    assert len(all_ids) == 131

    first = ada.get(f"/species/{amanita.id}")
    assert first.status_code == 200
    assert _tile_ids(first.text) == all_ids[:60]
    assert f"1{DASH}60 of 131" in first.text
    assert first.text.count('loading="lazy"') == len(
        re.findall(r"<img [^>]*/media/thumbs/", first.text)
    )
    nxt = re.search(r'rel="next" href="([^"]+)"', first.text)[1]
    second = ada.get(nxt.replace("&amp;", "&"))
    assert _tile_ids(second.text) == all_ids[60:120] and f"61{DASH}120 of 131" in second.text
    third = ada.get(re.search(r'rel="next" href="([^"]+)"', second.text)[1])
    assert _tile_ids(third.text) == all_ids[120:] and f"121{DASH}131 of 131" in third.text
    assert 'rel="next"' not in third.text
    back = ada.get(re.search(r'rel="prev" href="([^"]+)"', third.text)[1])
    assert _tile_ids(back.text) == all_ids[60:120]

    flagged_ids = loaded.exec(
        select(Image.id)
        .where(Image.species_id == amanita.id, col(Image.flagged).is_(True))
        .order_by(col(Image.id))
    ).all()
    flagged = ada.get(
        f"/species/{amanita.id}",
        params={"state": "flagged"},
        headers={**HX, "HX-Target": "gallery"},
    )
    assert "<html" not in flagged.text and flagged.text.lstrip().startswith('<section id="gallery"')
    assert _tile_ids(flagged.text) == flagged_ids
    assert f'<span class="pager-status">{len(flagged_ids)} photos</span>' in flagged.text
    assert 'rel="next"' not in flagged.text and 'rel="prev"' not in flagged.text  # one page
    assert 'data-state="flagged" aria-current="true"' in flagged.text

    for state, where in {
        "failed": Image.download_state == "failed",
        "kept": Image.review_state == "kept",
        "excluded": Image.review_state == "excluded",
        "downloaded": Image.download_state == "done",
    }.items():
        ids = loaded.exec(
            select(Image.id).where(Image.species_id == amanita.id, where).order_by(col(Image.id))
        ).all()
        page = ada.get(f"/species/{amanita.id}", params={"state": state}).text
        assert _tile_ids(page) == list(ids)[:60], state
    failed_page = ada.get(f"/species/{amanita.id}", params={"state": "failed"}).text
    assert failed_page.count("download failed") == len(_tile_ids(failed_page)) > 0
    assert ada.get(f"/species/{amanita.id}", params={"state": "gone"}).status_code == 422
    assert ada.get("/species/99999").status_code == 404


def test_image_page_shows_provenance(ada: TestClient, loaded: Session) -> None:
    image = loaded.exec(select(Image).where(Image.download_state == "done")).first()
    image.license = "cc-by-nc"
    image.attribution = "(c) Ada <Lovelace>, some rights reserved"
    image.source_url = "https://example.org/photos/123/original.jpg"
    image.observation_id = 4242
    loaded.add(image)
    loaded.commit()
    page = ada.get(f"/images/{image.id}")
    assert page.status_code == 200
    text = page.text
    assert "cc-by-nc" in text
    assert "(c) Ada &lt;Lovelace&gt;, some rights reserved" in text  # escaped
    assert 'href="https://example.org/photos/123/original.jpg"' in text
    assert image.sha256 in text and "4242" in text and f"64 {TIMES} 64 px" in text
    assert f'src="/media/images/{image.id}?v={image.sha256[:12]}"' in text
    species = loaded.get(Species, image.species_id)
    assert f'<a href="/species/{species.id}"><em>{species.scientific_name}</em></a>' in text

    image.source_url = "javascript:alert(1)"
    loaded.add(image)
    loaded.commit()
    assert "javascript:alert" not in ada.get(f"/images/{image.id}").text
    assert ada.get("/images/99999").status_code == 404


def test_media_serves_the_right_bytes(ada: TestClient, loaded: Session, migrated: Settings):
    image = loaded.exec(select(Image).where(Image.download_state == "done")).first()
    original = ada.get(f"/media/images/{image.id}")
    assert original.status_code == 200
    assert original.content == (migrated.data_dir / image.path).read_bytes()
    assert original.headers["content-type"] == "image/jpeg"
    assert "immutable" in original.headers["cache-control"]
    assert original.headers["x-content-type-options"] == "nosniff"

    thumb_file = migrated.data_dir / thumbnail_path(image.sha256)
    thumb = ada.get(f"/media/thumbs/{image.id}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
    assert thumb.content == thumb_file.read_bytes()
    assert "immutable" in thumb.headers["cache-control"]
    thumb_file.unlink()  # a lost thumbnail is drawn again on the first request
    again = ada.get(f"/media/thumbs/{image.id}")
    assert again.status_code == 200 and again.content[:4] == b"RIFF" and thumb_file.is_file()

    assert ada.get("/media/images/99999").status_code == 404
    assert ada.get("/media/thumbs/99999").status_code == 404
    failed = loaded.exec(select(Image).where(Image.download_state == "failed")).first()
    assert ada.get(f"/media/images/{failed.id}").status_code == 404
    assert ada.get(f"/media/thumbs/{failed.id}").status_code == 404


def test_nothing_escapes_the_data_directory(
    ada: TestClient, loaded: Session, migrated: Settings, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.jpg"  # beside the data directory, not in it
    secret.write_bytes(b"\xff\xd8 top secret")
    (migrated.data_dir / "images").mkdir(exist_ok=True)
    (migrated.data_dir / "images" / "link.jpg").symlink_to(secret)
    image = loaded.exec(select(Image).where(Image.download_state == "done")).first()
    for bad in ("../secret.jpg", str(secret), "images/../../secret.jpg", "images/link.jpg", "."):
        image.path = bad
        loaded.add(image)
        loaded.commit()
        for url in (f"/media/images/{image.id}", f"/media/thumbs/{image.id}"):
            response = ada.get(url)
            assert response.status_code == 404, (bad, url)
            assert b"top secret" not in response.content

    # Request parameters are ids, states and sort keys; none of them is ever a path.
    for url in (
        "/media/images/..%2F..%2Fetc%2Fpasswd",
        "/media/thumbs/%2e%2e%2fsecret.jpg",
        "/media/images/1/../../../etc/passwd",
        "/species/..%2f..%2fetc",
        "/images/..%2F1",
        "/species/1?state=../../etc/passwd",
        "/species?sort=../../etc/passwd",
    ):
        response = ada.get(url)
        assert response.status_code in (404, 422), url
        assert b"root:" not in response.content and b"top secret" not in response.content
    search = ada.get("/species", params={"q": "../../etc/passwd"})
    assert search.status_code == 200 and "root:" not in search.text


def test_viewer_sees_pages_but_no_import_forms(
    client: TestClient, make_user: Callable, loaded: Session
) -> None:
    make_user("vic", Role.viewer)
    login(client, "vic", PASSWORD)
    page = client.get("/species").text
    assert "Amanita muscaria" in page and 'action="/imports"' not in page
    species_id = loaded.exec(select(Species.id)).first()
    assert client.get(f"/species/{species_id}").status_code == 200
    empty = loaded.exec(select(Species).where(Species.scientific_name == "Zzz emptyus")).one()
    page = client.get(f"/species/{empty.id}")
    assert page.status_code == 200 and "No photos" in page.text and "tile-grid" not in page.text


def test_pending_photos_can_be_downloaded_from_the_list(
    client: TestClient, db: Session, make_user: Callable
) -> None:
    from app.models import Job

    species = Species(scientific_name="Boletus edulis")
    db.add(species)
    db.flush()
    for n in range(3):
        db.add(Image(species_id=species.id, source="inat", source_ref=str(n),
                     source_url=f"http://photos.invalid/{n}.jpg"))  # fmt: skip
    db.commit()
    make_user("vic", Role.viewer)
    make_user("cora", Role.curator)

    csrf = login(client, "vic", PASSWORD)
    assert 'id="download-pending"' not in client.get("/species").text
    assert client.post("/species/download", data={"csrf_token": csrf}).status_code == 403

    client.cookies.clear()
    csrf = login(client, "cora", PASSWORD)
    assert "Download 3 pending photos" in client.get("/species").text
    started = client.post("/species/download", data={"csrf_token": csrf}, follow_redirects=False)
    job = db.exec(select(Job)).one()
    assert (job.kind, job.queue, started.headers["location"]) == (
        "download",
        "io",
        f"/jobs/{job.id}",
    )
