"""Evaluation: the figures, the confusion picture, the model page, and the evaluate job."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from demo_model import DemoModel
from fastapi.testclient import TestClient
from sqlmodel import Session, select
from support import PASSWORD, login

from app.config import Settings
from app.db import get_engine, session_scope
from app.main import create_app
from app.models import DatasetVersion, Job, JobStatus, Role, TrainedModel
from app.services import auth, jobs, migrations
from app.services.confusion_plot import confusion_picture
from app.services.evaluation import (
    EvaluationError,
    evaluate,
    most_confused,
    run_evaluation,
    summary,
)

LABELS = ["Amanita muscaria", "Boletus edulis", "Cantharellus cibarius"]

# --- the figures ----------------------------------------------------------------------------


def test_evaluation_figures() -> None:
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
    result = evaluate(probs, [0, 1, 1, 2], 3, image_ids=[10, 11, 12, 13])
    assert result["top1"] == 0.75 and result["top5"] == 1.0
    assert result["confusion"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert result["per_class"][0]["precision"] == 0.5 and result["per_class"][1]["recall"] == 0.5
    assert result["misclassified"] == [
        {"image_id": 12, "truth": 1, "top5": [[0, 0.6], [1, 0.3], [2, 0.1]]}
    ]
    assert result["most_confused"] == [
        {"a": 0, "b": 1, "a_as_b": 0, "b_as_a": 1, "total": 1, "share": 1 / 3}
    ]
    assert set(summary(result)) == {"test_images", "top1", "top5", "macro_f1"}


def test_misclassified_are_the_most_confidently_wrong_first_and_bounded() -> None:
    truth = [0] * 6
    wrong_confidence = [0.5, 0.9, 0.7, 0.6, 0.95, 0.2]
    probs = np.array([[1 - p, p, 0.0] for p in wrong_confidence])
    probs[5] = [0.8, 0.2, 0.0]  # right
    result = evaluate(probs, truth, 3, image_ids=list(range(100, 106)), max_misclassified=3)
    assert [w["image_id"] for w in result["misclassified"]] == [104, 101, 102]
    assert all(w["top5"][0][0] == 1 for w in result["misclassified"])
    assert "misclassified" in result and evaluate(probs, truth, 3)["misclassified"] == []


def test_most_confused_counts_both_directions() -> None:
    confusion = [[8, 2, 0, 0], [3, 5, 0, 0], [0, 0, 9, 1], [0, 0, 0, 10]]
    pairs = most_confused(confusion)
    assert [(p["a"], p["b"], p["total"]) for p in pairs] == [(0, 1, 5), (2, 3, 1)]
    assert pairs[0]["a_as_b"] == 2 and pairs[0]["b_as_a"] == 3
    assert pairs[0]["share"] == pytest.approx(5 / 18)
    assert most_confused(np.eye(3, dtype=int) * 4) == []


def test_confusion_picture() -> None:
    picture = confusion_picture([[3, 1, 0], [0, 4, 0], [2, 0, 2]], LABELS)
    assert picture is not None
    assert len(picture.cells) == 9 and picture.total == 12 and picture.correct == 9
    diagonal = [c for c in picture.cells if c.diagonal]
    assert [c.count for c in diagonal] == [3, 4, 2]
    mixed = next(c for c in picture.cells if c.count == 2 and not c.diagonal)
    assert mixed.title == "Cantharellus cibarius taken for Amanita muscaria: 2 of 4 (50%)"
    assert mixed.share == 0.5 and picture.show_counts
    assert [a.full for a in picture.rows] == LABELS
    # Many classes: cells shrink to a floor, counts are left to the tooltips.
    many = confusion_picture(np.eye(120, dtype=int).tolist(), [f"s{i}" for i in range(120)])
    assert many is not None and many.cell >= 7 and not many.show_counts
    # Malformed or mismatched metrics: no picture, never an error.
    assert confusion_picture([[1, 2]], LABELS) is None
    assert confusion_picture(None, LABELS) is None
    assert confusion_picture([[1]], []) is None


# --- the model page -------------------------------------------------------------------------


@pytest.fixture
def lite(tmp_path: Path) -> Settings:
    (tmp_path / "data").mkdir()
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    migrations.upgrade(settings.db_url)
    with session_scope(settings.db_url) as session:
        auth.create_user(session, "cora", PASSWORD, Role.curator)
        auth.create_user(session, "vic", PASSWORD, Role.viewer)
    return settings


def _model(settings: Settings, metrics: dict) -> int:
    with session_scope(settings.db_url) as session:
        version = session.exec(select(DatasetVersion)).first()
        if version is None:
            version = DatasetVersion(name="autumn", policy={}, stats={})
            session.add(version)
            session.flush()
        assert version.id is not None
        row = TrainedModel(
            name="MobileNetV3Small on autumn", dataset_version_id=version.id,
            backbone="MobileNetV3Small", input_size=96, labels=LABELS, metrics=metrics,
            path="models/job-1/model.keras", size_bytes=1_500_000,
        )  # fmt: skip
        session.add(row)
        session.flush()
        assert row.id is not None
        return row.id


@pytest.fixture
def client(lite: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(lite), base_url="http://testserver") as client:
        yield client


def test_model_page_shows_the_evaluation(lite: Settings, client: TestClient) -> None:
    probs = np.array(
        [[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.1, 0.8, 0.1]]
    )
    metrics = {**evaluate(probs, [0, 1, 1, 2, 2], 3, image_ids=[5, 6, 7, 8, 9]), "epochs": 4}
    model_id = _model(lite, metrics)
    login(client, "vic", PASSWORD)
    page = client.get(f"/models/{model_id}")
    assert page.status_code == 200
    html = page.text
    assert 'data-metric="top1">60.0 %' in html and 'data-metric="test_images">5' in html
    # The confusion matrix as SVG: nine cells, counts, and tooltips in words.
    assert html.count('class="confusion-cell') == 9
    assert "Cantharellus cibarius taken for Boletus edulis: 1 of 2 (50%)" in html
    # Most confused pairs in words, both directions.
    pairs = re.search(r'<table class="data confused-pairs">.*?</table>', html, re.S)
    assert pairs and "<em>Amanita muscaria</em> → <em>Boletus edulis</em>: 0" in pairs[0]
    # Weakest species first.
    classes = re.findall(r'<tr data-class-index="(\d)">', html)
    assert classes[0] in ("1", "2") and classes[-1] == "0"
    # Misclassified photos, with thumbnails and their top-5, the true species marked.
    cards = re.findall(
        r'<li class="misclassified-card" data-image-id="(\d+)">(.*?)</li>\s*</ol>', html, re.S
    )
    assert [c[0] for c in cards] == ["9", "7"]  # 0.8 wrong before 0.6 wrong
    assert (
        'src="/media/thumbs/9"' in cards[0][1]
        and "True: <em>Cantharellus cibarius</em>" in cards[0][1]
    )
    assert (
        '<li class="is-correct"><span class="top5-label"><em>Cantharellus cibarius</em>'
        in cards[0][1]
    )
    # A viewer sees no button that changes anything.
    assert 'id="evaluate"' not in html
    assert client.get("/models/999").status_code == 404


def test_model_page_without_detail_figures(lite: Settings, client: TestClient) -> None:
    """A model evaluated before pictures existed, or one without a test split, still renders."""
    old = _model(lite, {"top1": 0.5, "top5": 1.0, "test_images": 4, "confusion": [[1]]})
    none = _model(lite, {"epochs": 3})
    login(client, "cora", PASSWORD)
    page = client.get(f"/models/{old}").text
    assert "have no confusion matrix" in page and "did not keep per-photo predictions" in page
    assert 'id="evaluate"' in page
    assert "No evaluation yet" in client.get(f"/models/{none}").text


def test_evaluate_button_queues_a_job_for_curators_only(lite: Settings, client: TestClient) -> None:
    model_id = _model(lite, {})
    csrf = login(client, "vic", PASSWORD)
    refused = client.post(f"/models/{model_id}/evaluate", data={"csrf_token": csrf})
    assert refused.status_code == 403
    client.cookies.clear()
    csrf = login(client, "cora", PASSWORD)
    assert client.post(f"/models/{model_id}/evaluate", data={}).status_code == 403  # no CSRF
    assert client.post("/models/999/evaluate", data={"csrf_token": csrf}).status_code == 404
    queued = client.post(
        f"/models/{model_id}/evaluate", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert queued.status_code == 303
    with Session(get_engine(lite.db_url)) as session:
        job = session.exec(select(Job)).one()
        assert queued.headers["location"] == f"/jobs/{job.id}"
        assert job.kind == "evaluate" and job.queue == "gpu" and job.status == JobStatus.queued
        assert job.params == {"trained_model_id": model_id, "batch_size": 32}
    page = client.get(f"/models/{model_id}").text
    assert f'href="/jobs/{job.id}">job {job.id}</a>' in page  # the running evaluation is shown
    assert re.search(r'id="evaluate"[^>]*disabled', page)
    with session_scope(lite.db_url) as session:
        jobs.finish_job(session, job.id, JobStatus.succeeded, from_states=[JobStatus.queued])
    done = client.get(f"/jobs/{job.id}").text
    assert f'<a href="/models/{model_id}" id="job-model">' in done


# --- the evaluate job on a real model -------------------------------------------------------


@pytest.fixture
def own_copy(demo_model: DemoModel, tmp_path: Path) -> Settings:
    """The shared demo model's data directory (database included), copied to change freely."""
    shutil.copytree(demo_model.settings.data_dir, tmp_path / "data")
    return Settings(_env_file=None, data_dir=tmp_path / "data")


