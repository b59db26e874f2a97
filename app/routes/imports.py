"""Starting imports: a zip uploaded from the browser, or a folder the workers can read.

The upload is streamed to `<data dir>/uploads/` by the route itself, size-bounded; nothing
may read the body before that. So this router checks, ahead of sign-in and CSRF (whose form
parsing would spool the whole body to the system temp folder): an upload must declare its length
within the limit, and carry its CSRF token in the `X-CSRF-Token` header (the Species page's
form does, through htmx), never as a form field behind the file.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from app.config import Settings
from app.db import session_scope
from app.models import Job, Role, User
from app.routes.deps import CSRF_HEADER, Forbidden, current_user, get_db, get_settings, require_role
from app.services import dispatch, uploads
from app.services.imports import ImportFailed
from app.services.jobs import JobError
from app.services.zip_import import ZipLimits, check_zip, import_folder_path, uploads_dir

FORM_OVERHEAD = 64 * 1024  # multipart boundaries, headers and the small fields


async def bounded_upload(request: Request, settings: Settings = Depends(get_settings)) -> None:
    """Refuse an upload before its body is read: too large, length unknown, or no CSRF header."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return
    length = request.headers.get("content-length", "")
    if not length.isdigit():
        raise HTTPException(411, "send the upload with a Content-Length header")
    if int(length) > settings.max_upload_bytes + FORM_OVERHEAD:
        raise HTTPException(413, str(uploads.too_large(settings.max_upload_bytes)))
    if not request.headers.get(CSRF_HEADER):
        raise Forbidden("upload from the Species page (the security token travels in a header)")


router = APIRouter(
    dependencies=[Depends(bounded_upload), Depends(current_user)], include_in_schema=False
)


def _to_job(request: Request, job: Job) -> Response:
    if request.headers.get("hx-request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": f"/jobs/{job.id}"})
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.post("/imports")
async def upload_zip(
    request: Request,
    user: User = Depends(require_role(Role.curator)),
    settings: Settings = Depends(get_settings),
) -> Response:
    """Receive a zip in species/image.jpg layout and queue its import."""
    try:
        upload = await uploads.receive_file(
            request.stream(), request.headers.get("content-type", ""),
            uploads_dir(settings.data_dir), file_field="file",
            limit=settings.max_upload_bytes, suffix=".zip",
        )  # fmt: skip
    except uploads.UploadError as exc:
        raise HTTPException(exc.status_code, str(exc)) from None
    limits = ZipLimits(max_entries=settings.max_zip_entries, max_bytes=settings.max_zip_bytes)

    def queue() -> Job:
        # Read the zip's directory now, so a bad zip is refused here rather than in a job.
        check_zip(upload.path, limits)
        with session_scope(settings.db_url) as db:
            label = f"upload/{upload.filename}@{upload.sha256[:12]}"
            params = {"upload": upload.path.name, "label": label}
            return dispatch.submit(db, settings, "import", params=params, user_id=user.id)

    try:
        job = await run_in_threadpool(queue)
    except (ImportFailed, JobError) as exc:
        upload.path.unlink(missing_ok=True)
        raise HTTPException(getattr(exc, "status_code", 422), str(exc)) from None
    except BaseException:
        upload.path.unlink(missing_ok=True)
        raise
    return _to_job(request, job)


@router.post("/imports/folder")
def import_from_folder(
    request: Request,
    folder: str = Form(""),
    user: User = Depends(require_role(Role.curator)),
    db: Session = Depends(get_db),
    settings: Settings = Depends(get_settings),
) -> Response:
    """Queue the import of a folder in species/image.jpg layout that the workers can read."""
    try:
        path = import_folder_path(folder)
    except ImportFailed as exc:
        raise HTTPException(422, str(exc)) from None
    job = dispatch.submit(db, settings, "import", params={"folder": str(path)}, user_id=user.id)
    return _to_job(request, job)
