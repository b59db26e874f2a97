"""Dataset versions: the list, the freeze form, one version's split, its zip export."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlmodel import Session, col, select

from app.config import Settings
from app.models import DatasetVersion, Job, Role, User
from app.routes.deps import current_user, get_db, get_settings, require_role
from app.services import auth, dataset_export, datasets, dispatch
from app.services.datasets import INCLUSION_LABELS, DatasetError, DatasetPolicy, Inclusion
from app.templating import render

router = APIRouter(dependencies=[Depends(current_user)], include_in_schema=False)

EXPORT_KIND = "dataset-export"
JOBS_TO_SEARCH = 200


def _version(db: Session, version_id: int) -> DatasetVersion:
    try:
        return datasets.get_version(db, version_id)
    except DatasetError as exc:
        raise HTTPException(exc.status_code, str(exc)) from None


def _suggested_name(db: Session) -> str:
    count = len(datasets.list_versions(db))
    return f"v{count + 1}"


def _list_page(
    request: Request,
    db: Session,
    user: User,
    *,
    form: dict[str, Any] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    form = form or {
        "name": _suggested_name(db),
        "inclusion": Inclusion.kept_and_unflagged.value,
        "min_images": 10,
        "val_fraction": 0.15,
        "test_fraction": 0.15,
        "seed": 0,
    }
    plan = datasets.preview(db, Inclusion(form["inclusion"]), max(int(form["min_images"]), 1))
    return render(
        request, "datasets.html", status_code=status_code, active="datasets",
        versions=datasets.list_versions(db), form=form, error=error, plan=plan,
        inclusions=INCLUSION_LABELS, can_create=auth.has_role(user, Role.curator),
    )  # fmt: skip


@router.get("/datasets")
def datasets_page(
    request: Request, user: User = Depends(current_user), db: Session = Depends(get_db)
) -> Response:
    return _list_page(request, db, user)


@router.get("/datasets/preview")
def preview_fragment(
    request: Request,
    inclusion: Inclusion = Inclusion.kept_and_unflagged,
    min_images: int = 10,
    db: Session = Depends(get_db),
) -> Response:
    """What the form would freeze right now (htmx, as the form changes)."""
    plan = datasets.preview(db, inclusion, max(min_images, 1))
    return render(request, "partials/dataset_preview.html", plan=plan, min_images=min_images)


@router.post("/datasets")
def create_version(
    request: Request,
    name: Annotated[str, Form()] = "",
    inclusion: Annotated[str, Form()] = Inclusion.kept_and_unflagged.value,
    min_images: Annotated[str, Form()] = "10",
    val_fraction: Annotated[str, Form()] = "0.15",
    test_fraction: Annotated[str, Form()] = "0.15",
    seed: Annotated[str, Form()] = "0",
    user: User = Depends(require_role(Role.curator)),
    db: Session = Depends(get_db),
) -> Response:
    form = {
        "name": name, "inclusion": inclusion, "min_images": min_images,
        "val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed,
    }  # fmt: skip
    try:
        policy = DatasetPolicy.model_validate(form)
        version = datasets.freeze(db, policy, user_id=user.id)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'policy'}: {e['msg']}".replace("_", " ")
            for e in exc.errors()
        )
        return _error_page(request, db, user, form, problems)
    except DatasetError as exc:
        return _error_page(request, db, user, form, str(exc))
    return RedirectResponse(f"/datasets/{version.id}", status_code=303)


def _error_page(
    request: Request, db: Session, user: User, form: dict[str, Any], message: str
) -> Response:
    safe = dict(form)
    if safe["inclusion"] not in {i.value for i in Inclusion}:
        safe["inclusion"] = Inclusion.kept_and_unflagged.value
    try:
        safe["min_images"] = int(safe["min_images"])
    except ValueError:
        safe["min_images"] = 10
    return _list_page(request, db, user, form=safe, error=message, status_code=422)


def _export_job(db: Session, version_id: int) -> Job | None:
    jobs = db.exec(
        select(Job)
        .where(Job.kind == EXPORT_KIND)
        .order_by(col(Job.id).desc())
        .limit(JOBS_TO_SEARCH)
    ).all()
    return next((j for j in jobs if j.params.get("dataset_version_id") == version_id), None)


@router.get("/datasets/{version_id}")
def version_page(
    request: Request,
    version_id: int,
    user: User = Depends(current_user),
    db: Session = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> Response:
    version = _version(db, version_id)
    archive = dataset_export.export_path(settings.data_dir, version_id)
    context = {
        "version": version,
        "archive_size": archive.stat().st_size if archive.is_file() else None,
        "export_job": _export_job(db, version_id),
        "can_export": auth.has_role(user, Role.curator),
    }
    headers = {"Vary": "HX-Request, HX-Target"}
    if (
        request.headers.get("hx-request") == "true"
        and request.headers.get("hx-target") == "dataset-export"
    ):
        return render(request, "partials/dataset_export.html", headers=headers, **context)
    creator = db.get(User, version.created_by) if version.created_by else None
    return render(
        request, "dataset.html", active="datasets", headers=headers, creator=creator,
        inclusions=INCLUSION_LABELS, **context,
    )  # fmt: skip


@router.post("/datasets/{version_id}/export")
def start_export(
    version_id: int,
    user: User = Depends(require_role(Role.curator)),
    db: Session = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> Response:
    """Build the zip as a job on an io worker; the version page follows it and links the zip."""
    _version(db, version_id)
    dispatch.submit(
        db, settings, EXPORT_KIND, params={"dataset_version_id": version_id}, user_id=user.id
    )
    return RedirectResponse(f"/datasets/{version_id}#dataset-export", status_code=303)


@router.get("/datasets/{version_id}/export.zip")
def download_export(
    version_id: int, db: Session = Depends(get_db), settings: Settings = Depends(get_settings)
) -> FileResponse:
    version = _version(db, version_id)
    path = dataset_export.export_path(settings.data_dir, version_id)
    if not path.is_file():
        raise HTTPException(404, "this version has not been exported yet; build its zip first")
    return FileResponse(
        path,
        media_type="application/zip",
        filename=dataset_export.download_name(version),
        headers={"Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff"},
    )
