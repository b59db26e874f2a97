"""The species pages in a real browser: list, live search, gallery thumbnails, photo page.

A uvicorn server in a thread (single-machine settings, SQLite) with the demo photos imported by
`import_folder`; Chromium is Debian's own, driven by Playwright. Screenshots of the list, the
gallery and a photo land in test-artifacts/.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator

import pytest
from browsing import live_app, open_page, shot, sign_in
from PIL import Image as PILImage
from playwright.sync_api import Browser, Page, expect
from sqlmodel import col, select
from support import PASSWORD

from app.config import Settings
from app.db import dispose_engines, session_scope
from app.main import create_app
from app.models import Image, ReviewState, Role
from app.services import auth, migrations
from app.services.demo_data import generate_demo_dataset
from app.services.imports import import_folder

pytestmark = pytest.mark.browser

SPECIES = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("browser-species")
    (base / "data").mkdir()
    settings = Settings(_env_file=None, data_dir=base / "data")
    migrations.upgrade(settings.db_url)
    photos = base / "photos"
    generate_demo_dataset(photos, per_species=30, image_size=192, seed=5)
    with session_scope(settings.db_url) as session:
        assert import_folder(session, photos, settings.data_dir).imported == SPECIES * 30
        auth.create_user(session, "ada", PASSWORD, Role.curator)
        # A few reviewed and flagged photos, so the gallery shows its badges.
        for i, image in enumerate(session.exec(select(Image).order_by(col(Image.id))).all()):
            image.flagged = i % 9 == 4
            if i % 13 == 6:
                image.review_state = ReviewState.kept
            elif i % 17 == 8:
                image.review_state = ReviewState.excluded
            session.add(image)

    with live_app(create_app(settings)) as url:
        yield url
    dispose_engines()


@pytest.fixture
def page(browser: Browser, server: str, js_errors: list[str]) -> Iterator[Page]:
    with open_page(browser, server, js_errors) as page:
        yield page


def test_species_list_search_gallery_and_photo(page: Page, js_errors: list[str]) -> None:
    sign_in(page, "ada", "/species")
    rows = page.locator("#species-table tbody tr")
    expect(rows).to_have_count(SPECIES)
    expect(rows.first.locator("td.species-name")).to_contain_text("Amanita muscaria")
    expect(rows.first.locator('[data-count="total"]')).to_have_text("30")
    expect(page.locator("#import")).to_be_visible()
    shot(page, "species.png")

    # Live search: the table is swapped in place, the page is not reloaded.
    page.evaluate("window.__marker = 1")
    page.locator("#species-q").press_sequentially("bolet", delay=30)
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Boletus edulis")
    expect(page).to_have_url(re.compile(r"/species\?q=bolet"))
    page.locator("#species-q").fill("")
    expect(rows).to_have_count(SPECIES)
    page.locator("#species-q").fill("no such mushroom")
    expect(page.locator(".empty-search")).to_contain_text("No species match")
    page.locator("#species-q").fill("")
    expect(rows).to_have_count(SPECIES)
    # Sorting by a column header is a swap too.
    page.locator('th a[data-sort="flagged"]').click()
    expect(page.locator('th[aria-sort="descending"] a[data-sort="flagged"]')).to_be_visible()
    flagged = [int(t) for t in rows.locator('[data-count="flagged"]').all_inner_texts()]
    assert flagged == sorted(flagged, reverse=True), flagged
    assert page.evaluate("window.__marker") == 1, "the species page reloaded"

    # The gallery: thumbnails really load (decoded, with a width), lazily.
    page.locator("#species-table a", has_text="Amanita muscaria").click()
    expect(page).to_have_url(re.compile(r"/species/\d+$"))
    expect(page.get_by_role("heading", name="Amanita muscaria")).to_be_visible()
    tiles = page.locator(".tile-grid .tile img")
    expect(tiles).to_have_count(30)
    assert tiles.first.get_attribute("loading") == "lazy"
    page.wait_for_function(
        """() => {
            const imgs = [...document.querySelectorAll('.tile-grid .tile img')].slice(0, 12);
            return imgs.length === 12 && imgs.every(i => i.complete && i.naturalWidth > 0);
        }"""
    )
    widths = page.eval_on_selector_all(
        ".tile-grid .tile img", "imgs => imgs.slice(0, 12).map(i => i.naturalWidth)"
    )
    assert all(w > 0 for w in widths), widths
    shot(page, "gallery.png")

    # Filtering by state swaps the grid and keeps the address in step.
    page.evaluate("window.__marker = 2")
    page.locator('.state-tab[data-state="flagged"]').click()
    expect(page).to_have_url(re.compile(r"\?state=flagged$"))
    expect(page.locator('.state-tab[data-state="flagged"]')).to_have_attribute(
        "aria-current", "true"
    )
    count = int(page.locator('.state-tab[data-state="flagged"] .tab-count').inner_text())
    expect(page.locator(".tile-grid .tile")).to_have_count(count)
    expect(page.locator(".tile-grid .tile:not(.is-flagged)")).to_have_count(0)
    assert page.evaluate("window.__marker") == 2, "the gallery reloaded"
    page.locator('.state-tab[data-state="all"]').click()
    expect(page.locator(".tile-grid .tile")).to_have_count(30)

    # One photo: the full image, its provenance.
    page.locator(".tile-grid .tile a").nth(2).click()
    expect(page).to_have_url(re.compile(r"/images/\d+$"))
    full = page.locator("#full-image")
    expect(full).to_be_visible()
    page.wait_for_function(
        "() => { const i = document.querySelector('#full-image');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    assert full.evaluate("i => i.naturalWidth") == 192
    expect(page.locator("#licence")).to_be_visible()
    expect(page.locator("#attribution")).to_be_visible()
    expect(page.locator(".image-facts")).to_contain_text("SHA-256")
    shot(page, "photo.png")
    page.get_by_role("link", name="Next →").click()
    expect(page).to_have_url(re.compile(r"/images/\d+$"))
    assert js_errors == []


def test_import_forms(page: Page, js_errors: list[str]) -> None:
    sign_in(page, "ada", "/species")
    page.fill("#import-folder", "/no/such/folder")
    page.locator("#folder-button").click()
    expect(page.locator("#folder-feedback")).to_contain_text(
        "there is no folder at /no/such/folder"
    )
    page.set_input_files(
        "#upload-file", files=[{"name": "notes.zip", "mimeType": "application/zip",
                                "buffer": b"this is not a zip"}],
    )  # fmt: skip
    page.locator("#upload-button").click()
    expect(page.locator("#upload-feedback")).to_contain_text("not a readable zip")
    expect(page).to_have_url(re.compile(r"/species$"))

    # A good zip goes up (multipart, CSRF header from htmx) and the browser lands on its job.
    photo = io.BytesIO()
    PILImage.new("RGB", (32, 32), (180, 40, 30)).save(photo, "JPEG")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("trip/Russula_emetica/1.jpg", photo.getvalue())
    page.set_input_files(
        "#upload-file", files=[{"name": "trip.zip", "mimeType": "application/zip",
                                "buffer": archive.getvalue()}],
    )  # fmt: skip
    page.locator("#upload-button").click()
    expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
    expect(page.locator("main")).to_contain_text("import")
    # 422 responses are shown in the form on purpose; the browser still logs them.
    assert [e for e in js_errors if "422" not in e] == []
