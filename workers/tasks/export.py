"""The export job: TFLite files of a trained model, measured (app/services/exports.py).

TensorFlow is imported only inside the run (by `run_export`), so importing this module, as every
worker does at start, stays cheap.
"""

from __future__ import annotations

from typing import Any

from app.db import session_scope
from app.services import jobs
from app.services.exports import ExportCancelled, ExportError, export_summary, run_export
from workers.celery_app import app
from workers.tasks.base import JobCancelled, JobContext, JobRefused, run_job


def export_body(ctx: JobContext) -> dict[str, Any]:
    db_url = ctx.settings.db_url

    def cancelled() -> bool:
        with session_scope(db_url) as session:
            return jobs.cancel_requested(session, ctx.job_id)

    with session_scope(db_url) as session:
        try:
            rows = run_export(
                session, ctx.settings, ctx.params, job_id=ctx.job_id, progress=ctx.progress,
                log=ctx.log, cancelled=cancelled,
            )  # fmt: skip
        except ExportError as exc:
            raise JobRefused(str(exc)) from None
        except ExportCancelled:
            raise JobCancelled from None
        exports = [export_summary(row) for row in rows]
    return {"trained_model_id": ctx.params["trained_model_id"], "exports": exports}


@app.task(name="sporeprint.export", bind=True)
def export(self: Any, job_id: int) -> None:
    run_job(self, job_id, export_body)
