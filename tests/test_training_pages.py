"""The training form, the job page's metrics stream and the Models page (SQLite, no TensorFlow)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select
from support import PASSWORD, login

from app.config import Settings
from app.db import get_engine, session_scope
from app.main import create_app
from app.models import DatasetVersion, Job, JobMetric, JobStatus, Role, TrainedModel
from app.routes.training import metric_messages
from app.services import auth, migrations
from app.services.training import TrainParams


@pytest.fixture
def lite(tmp_path: Path) -> Settings:
    (tmp_path / "data").mkdir()
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    migrations.upgrade(settings.db_url)
    with session_scope(settings.db_url) as session:
        auth.create_user(session, "cora", PASSWORD, Role.curator)
        auth.create_user(session, "vic", PASSWORD, Role.viewer)
        session.add(DatasetVersion(name="v1", policy={}, stats={"classes": 3}))
    return settings


@pytest.fixture
def db(lite: Settings) -> Iterator[Session]:
    with Session(get_engine(lite.db_url), expire_on_commit=False) as session:
        yield session


@pytest.fixture
def curator(lite: Settings) -> Iterator[tuple[TestClient, str]]:
    with TestClient(create_app(lite), base_url="http://testserver") as client:
        yield client, login(client, "cora", PASSWORD)


def _version_id(db: Session) -> int:
    version = db.exec(select(DatasetVersion)).one()
    assert version.id is not None
    return version.id


def _form(page: str) -> dict[str, str]:
    """The values a browser would submit from the rendered form."""
    form: dict[str, str] = {}
    for tag in re.findall(r"<input[^>]*>", page):
        name = re.search(r'name="([^"]+)"', tag)
        if not name:
            continue
        if 'type="checkbox"' in tag:
            if " checked" in tag:
                form[name[1]] = "on"
            continue
        value = re.search(r'value="([^"]*)"', tag)
        form[name[1]] = value[1] if value else ""
    for name, body in re.findall(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', page, re.S):
        chosen = re.search(r'<option(?: value="([^"]*)")? selected>([^<]*)<', body)
        assert chosen, name
        form[name] = chosen[1] if chosen[1] is not None else chosen[2]
    return form


def test_dataset_page_links_to_the_form_with_defaults(
    curator: tuple[TestClient, str], db: Session, lite: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = curator
    monkeypatch.setenv("KERAS_HOME", str(lite.data_dir / "no-keras"))
    version_id = _version_id(db)
    assert (
        f"/training/new?dataset_version_id={version_id}"
        in client.get(f"/datasets/{version_id}").text
    )
    page = client.get(f"/training/new?dataset_version_id={version_id}")
    assert page.status_code == 200
    form = _form(page.text)
    defaults = TrainParams(dataset_version_id=version_id)
    assert form["dataset_version_id"] == str(version_id)
    assert form["backbone"] == defaults.backbone == "MobileNetV3Small"
    # No ImageNet weights here: the form starts from scratch and says how to get them.
    assert form["weights"] == "none"
    assert "No ImageNet weights on this machine" in page.text
    assert "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5" in page.text
    assert form["image_size"] == "224" and form["batch_size"] == "32"
    assert form["head_epochs"] == "5" and float(form["head_lr"]) == 1e-3
    assert form["fine_epochs"] == "5" and form["fine_last"] == "30"
    assert float(form["fine_lr"]) == 1e-4
    assert form["augment"] == "on" and form["class_weights"] == "on"
    assert float(form["aug_magnitude"]) == 0.1 and float(form["dropout"]) == 0.2
    assert client.get("/training/new?dataset_version_id=999").status_code == 404
    lite.weights_path.mkdir(parents=True)
    (lite.weights_path / "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5").write_bytes(b"w")
    page = client.get(f"/training/new?dataset_version_id={version_id}")
    assert _form(page.text)["weights"] == "imagenet"
    assert "ImageNet weights are here for MobileNetV3Small." in page.text


def test_invalid_values_re_render_the_form_with_the_messages(
    curator: tuple[TestClient, str], db: Session
) -> None:
    client, csrf = curator
    form = _form(client.get(f"/training/new?dataset_version_id={_version_id(db)}").text)
    form["csrf_token"] = csrf

    zero = client.post("/training", data={**form, "head_epochs": "0"})
    assert zero.status_code == 422
    assert re.search(r'data-error-for="head_epochs">a phase needs at least 1 epoch', zero.text)
    assert 'value="0"' in zero.text  # what was typed stays in the form

    unknown = client.post("/training", data={**form, "backbone": "AlexNet"})
    assert unknown.status_code == 422
    assert "unknown backbone &#39;AlexNet&#39;" in unknown.text
    assert "<option selected>AlexNet</option>" in unknown.text

    scratch = client.post(
        "/training", data={**form, "weights": "none", "fine_epochs": "x", "dropout": "2"}
    )
    assert scratch.status_code == 422
    assert 'data-error-for="fine_epochs"' in scratch.text
    assert 'data-error-for="dropout"' in scratch.text
    assert db.exec(select(Job)).all() == []


def test_viewer_is_refused(lite: Settings, db: Session) -> None:
    with TestClient(create_app(lite), base_url="http://testserver") as client:
        csrf = login(client, "vic", PASSWORD)
        assert client.get("/training/new").status_code == 403
        refused = client.post("/training", data={"csrf_token": csrf, "dataset_version_id": "1"})
        assert refused.status_code == 403
    # The dataset page hides the button from viewers.
    with TestClient(create_app(lite), base_url="http://testserver") as client:
        login(client, "vic", PASSWORD)
        assert "/training/new" not in client.get(f"/datasets/{_version_id(db)}").text


def test_valid_form_queues_a_train_job(
    curator: tuple[TestClient, str], db: Session, lite: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, csrf = curator
    version_id = _version_id(db)
    form = _form(client.get(f"/training/new?dataset_version_id={version_id}").text)
    form.update(
        csrf_token=csrf, backbone="EfficientNetV2B0", head_epochs="3", fine_epochs="2",
        fine_last="12", aug_magnitude="0.2", seed="7", weights="imagenet",
    )  # fmt: skip
    del form["class_weights"]  # an unticked box is not sent
    # ImageNet weights must be where the workers will look for them.
    monkeypatch.setenv("KERAS_HOME", str(lite.data_dir / "no-keras"))
    missing = client.post("/training", data=form, follow_redirects=False)
    assert missing.status_code == 422
    error = re.search(r'<p class="field-error" data-error-for="weights">([^<]*)', missing.text)
    assert error and "no ImageNet weights for EfficientNetV2B0" in error[1]
    assert db.exec(select(Job)).first() is None  # nothing queued
    lite.weights_path.mkdir(parents=True)
    (lite.weights_path / "efficientnetv2-b0_notop.h5").write_bytes(b"weights")
    response = client.post("/training", data=form, follow_redirects=False)
    assert response.status_code == 303, response.text
    job = db.exec(select(Job)).one()
    assert response.headers["location"] == f"/jobs/{job.id}"
    assert job.kind == "train" and job.status == JobStatus.queued and job.queue == "gpu"
    params = TrainParams.model_validate(job.params)
    assert params.dataset_version_id == version_id and params.backbone == "EfficientNetV2B0"
    assert [p.epochs for p in params.phases] == [3, 2]
    assert params.phases[0].unfreeze == "head" and job.params["phases"][1]["unfreeze"] == {
        "last": 12
    }
    assert params.augmentation.zoom == 0.2 and params.augmentation.rotation == 0.1
    assert params.class_weights is False and params.seed == 7

    off = client.post("/training", data={**form, "augment": ""}, follow_redirects=False)
    assert off.status_code == 303
    newest = db.exec(select(Job).order_by(Job.id.desc())).first()  # type: ignore[union-attr]
    assert newest is not None and newest.params["augmentation"]["flip"] is False

    page = client.get(f"/jobs/{job.id}")
    assert 'id="chart-loss"' in page.text and "chart.umd.min.js" in page.text


def _train_job(settings: Settings, status: JobStatus) -> int:
    with session_scope(settings.db_url) as session:
        job = Job(kind="train", queue="gpu", status=status, params={"phases": [{"epochs": 2}]})
        session.add(job)
        session.flush()
        assert job.id is not None
        return job.id


def _metric(settings: Settings, job_id: int, epoch: int, **values: Any) -> int:
    with session_scope(settings.db_url) as session:
        row = JobMetric(job_id=job_id, phase=0, epoch=epoch, step=epoch * 10, values=values)
        session.add(row)
        session.flush()
        assert row.id is not None
        return row.id


class _Request:
    async def is_disconnected(self) -> bool:
        return False


def test_metrics_stream_sends_rows_after_the_last_event_id(lite: Settings) -> None:
    job_id = _train_job(lite, JobStatus.succeeded)
    first = _metric(lite, job_id, 1, loss=2.0, val_loss=2.1, end=True)
    second = _metric(lite, job_id, 2, loss=1.5, val_loss=1.7, end=True)
    other = _train_job(lite, JobStatus.running)
    _metric(lite, other, 1, loss=9.0)

    async def collect(after: int) -> list[Any]:
        request: Any = _Request()
        return [m async for m in metric_messages(request, lite, job_id, after)]

    messages = asyncio.run(collect(first))
    assert [m.event for m in messages] == ["metrics", "done"]
    rows = json.loads(messages[0].data)
    assert [r["id"] for r in rows] == [second] and messages[0].id == str(second)
    assert rows[0]["loss"] == 1.5 and rows[0]["epoch"] == 2 and rows[0]["end"] is True
    assert [len(json.loads(m.data)) for m in asyncio.run(collect(0))[:-1]] == [2]

    # Over HTTP: the browser's Last-Event-ID wins over ?after=.
    with TestClient(create_app(lite), base_url="http://testserver") as client:
        login(client, "cora", PASSWORD)
        response = client.get(
            f"/jobs/{job_id}/metrics/stream?after=0", headers={"Last-Event-ID": str(second)}
        )
        assert response.status_code == 200
        assert "event: done" in response.text and "event: metrics" not in response.text
        page = client.get(f"/jobs/{job_id}")
        embedded = re.search(r'id="train-metrics">(.*?)</script>', page.text, re.S)
        assert embedded and [r["id"] for r in json.loads(embedded[1])] == [first, second]


def test_charts_only_on_train_jobs(curator: tuple[TestClient, str], lite: Settings) -> None:
    client, _ = curator
    with session_scope(lite.db_url) as session:
        job = Job(kind="ping", queue="io", status=JobStatus.succeeded)
        session.add(job)
        session.flush()
        ping_id = job.id
    page = client.get(f"/jobs/{ping_id}")
    assert page.status_code == 200
    assert 'id="train-charts"' not in page.text and "chart.umd.min.js" not in page.text


def test_models_page_lists_trained_models(curator: tuple[TestClient, str], db: Session) -> None:
    client, _ = curator
    empty = client.get("/models")
    assert empty.status_code == 200 and "No trained models yet" in empty.text
    version_id = _version_id(db)
    job = Job(kind="train", queue="gpu", status=JobStatus.succeeded)
    db.add(job)
    db.flush()
    db.add(
        TrainedModel(
            name="MobileNetV3Small on v1 (job 4)", job_id=job.id, dataset_version_id=version_id,
            backbone="MobileNetV3Small", input_size=224, labels=["a", "b"],
            metrics={"top1": 0.8134, "top5": 0.97, "macro_f1": 0.7891}, path="models/x.keras",
            size_bytes=4_200_000,
        )
    )  # fmt: skip
    db.commit()
    page = client.get("/models")
    assert "No trained models yet" not in page.text
    row = re.search(r"<tr data-model-id=.*?</tr>", page.text, re.S)
    assert row
    for text in ("MobileNetV3Small on v1 (job 4)", "224 px", ">v1</a>", "81.3 %", "97.0 %",
                 "0.789", "4.2 MB", f'href="/jobs/{job.id}"'):  # fmt: skip
        assert text in row[0], text


def test_a_stopped_run_resumes_from_its_checkpoint(
    curator: tuple[TestClient, str], db: Session, lite: Settings
) -> None:
    from app.services.training import checkpoint_dir

    client, csrf = curator
    params = TrainParams(dataset_version_id=_version_id(db), weights=None).model_dump(mode="json")
    early = Job(kind="train", queue="gpu", params=params, status=JobStatus.cancelled)
    stopped = Job(kind="train", queue="gpu", params=params, status=JobStatus.failed)
    running = Job(kind="train", queue="gpu", params=params, status=JobStatus.running)
    db.add_all([early, stopped, running])
    db.commit()
    folder = checkpoint_dir(lite, stopped.id)
    folder.mkdir(parents=True)
    (folder / "progress.json").write_text("{}")

    page = client.get(f"/jobs/{stopped.id}").text
    assert 'id="resume"' in page and 'id="resume"' not in client.get(f"/jobs/{running.id}").text
    refused = client.post(f"/jobs/{early.id}/resume", data={"csrf_token": csrf})
    assert refused.status_code == 409 and "before it finished an epoch" in refused.text
    assert client.post(f"/jobs/{running.id}/resume", data={"csrf_token": csrf}).status_code == 409

    response = client.post(
        f"/jobs/{stopped.id}/resume", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert response.status_code == 303
    resumed = db.exec(select(Job).order_by(Job.id.desc())).first()
    assert response.headers["location"] == f"/jobs/{resumed.id}"
    assert resumed.params["resume_from_job"] == stopped.id and resumed.status == JobStatus.queued
