"""The import job: a folder the workers can read, or an uploaded zip (extracted safely)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.db import session_scope
from app.services.imports import ImportReport, import_folder
from app.services.zip_import import ZipLimits, import_zip, uploads_dir
from workers.celery_app import app
from workers.tasks.base import JobContext, run_job

EXTRACT_SHARE = 0.3  # of the progress bar, for unpacking a zip


def import_body(ctx: JobContext) -> dict[str, Any]:
    settings, params = ctx.settings, ctx.params
    with session_scope(settings.db_url) as session:
        if params.get("upload"):
            report = _import_upload(ctx, session, params)
        else:
            folder = Path(params["folder"])
            ctx.log(f"importing the folder {folder}")
            report = import_folder(
                session, folder, settings.data_dir, label=params.get("label"),
                progress=lambda d, t: ctx.progress(d / t, f"importing photo {d} of {t}"),
            )  # fmt: skip
    ctx.log(
        f"imported {report.imported} photos, {report.species_created} new species; "
        f"{report.already_present} were already there, {len(report.rejected)} rejected"
    )
    for path, reason in report.rejected[:50]:
        ctx.log(f"rejected {path}: {reason}", level="warning")
    return report.as_dict()


def _import_upload(ctx: JobContext, session: Any, params: dict[str, Any]) -> ImportReport:
    settings = ctx.settings
    upload = uploads_dir(settings.data_dir) / params["upload"]  # a validated bare name
    label = params.get("label") or f"upload/{params['upload']}"
    limits = ZipLimits(max_entries=settings.max_zip_entries, max_bytes=settings.max_zip_bytes)

    def progress(stage: str, done: int, total: int) -> None:
        share = (0.0, EXTRACT_SHARE) if stage == "extracting" else (EXTRACT_SHARE, 1.0)
        noun = "file" if stage == "extracting" else "photo"
        ctx.progress(share[0] + (share[1] - share[0]) * done / total,
                     f"{stage} {noun} {done} of {total}")  # fmt: skip

    ctx.log(f"unpacking and importing {label}")
    try:
        if not upload.is_file():
            raise FileNotFoundError(f"the uploaded zip {params['upload']} is gone")
        return import_zip(
            session, upload, settings.data_dir, label=label, limits=limits, progress=progress
        )
    finally:
        upload.unlink(missing_ok=True)  # imported or refused, the upload has served its purpose


@app.task(name="sporeprint.import", bind=True)
def import_photos(self: Any, job_id: int) -> None:
    run_job(self, job_id, import_body)
