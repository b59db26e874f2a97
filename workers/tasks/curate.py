"""The curate job: features, per-species DBSCAN and near-duplicates (app/services/curation.py)."""

from __future__ import annotations

from typing import Any

from app.db import session_scope
from app.services.curation import CurationError, run_curation
from workers.celery_app import app
from workers.tasks.base import JobContext, JobRefused, run_job


def curate_body(ctx: JobContext) -> dict[str, Any]:
    with session_scope(ctx.settings.db_url) as session:
        try:
            report = run_curation(
                session, ctx.settings, ctx.params, job_id=ctx.job_id, progress=ctx.progress
            )
        except CurationError as exc:
            raise JobRefused(str(exc)) from None
    ctx.log(
        f"{report.extractor}: flagged {report.flagged} of {report.images} photos in "
        f"{report.species} species; {report.duplicate_groups} near-duplicate groups "
        f"({report.conflicts} across species); features computed {report.features_computed}, "
        f"cached {report.features_cached}"
    )
    if report.skipped_species:
        ctx.log(f"too few photos to cluster: {', '.join(report.skipped_species)}", "warning")
    if report.unreadable:
        ctx.log(f"{report.unreadable} photos could not be read; see the run's stats", "warning")
    return report.as_dict()


@app.task(name="sporeprint.curate", bind=True)
def curate(self: Any, job_id: int) -> None:
    run_job(self, job_id, curate_body)
