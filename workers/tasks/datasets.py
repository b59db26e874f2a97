"""The dataset-export job: build a dataset version's zip in `<data dir>/exports/`."""

from __future__ import annotations

from typing import Any

from app.db import session_scope
from app.services.dataset_export import export_version
from workers.celery_app import app
from workers.tasks.base import JobContext, run_job


def export_body(ctx: JobContext) -> dict[str, Any]:
    version_id = int(ctx.params["dataset_version_id"])
    with session_scope(ctx.settings.db_url) as session:
        report = export_version(
            session, version_id, ctx.settings.data_dir,
            progress=lambda done, total: ctx.progress(done / total, f"photo {done} of {total}"),
        )  # fmt: skip
    ctx.log(f"wrote {report.path.name}: {report.photos} photos, {report.size_bytes} bytes")
    if report.missing:
        ctx.log(f"{report.missing} photos had no file; see missing.txt in the zip", "warning")
    return report.as_dict()


@app.task(name="sporeprint.dataset_export", bind=True)
def dataset_export(self: Any, job_id: int) -> None:
    run_job(self, job_id, export_body)
