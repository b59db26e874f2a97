"""The train job: a classifier on a dataset version (app/services/training.py).

TensorFlow is imported only inside the run (by `run_training`), so importing this module, as
every worker does at start, stays cheap. While it runs, the worker records GPU memory samples
for the job page's chart (workers/gpu_sampler.py).
"""

from __future__ import annotations

from typing import Any

from app.db import session_scope
from app.services import jobs
from app.services.training import (
    TrainingCancelled,
    TrainingError,
    metric_writer,
    run_training,
)
from workers.celery_app import app
from workers.gpu_sampler import GpuSampler
from workers.tasks.base import JobCancelled, JobContext, JobRefused, run_job


def train_body(ctx: JobContext) -> dict[str, Any]:
    db_url = ctx.settings.db_url

    def cancelled() -> bool:
        with session_scope(db_url) as session:
            return jobs.cancel_requested(session, ctx.job_id)

    def progress(fraction: float, text: str) -> None:
        with session_scope(db_url) as session:
            jobs.record_progress(session, ctx.job_id, fraction, text)

    with GpuSampler.for_job(ctx), session_scope(db_url) as session:
        try:
            report = run_training(
                session, ctx.settings, ctx.params, job_id=ctx.job_id,
                write_metrics=metric_writer(db_url, ctx.job_id), cancelled=cancelled,
                progress=progress, log=ctx.log,
            )  # fmt: skip
        except TrainingError as exc:
            raise JobRefused(str(exc)) from None
        except TrainingCancelled:
            raise JobCancelled from None
    ctx.log(
        f"trained model {report.trained_model_id}: test top-1 "
        f"{report.metrics.get('top1', float('nan')):.3f}, "
        f"{report.epochs} epochs in {report.seconds:.0f} s"
    )
    return report.as_dict()


@app.task(name="sporeprint.train", bind=True)
def train(self: Any, job_id: int) -> None:
    run_job(self, job_id, train_body)
