"""Browser, end to end: start a tiny training run from the form, watch its charts fill without a
reload while a real gpu worker trains, and land on the model's evaluation page.

Single-machine mode (SQLite + the SQL broker transport), a real Celery gpu worker, real
TensorFlow: MobileNetV3Small from scratch at 32 px on demo photos, three short epochs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from browsing import live_app, open_page, shot, sign_in
from demo_model import SPECIES, make_demo_world
from playwright.sync_api import Browser, Page, expect
from support import PASSWORD

from app.db import session_scope
from app.main import create_app
from app.models import Role
from app.services import auth

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
pytest.importorskip("tensorflow")


def _loss_points(page: Page) -> int:
    return page.evaluate(
        "Chart.getChart(document.getElementById('chart-loss')).data.datasets[0].data.length"
    )


def test_train_from_the_form_and_watch_it_live(
    tmp_path: Path, browser: Browser, js_errors: list[str], start_worker: Callable
) -> None:
    settings, version_id = make_demo_world(tmp_path)
    with session_scope(settings.db_url) as session:
        auth.create_user(session, "cora", PASSWORD, Role.curator)
    start_worker(settings, "gpu")

    with live_app(create_app(settings)) as url, open_page(browser, url, js_errors) as page:
        page.set_default_timeout(30_000)
        sign_in(page, "cora", "/models")
        page.goto(f"/training/new?dataset_version_id={version_id}")
        page.select_option("#tf-weights", "none")
        for name, value in {
            "image_size": "32", "batch_size": "16", "head_epochs": "1", "fine_epochs": "2",
            "fine_last": "300", "head_lr": "0.003", "fine_lr": "0.003",
        }.items():  # fmt: skip
            page.fill(f"[name={name}]", value)
        page.get_by_role("button", name="Start training").click()
        expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
        job_id = int(page.url.rsplit("/", 1)[1])

        # The first epoch's point arrives while the job is still running; no reload happens.
        page.evaluate("window.__samePage = true")
        page.wait_for_function(
            "Chart.getChart(document.getElementById('chart-loss'))"
            "?.data.datasets[0].data.length >= 1",
            timeout=240_000,
        )
        expect(page.locator("#job-status .job-status")).to_have_attribute(
            "data-status", re.compile("running|succeeded")
        )
        page.wait_for_function(
            "document.querySelector('#job-status .job-status')?.dataset.status === 'succeeded'",
            timeout=240_000,
        )
        page.wait_for_function(
            "Chart.getChart(document.getElementById('chart-loss')).data.datasets[0]"
            ".data.length === 3"
        )
        assert page.evaluate("window.__samePage") is True
        assert _loss_points(page) == 3
        shot(page, "training-run.png")

        # The finished job links to its model, whose page shows the evaluation.
        page.locator("#job-model").click()
        expect(page).to_have_url(re.compile(r"/models/\d+$"))
        expect(page.locator("svg.confusion")).to_be_visible()
        assert page.locator(".confusion-cell").count() == SPECIES**2
        expect(page.locator('[data-metric="test_images"]')).not_to_have_text("—")
        expect(page.get_by_role("link", name=f"job {job_id}")).to_be_visible()
        shot(page, "model.png")
    assert js_errors == []
