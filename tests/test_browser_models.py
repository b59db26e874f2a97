"""Browser: the Models page draws its scatter and hands out a bundle; Try it names the species of
an uploaded photo without a page reload.

Uses the demo model exported to a real float32 TFLite file (see `exported_world`).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest
from browsing import live_app, open_page, shot, sign_in
from demo_model import DemoModel
from playwright.sync_api import Browser, expect
from sqlmodel import Session, col, select
from test_models_pages import exported_world

from app.config import Settings
from app.db import get_engine
from app.main import create_app
from app.models import DatasetItem, Image, ModelExport, TrainedModel
from app.services.exports import SAFETY_STATEMENT

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def real(demo_model: DemoModel, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, int]:
    return exported_world(demo_model, tmp_path_factory.mktemp("exported"))


def _facts(settings: Settings, export_id: int) -> tuple[list[str], bytes]:
    """The model's labels and the bytes of one of its test photos."""
    with Session(get_engine(settings.db_url)) as db:
        export = db.get(ModelExport, export_id)
        assert export is not None
        model = db.get(TrainedModel, export.trained_model_id)
        assert model is not None
        image = db.exec(
            select(Image)
            .join(DatasetItem, col(Image.id) == col(DatasetItem.image_id))
            .where(
                DatasetItem.dataset_version_id == model.dataset_version_id,
                DatasetItem.split == "test",
            )
            .order_by(col(DatasetItem.image_id).desc())
        ).first()
        assert image is not None and image.path
        return list(model.labels), (settings.data_dir / image.path).read_bytes()


def test_models_page_scatter_bundle_and_try_it(
    real: tuple[Settings, int], browser: Browser, js_errors: list[str], tmp_path: Path
) -> None:
    settings, export_id = real
    labels, photo = _facts(settings, export_id)
    with live_app(create_app(settings)) as url, open_page(browser, url, js_errors) as page:
        sign_in(page, "cora", "/models")
        expect(page.locator("#models-scatter")).to_be_visible()
        counts = page.evaluate(
            """() => Chart.getChart(document.getElementById('models-scatter')).data.datasets
                 .map(d => [d.label, d.data.length])"""
        )
        drawn = dict(counts)
        assert drawn["float32"] == 1 and drawn[".keras (reference)"] == 1
        assert drawn["Pareto front"] == 1
        row = page.locator(f'tr[data-export-id="{export_id}"]')
        expect(row).to_contain_text("Pareto")
        shot(page, "models.png")

        with page.expect_download() as info:
            row.get_by_role("link", name="bundle").click()
        download = info.value
        assert re.fullmatch(r"sporeprint-[a-z0-9-]+-float32\.zip", download.suggested_filename)
        saved = tmp_path / download.suggested_filename
        download.save_as(saved)
        with zipfile.ZipFile(saved) as bundle:
            assert {"model.tflite", "labels.txt", "model_card.json"} <= set(bundle.namelist())

        row.get_by_role("link", name="Try it").click()
        expect(page).to_have_url(re.compile(rf"/try\?export={export_id}$"))
        expect(page.locator(".try-safety")).to_contain_text(SAFETY_STATEMENT)
        page.evaluate("window.__sameDocument = true")

        # Not a photo: the refusal shows in place.
        page.set_input_files(
            "#try-photo", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hi"}]
        )
        page.get_by_role("button", name="Identify").click()
        expect(page.locator("#try-result .try-error")).to_contain_text("not an image")

        page.set_input_files(
            "#try-photo",
            files=[{"name": "mushroom.jpg", "mimeType": "image/jpeg", "buffer": photo}],
        )
        page.get_by_role("button", name="Identify").click()
        guesses = page.locator("#try-result .try-guess")
        assert len(labels) > 5  # so that "five results" means the top five of more
        expect(guesses).to_have_count(5)
        names = guesses.locator(".try-label").all_inner_texts()
        assert set(names) <= set(labels) and len(set(names)) == len(names)
        for i in range(guesses.count()):
            expect(guesses.nth(i).locator(".try-probability")).to_have_text(
                re.compile(r"^\d+\.\d %$")
            )
        expect(page.locator("#try-result .try-examples img").first).to_be_visible()
        expect(page.locator("#try-result")).to_contain_text("Not a safety verdict")
        assert page.evaluate("window.__sameDocument") is True  # no full reload
        shot(page, "try.png")

        # A dataset photo, picked from the samples, instead of an upload.
        page.locator(".try-sample").first.click()
        assert page.input_value("#try-photo") == ""
        assert page.input_value("#try-image-id") != ""
        page.get_by_role("button", name="Identify").click()
        expect(page.locator("#try-result .try-guess")).to_have_count(min(5, len(labels)))
        assert page.evaluate("window.__sameDocument") is True
    # The browser logs the refused upload's 415 itself; nothing else may go wrong.
    assert [e for e in js_errors if "status of 415" not in e] == []
