"""The ping job: proves the road from a browser button to a worker and back."""

from __future__ import annotations

import os
import platform
import socket
import time
from typing import Any

from workers.celery_app import app
from workers.tasks.base import JobContext, run_job


def ping_body(ctx: JobContext) -> dict[str, Any]:
    seconds, steps = float(ctx.params["seconds"]), int(ctx.params["steps"])
    ctx.log(f"hello from {socket.gethostname()} (pid {os.getpid()})")
    for step in range(1, steps + 1):
        time.sleep(seconds / steps)
        ctx.check_cancelled()
        ctx.progress(step / steps, f"step {step} of {steps}")
    return {"host": socket.gethostname(), "pid": os.getpid(), "python": platform.python_version()}


@app.task(name="sporeprint.ping", bind=True)
def ping(self: Any, job_id: int) -> None:
    run_job(self, job_id, ping_body)
