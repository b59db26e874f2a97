"""The review queue in a real browser: keyboard decisions, undo, multi-select, live counts.

A uvicorn server in a thread (single-machine settings, SQLite) with a small demo set imported;
every third photo flagged with an anomaly score. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from browsing import live_app, open_page, shot, sign_in
from playwright.sync_api import Browser, Page, expect
from sqlmodel import col, select
from support import PASSWORD

from app.config import Settings
from app.db import dispose_engines, session_scope
from app.main import create_app
from app.models import CurationRun, Image, ReviewState, Role
from app.services import auth, migrations
from app.services.demo_data import generate_demo_dataset
from app.services.imports import import_folder

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings]]:
    base = tmp_path_factory.mktemp("browser-review")
    (base / "data").mkdir()
    settings = Settings(_env_file=None, data_dir=base / "data")
    migrations.upgrade(settings.db_url)
    photos = base / "photos"
    generate_demo_dataset(photos, per_species=6, image_size=160, seed=6)
    with session_scope(settings.db_url) as session:
        import_folder(session, photos, settings.data_dir)
        auth.create_user(session, "ada", PASSWORD, Role.curator)
        images = session.exec(select(Image).order_by(col(Image.id))).all()
        for i, image in enumerate(images):
            image.flagged = i % 3 == 0
            image.anomaly_score = round(1 - i / 100, 2)
            image.cluster_label = -1 if image.flagged else 0
            session.add(image)
        # A curation run's picture of the first species.
        first = [img for img in images if img.species_id == images[0].species_id]
        projection = [
            [img.id, (n % 3) * 1.0 + n / 10, (n // 3) * 0.8, img.flagged]
            for n, img in enumerate(first)
        ]
        stats = {
            "eps": 0.55, "min_samples": 3, "projection": projection,
            "k_distance": [0.12, 0.18, 0.2, 0.26, 0.31, 0.95],
        }  # fmt: skip
        session.add(
            CurationRun(
                extractor="colour-texture", stats={"species": {str(first[0].species_id): stats}}
            )
        )

    with live_app(create_app(settings)) as url:
        yield url, settings
    dispose_engines()


@pytest.fixture
def page(browser: Browser, server: tuple[str, Settings], js_errors: list[str]) -> Iterator[Page]:
    with open_page(browser, server[0], js_errors) as page:
        yield page


def _state(settings: Settings, image_id: int) -> str:
    with session_scope(settings.db_url) as session:
        return session.get(Image, image_id).review_state


def test_review_queue_by_keyboard_and_selection(
    page: Page, server: tuple[str, Settings], js_errors: list[str]
) -> None:
    _, settings = server
    sign_in(page, "ada", "/review")
    page.evaluate("window.__marker = 1")  # gone if anything reloads the page
    cards = page.locator("#review-queue .review-card")
    expect(cards).to_have_count(24)
    first = cards.first
    expect(first).to_have_class(re.compile(r"\bis-flagged\b"))
    first_id = int(first.get_attribute("data-image-id"))
    second_id = int(cards.nth(1).get_attribute("data-image-id"))
    species_href = first.locator(".review-species-link").get_attribute("href")
    species_id = species_href.rsplit("/", 1)[1]
    row = page.locator(f'#review-species [data-species-id="{species_id}"]')
    expect(row.locator('[data-count="pending"]')).to_have_text("6")
    expect(row.locator('[data-count="flagged"]')).to_have_text("2")
    pending_tab = page.locator('#review-tabs [data-count="pending"]')
    expect(pending_tab).to_have_text("48")

    # x on the focused, flagged photo: it leaves the queue and the counts follow.
    first.focus()
    page.keyboard.press("x")
    expect(page.locator(f"#card-{first_id}")).to_have_count(0)
    expect(row.locator('[data-count="pending"]')).to_have_text("5")
    expect(row.locator('[data-count="flagged"]')).to_have_text("1")
    expect(page.locator('#review-tabs [data-count="excluded"]')).to_have_text("1")
    expect(pending_tab).to_have_text("47")
    expect(page.locator("#review-notice")).to_contain_text(f"Excluded photo {first_id}")
    assert _state(settings, first_id) == ReviewState.excluded
    # Focus moved on to the next photo; k keeps it, u brings it back.
    expect(page.locator(f"#card-{second_id}")).to_be_focused()
    page.keyboard.press("k")
    expect(page.locator(f"#card-{second_id}")).to_have_count(0)
    assert _state(settings, second_id) == ReviewState.kept
    page.keyboard.press("u")
    expect(page.locator(f"#card-{second_id}")).to_have_count(1)
    expect(pending_tab).to_have_text("47")
    assert _state(settings, second_id) == ReviewState.unreviewed

    # Arrows move focus; a checkbox then a Shift-click select a range for a bulk decision.
    page.locator(f"#card-{second_id}").focus()
    page.keyboard.press("ArrowRight")
    third_id = int(cards.nth(1).get_attribute("data-image-id"))
    expect(page.locator(f"#card-{third_id}")).to_be_focused()
    cards.nth(2).locator(".review-check").check()
    cards.nth(4).locator("img").click(modifiers=["Shift"])
    expect(page.locator("[data-selected-count]")).to_have_text("3")
    expect(page.locator(".review-card.is-selected")).to_have_count(3)
    chosen = [int(c.get_attribute("data-image-id")) for c in cards.all()[2:5]]
    page.evaluate("window.scrollTo(0, 0)")  # the sticky species list, drawn where it rests
    shot(page, "review.png")
    page.get_by_role("button", name="Exclude selected").click()
    for image_id in chosen:
        expect(page.locator(f"#card-{image_id}")).to_have_count(0)
    expect(pending_tab).to_have_text("44")
    expect(page.locator("[data-selected-count]")).to_have_text("0")
    assert {_state(settings, i) for i in chosen} == {ReviewState.excluded}
    page.keyboard.press("u")
    expect(pending_tab).to_have_text("47")
    assert {_state(settings, i) for i in chosen} == {ReviewState.unreviewed}
    assert page.evaluate("window.__marker") == 1

    # Reload: the first decision stuck, and the photo waits under Excluded.
    page.reload()
    expect(cards.first).not_to_have_attribute("data-image-id", str(first_id))
    expect(page.locator(f"#card-{first_id}")).to_have_count(0)
    page.locator('#review-tabs [data-view="excluded"]').click()
    expect(page).to_have_url(re.compile(r"/review\?view=excluded$"))
    expect(page.locator(f"#card-{first_id}")).to_have_count(1)
    expect(page.locator('#review-tabs [aria-current="true"]')).to_have_attribute(
        "data-view", "excluded"
    )


def test_species_queue_shows_the_dbscan_picture(page: Page, js_errors: list[str]) -> None:
    sign_in(page, "ada", "/review")
    page.locator('#review-species a[data-species-id]:not([data-species-id="all"])').first.click()
    expect(page).to_have_url(re.compile(r"/review/species/\d+$"))
    picture = page.locator("#dbscan")
    expect(picture).to_contain_text("eps 0.55")
    expect(picture.locator(".plot-point")).to_have_count(6)
    expect(picture.locator(".plot-point.is-flagged")).to_have_count(2)
    expect(picture.locator(".plot-eps")).to_have_count(1)
    pending = page.locator('#review-tabs [data-count="pending"]').inner_text()
    expect(page.locator("#review-queue .review-card")).to_have_count(int(pending))
    shot(page, "review-species.png")


def test_freeze_a_dataset_version(page: Page, js_errors: list[str]) -> None:
    sign_in(page, "ada", "/datasets")
    page.fill("#ds-name", "browser v1")
    page.fill("#ds-min", "3")
    expect(page.locator("#dataset-preview")).to_contain_text("8 species")
    page.get_by_role("button", name="Freeze version").click()
    expect(page).to_have_url(re.compile(r"/datasets/\d+$"))
    expect(page.locator("h1")).to_have_text("browser v1")
    expect(page.locator(".dataset-split-table tbody tr")).to_have_count(8)
    expect(page.get_by_role("button", name="Build the zip")).to_be_visible()
    shot(page, "dataset.png")