def test_evaluate_job_redoes_the_figures(own_copy: Settings, demo_model: DemoModel) -> None:
    with Session(get_engine(own_copy.db_url), expire_on_commit=False) as session:
        row = session.get(TrainedModel, demo_model.trained_model_id)
        assert row is not None
        before = dict(row.metrics)
        # An older evaluation without the pictures' figures, and training's own figures.
        row.metrics = {k: v for k, v in before.items() if k not in ("misclassified", "top1")}
        session.add(row)
        session.commit()
        seen: list[float] = []
        metrics = run_evaluation(
            session, own_copy, {"trained_model_id": row.id},
            progress=lambda fraction, text: seen.append(fraction),
        )  # fmt: skip
    assert metrics["top1"] == before["top1"] and metrics["confusion"] == before["confusion"]
    assert metrics["misclassified"] == before["misclassified"]
    assert metrics["epochs"] == before["epochs"]  # training's figures are kept
    assert seen[-1] == 1.0
    print(f"demo model: test top-1 {metrics['top1']:.3f} on {metrics['test_images']} photos")


def test_evaluate_job_refuses_what_it_cannot_do(own_copy: Settings, demo_model: DemoModel) -> None:
    with Session(get_engine(own_copy.db_url)) as session:
        with pytest.raises(EvaluationError, match="there is no trained model 999"):
            run_evaluation(session, own_copy, {"trained_model_id": 999})
        row = session.get(TrainedModel, demo_model.trained_model_id)
        assert row is not None
        (own_copy.data_dir / row.path).unlink()
        with pytest.raises(EvaluationError, match="is missing from the data directory"):
            run_evaluation(session, own_copy, {"trained_model_id": row.id})
