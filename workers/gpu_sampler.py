"""GPU memory over a job's life: a daemon thread that records the worker's GPU readings.

While a train job runs, `GpuSampler` reads the GPUs (`workers.gpu.snapshot`) every
`gpu_sample_interval` seconds and writes one `gpu_samples` row per GPU, tied to the job, with
the job's own process marked in each row's process list. The job page charts these rows.

On a worker without a GPU the first reading says so: the sampler logs that on the job (the
page shows it as a note) and writes nothing. A failed reading or write is logged and sampling
carries on; nothing here can fail the job.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from app.db import session_scope
from app.models import Job
from app.services import gpus
from workers import gpu

if TYPE_CHECKING:
    from workers.tasks.base import JobContext

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 5.0


class GpuSampler:
    """Use as a context manager around a job body: starts sampling on entry, stops on exit."""

    def __init__(
        self,
        db_url: str,
        job_id: int,
        *,
        worker_name: str,
        provider: str = "auto",
        interval: float = 2.0,
        own_pid: int | None = None,
        job_log: Callable[[str], None] | None = None,
    ) -> None:
        self.db_url = db_url
        self.job_id = job_id
        self.worker_name = worker_name
        self.provider = provider
        self.interval = interval
        self.own_pid = own_pid
        self.job_log = job_log
        self.readings = 0  # snapshots taken
        self.rows = 0  # gpu_samples rows written
        self.no_gpu = False
        self._reading_failed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_job(cls, ctx: JobContext) -> GpuSampler:
        """A sampler for a running job: this process is the job's process."""
        settings, job_id = ctx.settings, ctx.job_id
        worker_name = socket.gethostname()
        try:
            with session_scope(settings.db_url) as session:
                job = session.get(Job, job_id)
                if job is not None and job.worker_name:
                    worker_name = job.worker_name
        except Exception:  # the job runs regardless; the host name will do
            log.exception("could not read job %s's worker name", job_id)
        return cls(
            settings.db_url, job_id, worker_name=worker_name, provider=settings.gpu_provider,
            interval=settings.gpu_sample_interval, own_pid=os.getpid(),
            job_log=ctx.log,
        )  # fmt: skip

    # --- one reading ---------------------------------------------------------------------

    def sample(self) -> int:
        """Read the GPUs once and write their rows; returns how many rows were written."""
        snap = gpu.snapshot(self.provider)
        first = self.readings == 0
        self.readings += 1
        if snap.provider == "none" or not snap.devices:
            reason = snap.note or gpu.NO_GPU
            if first:
                self.no_gpu = True
                detail = "" if reason == gpu.NO_GPU else f" ({reason})"
                self._note(gpus.NO_GPU_SAMPLES + detail)
            elif not self._reading_failed:
                self._reading_failed = True
                log.warning("job %s: GPU reading failed: %s", self.job_id, reason)
            return 0
        self._reading_failed = False
        if self._stop.is_set():
            return 0  # the job has ended while the GPUs were being read
        with session_scope(self.db_url) as session:
            rows = gpus.record_samples(
                session, self.job_id, self.worker_name, snap.as_dict(), own_pid=self.own_pid
            )
        self.rows += len(rows)
        return len(rows)

    def _note(self, message: str) -> None:
        log.info("job %s: %s", self.job_id, message)
        if self.job_log is None:
            return
        try:
            self.job_log(message)
        except Exception:
            log.exception("could not log on job %s", self.job_id)

    # --- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # a database blip or an odd reading: skip this one
                log.exception("GPU sample for job %s failed", self.job_id)
            if self.no_gpu:
                return  # nothing to read on this worker
            next_at += self.interval
            now = time.monotonic()
            if next_at < now:  # a slow reading: start again from now, do not catch up
                next_at = now
            self._stop.wait(next_at - now)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, name=f"sporeprint-gpu-sampler-{self.job_id}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop sampling; waits up to `timeout` seconds for a reading in progress."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("GPU sampler of job %s is still busy; leaving it", self.job_id)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> GpuSampler:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
