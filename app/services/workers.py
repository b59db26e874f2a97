"""Worker registry: heartbeats in, liveness out."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlmodel import Session, col, select

from app.models import Worker, utcnow


class Liveness(StrEnum):
    alive = "alive"
    late = "late"
    dead = "dead"
    stopped = "stopped"


def heartbeat(
    session: Session,
    *,
    name: str,
    hostname: str,
    pid: int,
    queues: Sequence[str],
    version: str = "",
    gpu_snapshot: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> Worker:
    """Record that worker `name` is alive (insert on first beat, restart clears stopped_at)."""
    now = now or utcnow()
    worker = session.exec(select(Worker).where(Worker.name == name)).first()
    if worker is None or worker.pid != pid or worker.stopped_at is not None:
        # A new process under a known name is a restart: start its history afresh.
        worker = worker or Worker(name=name, hostname=hostname, pid=pid)
        worker.pid = pid
        worker.started_at = now
        worker.stopped_at = None
    worker.hostname = hostname
    worker.queues = list(queues)
    worker.version = version
    worker.last_heartbeat = now
    worker.gpu_snapshot = gpu_snapshot
    session.add(worker)
    session.flush()
    return worker


def mark_stopped(session: Session, name: str, pid: int) -> None:
    worker = session.exec(select(Worker).where(Worker.name == name)).first()
    if worker is not None and worker.pid == pid:
        worker.stopped_at = utcnow()
        session.add(worker)


def liveness(
    worker: Worker, interval: float, timeout: float, now: datetime | None = None
) -> Liveness:
    """Alive within two beats, late until the timeout, dead after it."""
    if worker.stopped_at is not None:
        return Liveness.stopped
    age = ((now or utcnow()) - worker.last_heartbeat).total_seconds()
    if age <= 2 * interval:
        return Liveness.alive
    return Liveness.late if age <= timeout else Liveness.dead


def all_workers(session: Session) -> Sequence[Worker]:
    return session.exec(select(Worker).order_by(col(Worker.name))).all()
