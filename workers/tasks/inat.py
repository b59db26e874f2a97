"""The iNaturalist jobs: ingest an open-data dump into staging, then select species and photos.

Thin: the rules live in `app.services.inat`; these bodies only pass progress and log lines on.
"""

from __future__ import annotations

from typing import Any

from app.db import get_engine, session_scope
from app.services.inat.ingest import IngestProgress, ingest_dump
from app.services.inat.params import InatSelectParams
from app.services.inat.select import select_photos
from workers.celery_app import app
from workers.tasks.base import JobContext, run_job


def ingest_body(ctx: JobContext) -> dict[str, Any]:
    directory, root_taxa = ctx.params["directory"], list(ctx.params["root_taxa"])
    ctx.log(f"ingesting the iNaturalist dump in {directory} under {', '.join(root_taxa)}")

    def progress(step: IngestProgress) -> None:
        ctx.progress(step.fraction, step.text)

    report = ingest_dump(
        get_engine(ctx.settings.db_url), directory, root_taxa=root_taxa,
        progress=progress, log=ctx.log,
    )  # fmt: skip
    ctx.log(
        f"staged {report.kept('taxa'):,} taxa, {report.kept('observations'):,} observations, "
        f"{report.kept('photos'):,} photos, {report.kept('observers'):,} observers "
        f"in {report.seconds:.1f} s"
    )
    return report.as_dict()


def select_body(ctx: JobContext) -> dict[str, Any]:
    params = InatSelectParams.model_validate(ctx.params)
    what = f"{len(params.species)} named species" if params.species else f"top {params.top}"
    ctx.log(
        f"selecting {what}, {params.per_species} photos each (at most {params.per_observation} "
        f"per observation), licences {', '.join(params.licenses)}"
    )
    with session_scope(ctx.settings.db_url) as session:
        report = select_photos(
            session, params, base_url=ctx.settings.inat_photo_base_url,
            progress=lambda done, total, name: ctx.progress(
                done / total, f"{name}: species {done} of {total}"
            ),
        )  # fmt: skip
    for warning in report.warnings[:50]:
        ctx.log(warning, level="warning")
    ctx.log(
        f"{len(report.species)} species ({report.species_created} new, "
        f"{report.species_linked} linked by name); {report.images_added:,} photos queued "
        "for download"
    )
    return report.as_dict()


@app.task(name="sporeprint.inat_ingest", bind=True)
def inat_ingest(self: Any, job_id: int) -> None:
    run_job(self, job_id, ingest_body)


@app.task(name="sporeprint.inat_select", bind=True)
def inat_select(self: Any, job_id: int) -> None:
    run_job(self, job_id, select_body)
