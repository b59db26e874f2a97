"""Browser: a train job's page draws its metric rows and follows new ones without a reload.

No TensorFlow: the test writes the JobMetric rows a training run would write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from browsing import live_app, open_page, shot, sign_in
from playwright.sync_api import Browser, Page, expect
from support import PASSWORD

from app.config import Settings
from app.db import session_scope
from app.main import create_app
from app.models import Job, JobMetric, JobStatus, Role
from app.services import auth, migrations

pytestmark = pytest.mark.browser

PARAMS = {"backbone": "MobileNetV3Small", "phases": [{"epochs": 3}, {"epochs": 3}]}


def _points(page: Page, canvas: str, dataset: int = 0) -> int:
    return page.evaluate(
        "([id, i]) => Chart.getChart(document.getElementById(id)).data.datasets[i].data.length",
        [canvas, dataset],
    )


def _write(settings: Settings, job_id: int, rows: list[dict[str, Any]]) -> None:
    with session_scope(settings.db_url) as session:
        for row in rows:
            values = dict(row)
            phase, epoch, step = values.pop("phase"), values.pop("epoch"), values.pop("step")
            session.add(
                JobMetric(job_id=job_id, phase=phase, epoch=epoch, step=step, values=values)
            )


def _epoch(phase: int, epoch: int, loss: float, val_loss: float) -> list[dict[str, Any]]:
    """A mid-epoch step row and the epoch's end row, as the Keras callback writes them."""
    step = epoch * 20
    lr = 1e-3 if phase == 0 else 1e-4
    common = {"phase": phase, "epoch": epoch, "learning_rate": lr}
    return [
        {**common, "step": step - 10, "loss": loss + 0.1, "accuracy": 1 / (1 + loss),
         "images_per_s": 410.0 + epoch, "eta_s": 60.0},
        {**common, "step": step, "end": True, "loss": loss, "val_loss": val_loss,
         "accuracy": 1 / (1 + loss), "val_accuracy": 1 / (1 + val_loss),
         "top5": min(1.0, 1.6 / (1 + loss)), "val_top5": min(1.0, 1.5 / (1 + val_loss)),
         "images_per_s": 400.0 + epoch, "epoch_seconds": 12.5, "eta_s": 50.0},
    ]  # fmt: skip


def test_train_job_charts_grow_live(tmp_path: Path, browser: Browser, js_errors: list[str]) -> None:
    (tmp_path / "data").mkdir()
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    migrations.upgrade(settings.db_url)
    with session_scope(settings.db_url) as session:
        auth.create_user(session, "cora", PASSWORD, Role.curator)
        job = Job(kind="train", queue="gpu", status=JobStatus.running, params=PARAMS)
        session.add(job)
        session.flush()
        job_id = job.id
    assert job_id is not None
    _write(
        settings,
        job_id,
        [*_epoch(0, 1, 2.0, 2.1), *_epoch(0, 2, 1.6, 1.8), *_epoch(0, 3, 1.3, 1.5)],
    )

    with live_app(create_app(settings)) as url, open_page(browser, url, js_errors) as page:
        sign_in(page, "cora", f"/jobs/{job_id}")
        for canvas in ("chart-loss", "chart-accuracy", "chart-lr", "chart-speed"):
            expect(page.locator(f"#{canvas}")).to_be_visible()
        assert _points(page, "chart-loss") == 3  # train loss, one point per epoch
        assert _points(page, "chart-loss", 1) == 3  # val loss
        assert _points(page, "chart-accuracy", 3) == 3  # val top-5
        assert _points(page, "chart-lr") == 6  # every row
        expect(page.locator("#overfit-note")).to_be_hidden()
        expect(page.locator("#train-summary")).to_contain_text("epoch 3 of 6")

        # Phase 2 starts; train loss keeps falling while val loss turns up for two epochs.
        _write(settings, job_id, [*_epoch(1, 4, 1.0, 1.55), *_epoch(1, 5, 0.8, 1.7)])
        page.wait_for_function(
            "Chart.getChart(document.getElementById('chart-loss')).data.datasets[0]"
            ".data.length === 5",
            timeout=15_000,
        )
        assert _points(page, "chart-lr") == 10
        marks = page.evaluate("Chart.getChart(document.getElementById('chart-loss')).$phaseMarks")
        assert marks == [{"x": 3.5, "phase": 1}]
        note = page.locator("#overfit-note")
        expect(note).to_be_visible()
        expect(note).to_contain_text("2 epochs")
        expect(page.locator("#train-summary")).to_contain_text("phase 2 · epoch 5 of 6")
        shot(page, "training.png")

        # The job ends: the stream sends its last rows, then `done`, and the page keeps them.
        _write(settings, job_id, _epoch(1, 6, 0.7, 1.9))
        with session_scope(settings.db_url) as session:
            row = session.get(Job, job_id)
            assert row is not None
            row.status = JobStatus.succeeded
        page.wait_for_function(
            "Chart.getChart(document.getElementById('chart-loss')).data.datasets[0]"
            ".data.length === 6",
            timeout=15_000,
        )
        expect(note).to_contain_text("3 epochs")
    assert js_errors == []
