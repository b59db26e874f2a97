"""The evaluate job: a trained model on its test split again (app/services/evaluation.py)."""

from __future__ import annotations

from typing import Any

from app.db import session_scope
from app.services.evaluation import EvaluationError, run_evaluation, summary
from workers.celery_app import app
from workers.tasks.base import JobContext, JobRefused, run_job


def evaluate_body(ctx: JobContext) -> dict[str, Any]:
    with session_scope(ctx.settings.db_url) as session:
        try:
            metrics = run_evaluation(
                session, ctx.settings, ctx.params, progress=ctx.progress, log=ctx.log
            )
        except EvaluationError as exc:
            raise JobRefused(str(exc)) from None
    ctx.log(f"test top-1 {metrics['top1']:.3f}, top-5 {metrics['top5']:.3f}")
    return summary(metrics)


@app.task(name="sporeprint.evaluate", bind=True)
def evaluate(self: Any, job_id: int) -> None:
    run_job(self, job_id, evaluate_body)
