"""The download job: fetch the photos of pending images (rules in app/services/download.py)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from app.services.download import DownloadProgress, download_images
from workers.celery_app import app
from workers.tasks.base import JobCancelled, JobContext, run_job

REASONS_LOGGED = 5


def download_body(ctx: JobContext) -> dict[str, Any]:
    cancelled = threading.Event()

    def on_progress(progress: DownloadProgress) -> None:
        # Runs on the downloader's database thread after each commit (about once a second);
        # JobContext.progress raises JobCancelled when the user asked to stop.
        try:
            ctx.progress(progress.fraction, progress.text())
        except JobCancelled:
            cancelled.set()

    report = download_images(
        ctx.settings,
        species_ids=ctx.params.get("species_ids"),
        retry_failed=bool(ctx.params.get("retry_failed")),
        limit=ctx.params.get("limit"),
        should_stop=cancelled.is_set,
        progress=on_progress,
    )
    ctx.log(
        f"{report.done} downloaded, {report.duplicate} duplicates, {report.failed} failed, "
        f"{report.left} left, {report.retries} retries in {report.elapsed_s:.1f} s "
        f"({report.rate:.1f} images/s)"
    )
    if report.failures:
        reasons = Counter(reason for _, reason in report.failures).most_common(REASONS_LOGGED)
        ctx.log(
            "failures: " + "; ".join(f"{reason} ({n})" for reason, n in reasons),
            level="warning",
        )
    if report.stopped and cancelled.is_set():
        raise JobCancelled  # what finished is recorded; a new download job takes the rest
    return report.as_dict()


@app.task(name="sporeprint.download", bind=True)
def download(self: Any, job_id: int) -> None:
    run_job(self, job_id, download_body)
