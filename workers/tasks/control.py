"""Control tasks, consumed from this host's own queue: ending a process that holds a GPU."""

from __future__ import annotations

import os
import socket
from typing import Any

import psutil

from workers import gpu
from workers.celery_app import app
from workers.tasks.base import JobContext, JobRefused, run_job


def end_process_body(ctx: JobContext) -> dict[str, Any]:
    """SIGTERM, a grace period, then SIGKILL, for a pid this host's GPUs list right now."""
    pid, host = int(ctx.params["pid"]), ctx.params["host"]
    if host != socket.gethostname():
        raise JobRefused(f"this request is for {host}, but it reached {socket.gethostname()}")
    if pid == 1:
        raise JobRefused("pid 1 is the init process")
    if pid in (os.getpid(), os.getppid()):
        raise JobRefused(f"pid {pid} is this worker itself")
    # Re-read the GPU list here and now: the page the admin looked at may be stale, and a pid
    # may since have been reused by an unrelated process.
    snapshot = gpu.snapshot(ctx.settings.gpu_provider)
    listed = next((p for p in snapshot.processes if p.pid == pid), None)
    if listed is None:
        raise JobRefused(f"pid {pid} is not holding GPU memory on {host} ({snapshot.provider})")
    described = f"pid {pid} ({listed.name or 'unknown'}, {listed.memory_mb or 0:.0f} MiB)"
    try:
        process = psutil.Process(pid)
        ctx.log(f"sending SIGTERM to {described}")
        process.terminate()
        _, alive = psutil.wait_procs([process], timeout=ctx.settings.end_process_grace)
        if alive:
            ctx.log(f"still running after {ctx.settings.end_process_grace:.0f} s; sending SIGKILL")
            process.kill()
            psutil.wait_procs([process], timeout=5)
            outcome = f"ended {described} with SIGKILL"
        else:
            outcome = f"ended {described} with SIGTERM"
    except psutil.NoSuchProcess:
        outcome = f"{described} was already gone"
    except psutil.AccessDenied:
        raise JobRefused(f"not allowed to signal {described} (another user's process)") from None
    ctx.log(outcome)
    return {"outcome": outcome, "pid": pid, "name": listed.name, "memory_mb": listed.memory_mb}


@app.task(name="sporeprint.end_process", bind=True)
def end_process(self: Any, job_id: int) -> None:
    run_job(self, job_id, end_process_body)
