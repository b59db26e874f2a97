"""The demo-data job: draw the synthetic dataset into the data directory and import it."""

from __future__ import annotations

from typing import Any

from app.db import session_scope
from app.services.demo_data import generate_demo_dataset
from app.services.imports import import_folder
from workers.celery_app import app
from workers.tasks.base import JobContext, run_job

DEMO_FOLDER = "demo-photos"
DRAWING_SHARE = 0.7  # of the progress bar; drawing takes most of the time


def demo_body(ctx: JobContext) -> dict[str, Any]:
    per_species, seed = int(ctx.params["per_species"]), int(ctx.params["seed"])
    target = ctx.settings.data_dir / DEMO_FOLDER / f"seed-{seed}-n{per_species}"
    ctx.log(f"drawing {per_species} photos per species into {target.name}")
    manifest = generate_demo_dataset(
        target, per_species=per_species, seed=seed,
        progress=lambda done, total: ctx.progress(
            DRAWING_SHARE * done / max(total, 1), f"drawing photo {done} of {total}"
        ),
    )  # fmt: skip
    ctx.log(f"drew {len(manifest.images)} photos ({len(manifest.anomalies)} planted anomalies)")
    with session_scope(ctx.settings.db_url) as session:
        report = import_folder(
            session, target, ctx.settings.data_dir, label=f"demo/{target.name}",
            progress=lambda done, total: ctx.progress(
                DRAWING_SHARE + (1 - DRAWING_SHARE) * done / total,
                f"importing photo {done} of {total}",
            ),
        )  # fmt: skip
    ctx.log(
        f"imported {report.imported} photos of {report.species_created} new species "
        f"({report.already_present} were already there)"
    )
    return report.as_dict()


@app.task(name="sporeprint.demo_data", bind=True)
def demo_data(self: Any, job_id: int) -> None:
    run_job(self, job_id, demo_body)
