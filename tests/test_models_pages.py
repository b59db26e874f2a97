"""The Models page, downloads, the Export form and Try it (SQLite; a real TFLite file at the end).

Most tests build a small world by hand: a trained model with three exports whose files are a few
bytes (nothing here reads them as models). The last ones export the session's demo model to a
real float32 TFLite file and run photos through it.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from demo_model import DemoModel
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image as PILImage
from sqlmodel import Session, col, select
from support import PASSWORD, login

from app.config import Settings
from app.db import get_engine, session_scope
from app.main import create_app
from app.models import DatasetVersion, Job, JobStatus, ModelExport, Role, TrainedModel
from app.services import auth, migrations
from app.services.exports import EXPORT_KINDS, SAFETY_STATEMENT, ExportParams
from app.services.model_catalog import (
    KIND_ORDER,
    check_photo,
    default_export_id,
    list_models,
    pareto_front,
)

# --- the Pareto front -----------------------------------------------------------------------


@dataclass(frozen=True)
class P:
    name: str
    size_bytes: float | None
    accuracy: float | None


def names(points: list[P]) -> list[str]:
    return [p.name for p in points]


def test_pareto_front_cases() -> None:
    assert pareto_front([]) == []
    assert names(pareto_front([P("a", 5, 0.5)])) == ["a"]
    # A larger, less accurate point is beaten; the staircase keeps the rest, smallest first.
    assert names(pareto_front([P("big", 4, 0.9), P("worse", 3, 0.75), P("small", 1, 0.7),
                               P("mid", 2, 0.8)])) == ["small", "mid", "big"]  # fmt: skip
    # Larger but exactly as accurate: beaten by the smaller one.
    assert names(pareto_front([P("a", 1, 0.8), P("b", 2, 0.8)])) == ["a"]
    # The same size: the more accurate one wins; exact ties are both on the front.
    assert names(pareto_front([P("a", 2, 0.8), P("b", 2, 0.9)])) == ["b"]
    assert names(pareto_front([P("a", 2, 0.9), P("b", 2, 0.9)])) == ["a", "b"]
    # Not measured (no size or no accuracy): left out, never on the front.
    assert names(pareto_front([P("a", None, 1.0), P("b", 3, None), P("c", 9, 0.1)])) == ["c"]
    # Any attributes, through key functions.
    pairs = [(3.0, 0.9), (1.0, 0.5), (2.0, 0.4)]
    assert pareto_front(pairs, size=lambda p: p[0], accuracy=lambda p: p[1]) == [
        (1.0, 0.5),
        (3.0, 0.9),
    ]


@given(
    st.lists(
        st.tuples(st.integers(1, 20), st.integers(0, 10)).map(lambda t: P("", t[0], t[1] / 10)),
        max_size=12,
    )
)
def test_pareto_front_matches_the_definition(points: list[P]) -> None:
    def beaten(p: P) -> bool:
        return any(
            q.size_bytes <= p.size_bytes  # type: ignore[operator]
            and q.accuracy >= p.accuracy  # type: ignore[operator]
            and (q.size_bytes < p.size_bytes or q.accuracy > p.accuracy)  # type: ignore[operator]
            for q in points
        )

    front = pareto_front(points)
    assert sorted(map(id, front)) == sorted(id(p) for p in points if not beaten(p))
    assert [p.size_bytes for p in front] == sorted(p.size_bytes for p in front)


def test_kinds_follow_the_export_engine() -> None:
    assert KIND_ORDER == EXPORT_KINDS
    assert ExportParams(trained_model_id=1).int8_io == "uint8"


# --- a world with one model and three exports -------------------------------------------------

EXPORTS = (
    # kind, input dtype, size, top-1, top-5, agreement
    ("float32", "float32", 4_000_000, 0.91, 0.99, 1.0),
    ("float16", "float32", 2_000_000, 0.91, 0.99, 1.0),
    ("int8", "uint8", 1_000_000, 0.86, 0.97, 0.93),
)


@dataclass
class World:
    settings: Settings
    model_id: int
    export_ids: dict[str, int]


@pytest.fixture
def world(tmp_path: Path) -> World:
    (tmp_path / "data").mkdir()
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", max_try_bytes=200_000)
    migrations.upgrade(settings.db_url)
    data = settings.data_dir
    with session_scope(settings.db_url) as session:
        auth.create_user(session, "cora", PASSWORD, Role.curator)
        auth.create_user(session, "vic", PASSWORD, Role.viewer)
        version = DatasetVersion(name="v1", policy={}, stats={"classes": 2})
        session.add(version)
        session.flush()
        assert version.id is not None
        (data / "models" / "m1").mkdir(parents=True)
        (data / "models" / "m1" / "model.keras").write_bytes(b"KERAS" * 100)
        model = TrainedModel(
            name="MobileNetV3Small on v1 (job 4)", dataset_version_id=version.id,
            backbone="MobileNetV3Small", input_size=64, labels=["Amanita muscaria", "Boletus"],
            metrics={"top1": 0.92, "top5": 1.0, "macro_f1": 0.9}, path="models/m1/model.keras",
            size_bytes=9_000_000,
        )  # fmt: skip
        session.add(model)
        session.flush()
        assert model.id is not None
        ids: dict[str, int] = {}
        for kind, dtype, size, top1, top5, agree in EXPORTS:
            key = f"int8-{dtype}" if kind == "int8" else kind
            folder = data / "exports" / f"model-{model.id}" / key
            folder.mkdir(parents=True)
            (folder / "model.tflite").write_bytes(f"TFL3 {key}".encode())
            with zipfile.ZipFile(folder / "bundle.zip", "w") as bundle:
                bundle.writestr("model.tflite", f"TFL3 {key}")
                bundle.writestr("labels.txt", "Amanita muscaria\nBoletus\n")
            export = ModelExport(
                trained_model_id=model.id, quantization=kind, input_dtype=dtype,
                output_dtype=dtype, path=f"exports/model-{model.id}/{key}/model.tflite",
                bundle_path=f"exports/model-{model.id}/{key}/bundle.zip", size_bytes=size,
                test_images=40, top1_agreement=agree, accuracy=top1, top5_accuracy=top5,
                latency_ms=3.25, latency_p95_ms=4.5,
            )  # fmt: skip
            session.add(export)
            session.flush()
            assert export.id is not None
            ids[kind] = export.id
        return World(settings, model.id, ids)


def _client(world: World, user: str) -> Iterator[tuple[TestClient, str]]:
    with TestClient(create_app(world.settings), base_url="http://testserver") as client:
        yield client, login(client, user, PASSWORD)


@pytest.fixture
def curator(world: World) -> Iterator[tuple[TestClient, str]]:
    yield from _client(world, "cora")


@pytest.fixture
def viewer(world: World) -> Iterator[tuple[TestClient, str]]:
    yield from _client(world, "vic")


def _chart(page: str) -> dict[str, Any]:
    found = re.search(r'id="models-chart-data">(.*?)</script>', page, re.S)
    assert found, "no chart data in the page"
    return json.loads(found[1])


def test_models_page_lists_exports_with_the_pareto_front(
    curator: tuple[TestClient, str], world: World
) -> None:
    client, _ = curator
    page = client.get("/models")
    assert page.status_code == 200
    text = page.text
    ids = world.export_ids
    rows = {
        kind: re.search(rf'<tr data-export-id="{i}".*?</tr>', text, re.S) for kind, i in ids.items()
    }
    assert all(rows.values())
    float32, float16, int8 = (rows[k][0] for k in ("float32", "float16", "int8"))  # type: ignore[index]
    # float32 is beaten by float16 (half the size, as accurate); int8 is the smallest.
    assert "Pareto" not in float32 and "Pareto" in float16 and "Pareto" in int8
    times = "\N{MULTIPLICATION SIGN}"
    assert f"0.50{times}" in float16 and f"0.25{times}" in int8 and f"1.00{times}" in float32
    assert "86.0 %" in int8 and "93.0 %" in int8 and "3.2 ms" in int8 and "4.5 ms" in int8
    assert "<code>uint8</code>" in int8
    for kind, i in ids.items():
        assert f'href="/exports/{i}/model.tflite"' in rows[kind][0]  # type: ignore[index]
        assert f'href="/exports/{i}/bundle.zip"' in rows[kind][0]  # type: ignore[index]
        assert f'href="/try?export={i}"' in rows[kind][0]  # type: ignore[index]
    assert f'href="/models/{world.model_id}/model.keras"' in text
    assert f'action="/models/{world.model_id}/exports"' in text  # curators may export

    chart = _chart(text)
    kinds = sorted(p["kind"] for p in chart["points"])
    assert kinds == ["float16", "float32", "int8", "keras"]
    keras = next(p for p in chart["points"] if p["kind"] == "keras")
    assert keras["size_mb"] == 9.0 and keras["accuracy"] == 0.92 and keras["pareto"] is False
    assert chart["front"] == [
        {"size_mb": 1.0, "accuracy": 0.86},
        {"size_mb": 2.0, "accuracy": 0.91},
    ]
    assert "chart.umd.min.js" in text and "/static/js/models-chart.js" in text

    with Session(get_engine(world.settings.db_url)) as db:
        # Try it starts with the most accurate export on the front.
        assert default_export_id(list_models(db, world.settings.data_dir)) == ids["float16"]


def test_viewer_sees_no_export_form(viewer: tuple[TestClient, str], world: World) -> None:
    client, _ = viewer
    text = client.get("/models").text
    assert f'href="/exports/{world.export_ids["int8"]}/bundle.zip"' in text
    assert '/exports"' not in text and 'class="export-form"' not in text


# --- downloads ------------------------------------------------------------------------------


def test_downloads_serve_the_files(curator: tuple[TestClient, str], world: World) -> None:
    client, _ = curator
    keras = client.get(f"/models/{world.model_id}/model.keras")
    assert keras.status_code == 200 and keras.content == b"KERAS" * 100
    assert keras.headers["content-type"] == "application/octet-stream"
    assert keras.headers["x-content-type-options"] == "nosniff"
    assert (
        'filename="sporeprint-mobilenetv3small-on-v1-job-4.keras"'
        in keras.headers["content-disposition"]
    )

    int8 = world.export_ids["int8"]
    tflite = client.get(f"/exports/{int8}/model.tflite")
    assert tflite.status_code == 200 and tflite.content == b"TFL3 int8-uint8"
    assert tflite.headers["content-disposition"].startswith("attachment;")
    assert (
        'filename="sporeprint-mobilenetv3small-on-v1-job-4-int8-uint8.tflite"'
        in tflite.headers["content-disposition"]
    )
    bundle = client.get(f"/exports/{world.export_ids['float16']}/bundle.zip")
    assert bundle.status_code == 200 and bundle.headers["content-type"] == "application/zip"
    assert (
        "sporeprint-mobilenetv3small-on-v1-job-4-float16.zip"
        in bundle.headers["content-disposition"]
    )
    with zipfile.ZipFile(io.BytesIO(bundle.content)) as z:
        assert z.read("model.tflite") == b"TFL3 float16"


def test_downloads_404_for_missing_rows_and_files(
    curator: tuple[TestClient, str], world: World
) -> None:
    client, _ = curator
    assert client.get("/models/999/model.keras").status_code == 404
    missing = client.get("/exports/999/model.tflite")
    assert missing.status_code == 404 and "there is no export 999" in missing.text
    assert client.get("/exports/999/bundle.zip").status_code == 404

    float32 = world.export_ids["float32"]
    (
        world.settings.data_dir / "exports" / f"model-{world.model_id}" / "float32" / "model.tflite"
    ).unlink()
    gone = client.get(f"/exports/{float32}/model.tflite")
    assert gone.status_code == 404
    assert "missing from the data directory" in gone.text
    assert "export the model again" in gone.text
    assert client.get(f"/exports/{float32}/bundle.zip").status_code == 200  # still there
    # The page says so instead of offering the link.
    row = re.search(rf'<tr data-export-id="{float32}".*?</tr>', client.get("/models").text, re.S)
    assert row and "file missing" in row[0] and "model.tflite" not in row[0]

    (world.settings.data_dir / "models" / "m1" / "model.keras").unlink()
    keras = client.get(f"/models/{world.model_id}/model.keras")
    assert keras.status_code == 404 and "train the model again" in keras.text


def test_a_path_outside_the_data_dir_is_never_served(
    curator: tuple[TestClient, str], world: World, tmp_path: Path
) -> None:
    client, _ = curator
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    (world.settings.data_dir / "exports" / "link.tflite").symlink_to(secret)
    int8 = world.export_ids["int8"]
    for bad in ("../secret.txt", str(secret), "exports/link.tflite", "", "."):
        with session_scope(world.settings.db_url) as session:
            row = session.get(ModelExport, int8)
            assert row is not None
            row.path = bad
            row.bundle_path = bad
        for url in (f"/exports/{int8}/model.tflite", f"/exports/{int8}/bundle.zip"):
            response = client.get(url)
            assert response.status_code == 404, (bad, url)
            assert "do not serve" not in response.text
    with session_scope(world.settings.db_url) as session:
        model = session.get(TrainedModel, world.model_id)
        assert model is not None
        model.path = "../secret.txt"
    response = client.get(f"/models/{world.model_id}/model.keras")
    assert response.status_code == 404 and "do not serve" not in response.text


# --- the Export form ------------------------------------------------------------------------


def _jobs(world: World) -> list[Job]:
    with Session(get_engine(world.settings.db_url)) as db:
        return list(db.exec(select(Job).order_by(col(Job.id))).all())


def test_export_form_queues_an_export_job(curator: tuple[TestClient, str], world: World) -> None:
    client, csrf = curator
    page = client.get("/models").text
    form = re.search(r'<form method="post" action="/models/\d+/exports".*?</form>', page, re.S)
    assert form
    ticked = re.findall(r'name="kinds" value="(\w+)" checked', form[0])
    assert ticked == list(EXPORT_KINDS)  # all four by default
    assert re.search(r'<option value="uint8" selected>', form[0])

    response = client.post(
        f"/models/{world.model_id}/exports",
        data={"csrf_token": csrf, "kinds": ["int8", "float16"], "int8_io": "float32"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    (job,) = _jobs(world)
    assert response.headers["location"] == f"/jobs/{job.id}"
    assert job.kind == "export" and job.queue == "gpu" and job.status == JobStatus.queued
    assert job.params["trained_model_id"] == world.model_id
    assert job.params["kinds"] == ["float16", "int8"] and job.params["int8_io"] == "float32"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"int8_io": "uint8"}, "choose at least one kind of export"),
        ({"kinds": ["float64"], "int8_io": "uint8"}, "unknown export kind &#39;float64&#39;"),
        ({"kinds": ["int8"], "int8_io": "int16"}, "int8 input and output must be uint8 or float32"),
    ],
)
def test_export_form_refuses_bad_input(
    curator: tuple[TestClient, str], world: World, data: dict[str, Any], message: str
) -> None:
    client, csrf = curator
    response = client.post(f"/models/{world.model_id}/exports", data={"csrf_token": csrf, **data})
    assert response.status_code == 422
    assert re.search(rf'data-error-for="export">{re.escape(message)}', response.text)
    assert _jobs(world) == []


def test_export_form_refusals(
    viewer: tuple[TestClient, str], curator: tuple[TestClient, str], world: World
) -> None:
    vclient, vcsrf = viewer
    url = f"/models/{world.model_id}/exports"
    refused = vclient.post(url, data={"csrf_token": vcsrf, "kinds": ["float32"]})
    assert refused.status_code == 403 and "needs the curator role" in refused.text
    client, csrf = curator
    assert client.post(url, data={"kinds": ["float32"]}).status_code == 403  # no CSRF token
    assert client.post("/models/999/exports", data={"csrf_token": csrf}).status_code == 404
    assert _jobs(world) == []


# --- Try it: refusals -----------------------------------------------------------------------


def _listing(root: Path) -> dict[str, int]:
    """Every file under the data directory but the SQLite files, with its size."""
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(("sporeprint.db", "broker.db"))
    }


def _png(width: int, height: int, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    PILImage.new(mode, (width, height)).save(out, "PNG")
    return out.getvalue()


def test_try_page_preselects_the_best_pareto_export(
    curator: tuple[TestClient, str], world: World
) -> None:
    client, _ = curator
    page = client.get("/try")
    assert page.status_code == 200
    assert SAFETY_STATEMENT in page.text
    selected = re.findall(r'<option value="(\d+)" selected>', page.text)
    assert selected == [str(world.export_ids["float16"])]
    chosen = client.get(f"/try?export={world.export_ids['int8']}").text
    assert re.findall(r'<option value="(\d+)" selected>', chosen) == [str(world.export_ids["int8"])]
    assert client.get("/try?export=999").status_code == 404


@pytest.mark.parametrize("htmx", [True, False])
@pytest.mark.parametrize(
    ("photo", "status", "message"),
    [
        (b"", 400, "empty file"),
        (
            b"%PDF-1.4 not a photo at all" * 10,
            415,
            "not an image Sporeprint can read (JPEG, PNG, WebP",
        ),
        ("huge", 413, "too many pixels"),
    ],
)
def test_try_refuses_bad_uploads_and_stores_nothing(
    curator: tuple[TestClient, str], world: World, htmx: bool, photo: Any, status: int,
    message: str,
) -> None:  # fmt: skip
    client, csrf = curator
    if photo == "huge":
        photo = _png(9000, 8000, "1")  # 72 megapixels in a small file
    before = _listing(world.settings.data_dir)
    export = str(world.export_ids["int8"])
    # htmx sends the token in a header; a plain form post carries it as the first field.
    headers = {"HX-Request": "true", "X-CSRF-Token": csrf} if htmx else {}
    fields = {"export": export} if htmx else {"csrf_token": csrf, "export": export}
    response = client.post(
        "/try", data=fields, files={"photo": ("photo.jpg", photo, "image/jpeg")}, headers=headers
    )
    assert response.status_code == status, response.text
    assert message in response.text.replace("&#39;", "'")
    if htmx:
        assert "data-try-fragment" in response.text and "<html" not in response.text
    else:
        assert "<html" in response.text and 'id="try-form"' in response.text
    assert _listing(world.settings.data_dir) == before


def test_try_refuses_an_oversized_upload_unread(
    curator: tuple[TestClient, str], world: World
) -> None:
    client, csrf = curator
    before = _listing(world.settings.data_dir)
    big = _png(8, 8) + b"\0" * 300_000  # the world's Try it limit is 200 kB
    for headers, fields in (
        ({"HX-Request": "true", "X-CSRF-Token": csrf}, {}),
        ({}, {"csrf_token": csrf}),
    ):
        response = client.post(
            "/try", data={**fields, "export": str(world.export_ids["int8"])},
            files={"photo": ("big.png", big, "image/png")}, headers=headers,
        )  # fmt: skip
        assert response.status_code == 413
        assert "larger than the limit of 195.3 KiB" in response.text
        assert "SPOREPRINT_MAX_TRY_BYTES" in response.text
    # Just over the limit: within the form's overhead allowance, so it is refused while read.
    nearly = _png(8, 8) + b"\0" * 205_000
    response = client.post(
        "/try", data={"export": str(world.export_ids["int8"])},
        files={"photo": ("nearly.png", nearly, "image/png")},
        headers={"HX-Request": "true", "X-CSRF-Token": csrf},
    )  # fmt: skip
    assert response.status_code == 413 and "SPOREPRINT_MAX_TRY_BYTES" in response.text
    assert _listing(world.settings.data_dir) == before


def test_try_without_a_photo_or_token(curator: tuple[TestClient, str], world: World) -> None:
    client, csrf = curator
    export = str(world.export_ids["int8"])
    nothing = client.post(
        "/try", data={"csrf_token": csrf, "export": export},
        files={"photo": ("", b"", "application/octet-stream")},  # no file chosen
    )  # fmt: skip
    assert nothing.status_code == 400 and "choose a photo to upload" in nothing.text
    no_such = client.post("/try", data={"csrf_token": csrf, "export": export, "image_id": "999"},
                          files={"photo": ("", b"", "application/octet-stream")})  # fmt: skip
    assert no_such.status_code == 404 and "there is no such image" in no_such.text
    stale = client.post(
        "/try", data={"csrf_token": "nope", "export": export},
        files={"photo": ("p.png", _png(8, 8), "image/png")},
    )  # fmt: skip
    assert stale.status_code == 403
    form = client.post("/try", data={"csrf_token": csrf, "export": export})
    assert form.status_code == 400 and "multipart/form-data" in form.text


def test_check_photo_reads_only_the_header() -> None:
    assert check_photo(_png(40, 30)) == (40, 30)


# --- Try it: a real TFLite file -------------------------------------------------------------

_EXPORTED: dict[str, tuple[Settings, int]] = {}


def exported_world(demo_model: DemoModel, root: Path) -> tuple[Settings, int]:
    """A copy of the demo world with the demo model exported to float32 TFLite; made once per
    test session (the browser tests use it too). Returns its settings and the export's id."""
    key = str(demo_model.settings.data_dir)
    if key not in _EXPORTED:
        from app.services.exports import run_export

        shutil.copytree(demo_model.settings.data_dir, root / "data")
        settings = Settings(_env_file=None, data_dir=root / "data")
        with Session(get_engine(settings.db_url), expire_on_commit=False) as session:
            params = {"trained_model_id": demo_model.trained_model_id, "kinds": ["float32"],
                      "latency_images": 3}  # fmt: skip
            (row,) = run_export(session, settings, params, job_id=None)
            assert row.id is not None
            for name, role in (("cora", Role.curator), ("vic", Role.viewer)):
                auth.create_user(session, name, PASSWORD, role)
            session.commit()
        _EXPORTED[key] = (settings, row.id)
    return _EXPORTED[key]


