"""Browser: a train job's page draws its metric rows and GPU memory samples, and follows new
ones without a reload.

No TensorFlow: the tests write the JobMetric and GpuSample rows a training run would write.
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
from app.models import Job, JobMetric, JobStatus, Role, utcnow
from app.services import auth, gpus, jobs, migrations

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


GPU_UUID = "GPU-3f5a9c1e-0000-4000-8000-000000000001"


def _gpu_samples(settings: Settings, job_id: int, used: list[float]) -> None:
    """GpuSample rows as the worker's sampler writes them: the job's process is pid 4242."""
    with session_scope(settings.db_url) as session:
        for mb in used:
            snapshot = {
                "devices": [{"index": 0, "uuid": GPU_UUID, "name": "NVIDIA H100",
                             "memory_used_mb": mb, "memory_total_mb": 81559.0,
                             "utilization": 40.0, "temperature_c": 55.0, "power_w": 250.0}],
                "processes": [{"pid": 4242, "gpu_uuid": GPU_UUID, "name": "python3",
                               "cmdline": "celery", "memory_mb": mb - 500}],
            }  # fmt: skip
            gpus.record_samples(session, job_id, "gpu@box", snapshot, own_pid=4242)
            session.flush()


def _gpu_points(page: Page, role: str) -> int:
    return page.evaluate(
        "(role) => { const c = Chart.getChart(document.getElementById('chart-gpu'));"
        " const d = c.data.datasets.find((d) => d.gpu === 0 && d.role === role);"
        " return d ? d.data.length : 0; }",
        role,
    )


def test_gpu_memory_chart_grows_live(
    tmp_path: Path, browser: Browser, js_errors: list[str]
) -> None:
    (tmp_path / "data").mkdir()
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    migrations.upgrade(settings.db_url)
    with session_scope(settings.db_url) as session:
        auth.create_user(session, "cora", PASSWORD, Role.curator)
        job = Job(kind="train", queue="gpu", status=JobStatus.running, params=PARAMS,
                  worker_pid=4242, started_at=utcnow())  # fmt: skip
        cpu_job = Job(kind="train", queue="gpu", status=JobStatus.succeeded, params=PARAMS)
        session.add_all([job, cpu_job])
        session.flush()
        job_id, cpu_job_id = job.id, cpu_job.id
        assert job_id is not None and cpu_job_id is not None
        jobs.log(session, cpu_job_id, gpus.NO_GPU_SAMPLES)

    with live_app(create_app(settings)) as url, open_page(browser, url, js_errors) as page:
        sign_in(page, "cora", f"/jobs/{job_id}")
        note = page.locator("#gpu-note")
        expect(note).to_contain_text("Waiting for the first GPU memory sample")
        expect(page.locator("#chart-gpu")).to_be_visible()
        assert _gpu_points(page, "used") == 0

        # The worker's sampler writes rows: the chart draws them as they arrive, no reload.
        _gpu_samples(settings, job_id, [1200.0, 2600.0])
        page.wait_for_function(
            "Chart.getChart(document.getElementById('chart-gpu')).data.datasets"
            ".some((d) => d.role === 'used' && d.data.length === 2)",
            timeout=15_000,
        )
        expect(note).to_be_hidden()
        assert _gpu_points(page, "total") == 2 and _gpu_points(page, "job") == 2
        _gpu_samples(settings, job_id, [3100.0, 3150.0, 3150.0])
        page.wait_for_function(
            "Chart.getChart(document.getElementById('chart-gpu')).data.datasets"
            ".some((d) => d.role === 'used' && d.data.length === 5)",
            timeout=15_000,
        )
        assert _gpu_points(page, "job") == 5
        summary = page.locator("#gpu-summary")
        expect(summary).to_contain_text("GPU 0: 3150 MiB of 81559 MiB (this job 2650 MiB)")
        labels = page.evaluate(
            "Chart.getChart(document.getElementById('chart-gpu')).data.datasets.map((d) => d.label)"
        )
        assert labels == [
            "GPU 0 used · NVIDIA H100", "GPU 0 total (81559 MiB)", "GPU 0 this job",
        ]  # fmt: skip
        page.locator("#gpu-memory").scroll_into_view_if_needed()
        shot(page, "training-gpu.png")

        # A reload draws the same rows from the page, then follows on.
        page.reload()
        page.wait_for_function(
            "Chart.getChart(document.getElementById('chart-gpu')).data.datasets"
            ".some((d) => d.role === 'used' && d.data.length === 5)",
            timeout=15_000,
        )

        # A train job that ran on a worker without a GPU says so instead of drawing a chart.
        page.goto(f"/jobs/{cpu_job_id}")
        expect(note).to_be_visible()
        expect(note).to_contain_text("ran on a worker without an NVIDIA GPU")
        expect(page.locator("#chart-gpu")).to_be_hidden()
    assert js_errors == []
