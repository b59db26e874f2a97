"""The fleet's GPUs as the status page shows them: devices, processes, owners, orphans; and the
GPU memory a training job used over time, as its page charts it.

Workers publish raw snapshots with their heartbeats (see `workers/gpu.py`); this module joins
them with the jobs table to say which job owns each process and which processes are orphans.
While a train job runs, its worker also records readings as `gpu_samples` rows tied to the job
(`workers/gpu_sampler.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from app.models import GpuSample, Job, JobEvent, JobStatus, Worker, utcnow
from app.services.workers import Liveness, liveness


@dataclass
class ProcessRow:
    host: str
    gpu_index: int | None
    pid: int
    name: str
    cmdline: str
    memory_mb: float | None
    job: Job | None
    orphan: str | None  # why it is an orphan, or None


@dataclass
class HostGpus:
    host: str
    provider: str
    note: str | None
    devices: list[dict[str, Any]] = field(default_factory=list)
    processes: list[ProcessRow] = field(default_factory=list)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def orphan_reason(
    job: Job | None, first_seen: datetime | None, now: datetime, orphan_after: float
) -> str | None:
    """Why a GPU process should not be there, or None when it belongs."""
    if job is not None:
        if JobStatus(job.status).finished and job.finished_at is not None:
            ago = _age((now - job.finished_at).total_seconds())
            return f"its job #{job.id} {job.status} {ago} ago, yet it still holds GPU memory"
        return None
    if first_seen is not None:
        held = (now - first_seen).total_seconds()
        if held > orphan_after:
            return f"no job owns it and it has held GPU memory for {_age(held)}"
    return None


def fleet_gpus(
    session: Session,
    fleet: Sequence[Worker],
    *,
    interval: float,
    timeout: float,
    orphan_after: float,
    now: datetime | None = None,
) -> list[HostGpus]:
    """One entry per host, from the freshest snapshot of its live workers."""
    now = now or utcnow()
    freshest: dict[str, Worker] = {}
    for worker in fleet:
        if liveness(worker, interval, timeout, now) in (Liveness.dead, Liveness.stopped):
            continue  # its readings are stale; the workers table says it is gone
        if worker.gpu_snapshot is None:
            continue
        best = freshest.get(worker.hostname)
        if best is None or worker.last_heartbeat > best.last_heartbeat:
            freshest[worker.hostname] = worker

    hosts = []
    for host, worker in sorted(freshest.items()):
        snap = worker.gpu_snapshot or {}
        entry = HostGpus(host=host, provider=snap.get("provider", "none"), note=snap.get("note"))
        entry.devices = list(snap.get("devices", []))
        pids = [p["pid"] for p in snap.get("processes", [])]
        owners = _owners(session, host, pids)
        for p in snap.get("processes", []):
            job = owners.get(p["pid"])
            seen = datetime.fromisoformat(p["first_seen"]) if p.get("first_seen") else None
            entry.processes.append(
                ProcessRow(
                    host=host, gpu_index=p.get("gpu_index"), pid=p["pid"],
                    name=p.get("name") or "", cmdline=p.get("cmdline") or "",
                    memory_mb=p.get("memory_mb"), job=job,
                    orphan=orphan_reason(job, seen, now, orphan_after),
                )
            )  # fmt: skip
        hosts.append(entry)
    return hosts


def _owners(session: Session, host: str, pids: list[int]) -> dict[int, Job]:
    """The latest job each pid ran on this host (pids are reused, so the newest wins)."""
    if not pids:
        return {}
    jobs = session.exec(
        select(Job)
        .where(Job.worker_host == host, col(Job.worker_pid).in_(pids))
        .order_by(col(Job.id))
    ).all()
    return {job.worker_pid: job for job in jobs if job.worker_pid is not None}


# --- GPU memory of one job -------------------------------------------------------------------

# The log line a job's sampler writes on a worker that has no GPU to read; the job page looks
# for it to tell "no GPU here" apart from "nothing recorded".
NO_GPU_SAMPLES = "no NVIDIA GPU on this worker: no GPU memory samples"
CMDLINE_MAX = 200


def record_samples(
    session: Session,
    job_id: int,
    worker_name: str,
    snapshot: dict[str, Any],
    *,
    own_pid: int | None = None,
    at: datetime | None = None,
) -> list[GpuSample]:
    """One `GpuSample` per device of a snapshot (`GpuSnapshot.as_dict()`), tied to the job.

    Each row keeps the processes holding memory on its GPU; the one whose pid is `own_pid`
    (the process running the job) is marked `this_job`.
    """
    at = at or utcnow()
    samples = []
    for device in snapshot.get("devices", []):
        processes = [
            {
                "pid": p["pid"],
                "name": p.get("name") or "",
                "cmdline": (p.get("cmdline") or "")[:CMDLINE_MAX],
                "memory_mb": p.get("memory_mb"),
                "this_job": own_pid is not None and p["pid"] == own_pid,
            }
            for p in snapshot.get("processes", [])
            if p.get("gpu_uuid") == device.get("uuid")
        ]
        sample = GpuSample(
            worker_name=worker_name, job_id=job_id, gpu_index=device["index"],
            gpu_uuid=device.get("uuid"), name=device.get("name"),
            memory_used_mb=device.get("memory_used_mb"),
            memory_total_mb=device.get("memory_total_mb"), utilization=device.get("utilization"),
            temperature_c=device.get("temperature_c"), power_w=device.get("power_w"),
            processes=processes, created_at=at,
        )  # fmt: skip
        session.add(sample)
        samples.append(sample)
    return samples


def sample_row(sample: GpuSample) -> dict[str, Any]:
    """One GpuSample as the chart reads it: `t` in Unix seconds, `job_mb` this job's own memory
    on that GPU (None when the GPU's process list does not show it)."""
    own = [
        p["memory_mb"] for p in sample.processes if p.get("this_job") and p.get("memory_mb")
    ]  # fmt: skip
    return {
        "id": sample.id,
        "gpu": sample.gpu_index,
        "name": sample.name,
        "t": round(sample.created_at.timestamp(), 3),
        "used_mb": sample.memory_used_mb,
        "total_mb": sample.memory_total_mb,
        "utilization": sample.utilization,
        "job_mb": sum(own) if own else None,
    }


def samples_after(
    session: Session, job_id: int, after: int = 0, limit: int | None = None
) -> list[dict[str, Any]]:
    """The job's GPU samples with ids above `after`, oldest first, as chart rows."""
    query = (
        select(GpuSample)
        .where(GpuSample.job_id == job_id, col(GpuSample.id) > after)
        .order_by(col(GpuSample.id))
    )
    rows = session.exec(query.limit(limit) if limit is not None else query).all()
    return [sample_row(s) for s in rows]


# A page load draws at most this many samples per GPU (a day's run at 2 s has 43,200).
CHART_POINTS = 1500


def thin_rows(rows: list[dict[str, Any]], points: int = CHART_POINTS) -> list[dict[str, Any]]:
    """At most about `points` chart rows per GPU: each run of consecutive samples is drawn as
    its highest-memory one (a peak is never thinned away), and every GPU's last sample is
    kept, so the page's stream carries on from the newest id. Rows stay in id order."""
    by_gpu: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        by_gpu.setdefault(row["gpu"], []).append(row)
    kept: list[dict[str, Any]] = []
    for series in by_gpu.values():
        if len(series) <= points:
            kept.extend(series)
            continue
        size = -(-len(series) // points)
        for start in range(0, len(series), size):
            kept.append(max(series[start : start + size], key=lambda r: r["used_mb"] or 0.0))
        if kept[-1] is not series[-1]:
            kept.append(series[-1])
    return sorted(kept, key=lambda r: r["id"])


@dataclass(frozen=True)
class GpuNote:
    """What the job page says in place of (or above) the GPU memory chart."""

    state: str  # "waiting", "no-gpu" or "no-samples"
    text: str

    def as_dict(self) -> dict[str, str]:
        return {"state": self.state, "text": self.text}


NOTE_WAITING = GpuNote("waiting", "Waiting for the first GPU memory sample…")
NOTE_NO_GPU = GpuNote(
    "no-gpu", "No GPU memory samples: this job ran on a worker without an NVIDIA GPU."
)
NOTE_NO_SAMPLES = GpuNote("no-samples", "No GPU memory samples were recorded for this job.")


def gpu_note(session: Session, job: Job | None) -> GpuNote | None:
    """None once the job has samples; otherwise why there are none (yet)."""
    if job is None:
        return NOTE_NO_SAMPLES
    has_samples = session.exec(
        select(GpuSample.id).where(GpuSample.job_id == job.id).limit(1)
    ).first()
    if has_samples is not None:
        return None
    no_gpu = session.exec(
        select(JobEvent.id)
        .where(
            JobEvent.job_id == job.id,
            JobEvent.kind == "log",
            col(JobEvent.message).startswith(NO_GPU_SAMPLES, autoescape=True),
        )
        .limit(1)
    ).first()
    if no_gpu is not None:
        return NOTE_NO_GPU
    return NOTE_NO_SAMPLES if JobStatus(job.status).finished else NOTE_WAITING