@pytest.fixture(scope="module")
def real(demo_model: DemoModel, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, int]:
    return exported_world(demo_model, tmp_path_factory.mktemp("exported"))


def _test_photo(settings: Settings, model_id: int) -> tuple[int, bytes]:
    from app.models import DatasetItem, Image

    with Session(get_engine(settings.db_url)) as db:
        model = db.get(TrainedModel, model_id)
        assert model is not None
        image = db.exec(
            select(Image)
            .join(DatasetItem, col(Image.id) == col(DatasetItem.image_id))
            .where(DatasetItem.dataset_version_id == model.dataset_version_id,
                   DatasetItem.split == "test")
            .order_by(col(DatasetItem.image_id))
        ).first()  # type: ignore[misc]  # fmt: skip
        assert image.id is not None and image.path
        return image.id, (settings.data_dir / image.path).read_bytes()


def _guesses(html: str) -> list[tuple[str, float]]:
    return [
        (label, float(p))
        for label, p in re.findall(r'data-label="([^"]+)" data-probability="([^"]+)"', html)
    ]


def test_try_runs_the_tflite_file(real: tuple[Settings, int]) -> None:
    from app.services.predict import open_export, preprocess

    settings, export_id = real
    with Session(get_engine(settings.db_url)) as db:
        export = db.get(ModelExport, export_id)
        assert export is not None
        model = db.get(TrainedModel, export.trained_model_id)
        assert model is not None and export.path
        labels, model_id = list(model.labels), export.trained_model_id
    image_id, photo = _test_photo(settings, model_id)
    expected = open_export(settings.data_dir / export.path, labels).predict(
        preprocess(photo, model.input_size), 5
    )
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        csrf = login(client, "vic", PASSWORD)  # a viewer may try
        before = _listing(settings.data_dir)
        htmx = {"HX-Request": "true", "X-CSRF-Token": csrf}
        picked = client.post(
            "/try", data={"export": str(export_id), "image_id": str(image_id)},
            files={"photo": ("", b"", "application/octet-stream")}, headers=htmx,
        )  # fmt: skip
        assert picked.status_code == 200, picked.text
        guesses = _guesses(picked.text)
        assert len(labels) > 5 and len(guesses) == 5
        assert {g[0] for g in guesses} <= set(labels)
        assert [g[0] for g in guesses] == [e[0] for e in expected]
        assert [g[1] for g in guesses] == pytest.approx([e[1] for e in expected], abs=1e-6)
        # The top five of a softmax: most of the probability, never more than all of it.
        assert 0.5 < sum(g[1] for g in guesses) <= 1.0 + 1e-3
        assert SAFETY_STATEMENT in picked.text
        # Example photos of each species, with a link to its page.
        assert len(re.findall(r'class="try-label" href="/species/\d+"', picked.text)) == len(
            guesses
        )
        assert len(re.findall(r'<ul class="try-examples"', picked.text)) == len(guesses)
        assert all(3 <= n <= 4 for n in _examples_per_guess(picked.text))

        uploaded = client.post(
            "/try", data={"csrf_token": csrf, "export": str(export_id)},
            files={"photo": ("mine.jpg", photo, "image/jpeg")},
        )  # fmt: skip
        assert uploaded.status_code == 200 and "<html" in uploaded.text
        assert _guesses(uploaded.text) == guesses  # the same bytes, the same answer

        # The bundle holds what a phone app needs.
        bundle = client.get(f"/exports/{export_id}/bundle.zip")
        with zipfile.ZipFile(io.BytesIO(bundle.content)) as z:
            assert {"model.tflite", "labels.txt", "model_card.json"} <= set(z.namelist())
            assert z.read("labels.txt").decode().split() != []
    assert _listing(settings.data_dir) == before


def _examples_per_guess(html: str) -> list[int]:
    blocks = re.findall(r'<ul class="try-examples".*?</ul>', html, re.S)
    return [len(re.findall(r"<img ", block)) for block in blocks]
