"""The fleet's GPUs as the status page shows them: devices, processes, owners, orphans.

Workers publish raw snapshots with their heartbeats (see `workers/gpu.py`); this module joins
them with the jobs table to say which job owns each process and which processes are orphans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from app.models import Job, JobStatus, Worker, utcnow
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
