"""The Models page (trained models, their TFLite exports, accuracy against size), the downloads,
the Export form, and Try it (a photo through a TFLite file, top-5 species).

Try it never stores the photo: the upload is read into memory, bounded (app/services/uploads.py),
ahead of sign-in's CSRF check, whose form parsing would spool a large file to the system temp
folder, and dropped once the answer is drawn.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from python_multipart.multipart import parse_options_header
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from app.config import Settings
from app.models import Image, ModelExport, Role, TrainedModel, User
from app.routes.deps import (
    CSRF_HEADER,
    NotAuthenticated,
    current_user,
    get_db,
    get_settings,
    require_role,
)
from app.services import auth, dispatch, media, model_catalog, uploads
from app.services.jobs import JobError
from app.services.model_catalog import KIND_ORDER, CatalogNotFound, TryError, TryResult
from app.templating import render

router = APIRouter(dependencies=[Depends(current_user)], include_in_schema=False)

INT8_IO = ("uint8", "float32")
DEFAULT_INT8_IO = "uint8"
PHOTO_FIELD = "photo"
FORM_OVERHEAD = 16 * 1024  # multipart boundaries, part headers and the small fields


def _download(found: model_catalog.Download) -> FileResponse:
    return FileResponse(
        found.path, media_type=found.media_type, filename=found.filename,
        headers={"Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff"},
    )  # fmt: skip


# --- the Models page ------------------------------------------------------------------------


def _models_page(
    request: Request,
    db: Session,
    settings: Settings,
    user: User,
    form: dict | None = None,
    status_code: int = 200,
) -> Response:
    rows = model_catalog.list_models(db, settings.data_dir)
    return render(
        request, "models.html", status_code=status_code, active="models", rows=rows,
        chart=model_catalog.chart_data(rows), can_export=auth.has_role(user, Role.curator),
        kinds=KIND_ORDER, kind_labels=model_catalog.KIND_LABELS, int8_io_choices=INT8_IO,
        default_int8_io=DEFAULT_INT8_IO, form=form or {},
    )  # fmt: skip


@router.get("/models")
def models_page(
    request: Request,
    user: User = Depends(current_user),
    db: Session = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> Response:
    return _models_page(request, db, settings, user)


@router.get("/models/{model_id}/model.keras")
def keras_file(
    model_id: int, db: Session = Depends(get_db), settings: Settings = Depends(get_settings)
) -> FileResponse:
    try:
        return _download(model_catalog.model_download(db, model_id, settings.data_dir))
    except CatalogNotFound as exc:
        raise HTTPException(404, str(exc)) from None


@router.get("/exports/{export_id}/model.tflite")
def tflite_file(
    export_id: int, db: Session = Depends(get_db), settings: Settings = Depends(get_settings)
) -> FileResponse:
    try:
        return _download(model_catalog.export_download(db, export_id, settings.data_dir, "tflite"))
    except CatalogNotFound as exc:
        raise HTTPException(404, str(exc)) from None


@router.get("/exports/{export_id}/bundle.zip")
def bundle_file(
    export_id: int, db: Session = Depends(get_db), settings: Settings = Depends(get_settings)
) -> FileResponse:
    try:
        return _download(model_catalog.export_download(db, export_id, settings.data_dir, "bundle"))
    except CatalogNotFound as exc:
        raise HTTPException(404, str(exc)) from None


def export_form_errors(kinds: list[str], int8_io: str) -> str | None:
    if not kinds:
        return "choose at least one kind of export"
    unknown = [k for k in kinds if k not in KIND_ORDER]
    if unknown:
        return f"unknown export kind {unknown[0]!r}; choose from {', '.join(KIND_ORDER)}"
    if int8_io not in INT8_IO:
        return f"int8 input and output must be {' or '.join(INT8_IO)}, not {int8_io!r}"
    return None


@router.post("/models/{model_id}/exports")
async def start_export(
    request: Request,
    model_id: int,
    user: User = Depends(require_role(Role.curator)),
    db: Session = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> Response:
    """Queue an `export` job: the chosen TFLite kinds of one trained model."""
    if db.get(TrainedModel, model_id) is None:
        raise HTTPException(404, f"there is no trained model {model_id}")
    submitted = await request.form()
    kinds = [str(k) for k in submitted.getlist("kinds")]
    int8_io = str(submitted.get("int8_io", DEFAULT_INT8_IO))
    form = {"model_id": model_id, "kinds": kinds, "int8_io": int8_io}
    error = export_form_errors(kinds, int8_io)
    if error:
        return _models_page(request, db, settings, user, {**form, "error": error}, 422)
    ordered = [k for k in KIND_ORDER if k in kinds]
    params = {"trained_model_id": model_id, "kinds": ordered, "int8_io": int8_io}
    try:
        job = await run_in_threadpool(
            dispatch.submit, db, settings, "export", params=params, user_id=user.id
        )
    except JobError as exc:
        form["error"] = str(exc)
        return _models_page(request, db, settings, user, form, exc.status_code)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


# --- Try it ---------------------------------------------------------------------------------


def try_limit(settings: Settings) -> int:
    return min(settings.max_upload_bytes, settings.max_try_bytes)


def too_large(limit: int) -> HTTPException:
    return HTTPException(
        413,
        f"the photo is larger than the limit of {uploads.human_size(limit)} for Try it "
        "(setting SPOREPRINT_MAX_TRY_BYTES); send a smaller one (nothing was kept)",
    )


async def read_try_upload(request: Request, settings: Settings = Depends(get_settings)) -> None:
    """Read POST /try's form into memory before sign-in checks its CSRF token.

    Refused unread: a visitor with neither a session nor a token, a body that is not a
    multipart form (400), or whose declared length is past the limit (413) or unknown (411).
    The text fields are handed to the CSRF check as the request's parsed form, so it never
    parses (and spools) the body itself.
    """
    if request.method != "POST":
        return
    if not request.headers.get("authorization") and not request.session.get("user_id"):
        raise NotAuthenticated
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise HTTPException(400, "send the photo as a multipart/form-data form")
    length = request.headers.get("content-length", "")
    if not length.isdigit():
        raise HTTPException(411, "send the photo with a Content-Length header")
    limit = try_limit(settings)
    if int(length) > limit + FORM_OVERHEAD:
        raise too_large(limit)
    try:
        upload = await uploads.receive_in_memory(
            request.stream(), request.headers["content-type"], file_field=PHOTO_FIELD, limit=limit
        )
    except uploads.UploadTooLarge:
        raise too_large(limit) from None
    except uploads.UploadError as exc:
        raise HTTPException(exc.status_code, str(exc)) from None
    request.state.try_upload = upload
    if not request.headers.get(CSRF_HEADER):
        # The CSRF check reads `await request.form()`; Starlette returns this parsed form.
        request._form = FormData(list(upload.fields.items()))


# Its own router: the upload is read before `current_user` looks at the CSRF token.
try_router = APIRouter(
    dependencies=[Depends(read_try_upload), Depends(current_user)], include_in_schema=False
)


class TryRefused(Exception):
    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code, self.message = status_code, message


def _int(value: str | None) -> int | None:
    value = (value or "").strip()
    return int(value) if value.isdigit() and len(value) < 12 else None


def _try_page(
    request: Request,
    db: Session,
    settings: Settings,
    export_id: int | None,
    image_id: int | None,
    result: TryResult | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    rows = model_catalog.list_models(db, settings.data_dir)
    choices = model_catalog.export_choices(rows)
    usable = {e.export.id: (r, e) for r, exports in choices for e in exports}
    if export_id not in usable:
        export_id = model_catalog.default_export_id(rows)
    chosen = usable.get(export_id)
    samples = model_catalog.sample_photos(db, chosen[0].model) if chosen else []
    return render(
        request, "try.html", status_code=status_code, active="try", choices=choices,
        export_id=export_id, chosen=chosen, image_id=image_id, samples=samples,
        result=result, error=error, limit=try_limit(settings),
        safety=model_catalog.safety_statement(),
    )  # fmt: skip


@router.get("/try")
def try_page(
    request: Request,
    export: int | None = None,
    image_id: int | None = None,
    db: Session = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> Response:
    if export is not None and db.get(ModelExport, export) is None:
        raise HTTPException(404, f"there is no export {export}; choose one on the Models page")
    return _try_page(request, db, settings, export, image_id)


def _photo(
    db: Session, settings: Settings, upload: uploads.MemoryUpload, image_id: int | None
) -> bytes:
    if upload.data is not None:
        if not upload.data:
            raise TryRefused(400, "empty file: the photo has no bytes; choose another")
        return upload.data
    if image_id is None:
        raise TryRefused(400, "choose a photo to upload, or pick one from the dataset")
    try:
        found = media.original(db.get(Image, image_id), settings.data_dir)
    except media.MediaNotFound as exc:
        raise TryRefused(404, f"dataset photo {image_id}: {exc}") from None
    return found.path.read_bytes()


def _export(db: Session, export_id: int | None) -> tuple[ModelExport, TrainedModel]:
    export = db.get(ModelExport, export_id) if export_id is not None else None
    if export is None:
        raise TryRefused(404, "choose an export to try (there is no such export)")
    model = db.get(TrainedModel, export.trained_model_id)
    if model is None:
        raise TryRefused(404, f"export {export_id} belongs to no trained model")
    return export, model


@try_router.post("/try")
def try_photo(
    request: Request,
    db: Session = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> Response:
    """Top-5 species for a photo, from the TFLite file itself; an htmx request gets the
    result fragment, a plain form post the whole page."""
    upload: uploads.MemoryUpload = request.state.try_upload
    export_id = _int(upload.fields.get("export"))
    image_id = _int(upload.fields.get("image_id"))
    fragment = request.headers.get("hx-request") == "true"
    result: TryResult | None = None
    error: str | None = None
    status_code = 200
    try:
        export, model = _export(db, export_id)
        photo = _photo(db, settings, upload, image_id if upload.data is None else None)
        try:
            result = model_catalog.try_photo(db, settings.data_dir, export, model, photo)
        except TryError as exc:
            raise TryRefused(exc.status_code, str(exc)) from None
    except TryRefused as exc:
        error, status_code = exc.message, exc.status_code
    finally:
        upload.data = None  # nothing of the photo outlives the request
    if fragment:
        return render(
            request, "partials/try_result.html", status_code=status_code, result=result,
            error=error, safety=model_catalog.safety_statement(),
        )  # fmt: skip
    return _try_page(request, db, settings, export_id, image_id, result, error, status_code)
