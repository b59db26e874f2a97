"""A worker bootstep: heartbeat rows every few seconds, and reaping of jobs lost elsewhere."""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any, ClassVar

from celery import bootsteps

from app import __version__
from app.config import get_settings
from app.db import session_scope
from app.models import utcnow
from app.services import jobs, workers
from workers import gpu

log = logging.getLogger(__name__)


class HeartbeatStep(bootsteps.StartStopStep):
    """Runs in the worker's main process, so a busy (or stuck) task cannot silence it."""

    requires: ClassVar[set[str]] = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        settings = get_settings()
        queues = sorted(worker.app.amqp.queues.consume_from or [])
        identity = {
            "name": worker.hostname,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "queues": queues,
            "version": __version__,
        }

        first_seen: dict[int, str] = {}

        def gpus() -> dict[str, Any]:
            snap = gpu.snapshot(settings.gpu_provider).as_dict()
            # When each pid was first seen holding GPU memory: how orphans are told apart
            # from a process that has only just started.
            now = utcnow().isoformat()
            live = {p["pid"] for p in snap["processes"]}
            for pid in list(first_seen):
                if pid not in live:
                    del first_seen[pid]
            for process in snap["processes"]:
                process["first_seen"] = first_seen.setdefault(process["pid"], now)
            return snap

        def beat() -> None:
            snapshot = gpus()
            with session_scope(settings.db_url) as session:
                workers.heartbeat(session, **identity, gpu_snapshot=snapshot)
                lost = jobs.reap_lost_jobs(session, settings.worker_timeout)
            if lost:
                log.warning("marked jobs %s failed: their worker stopped responding", lost)

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    beat()
                except Exception:  # keep beating through a database blip
                    log.exception("heartbeat failed")
                self._stop.wait(settings.heartbeat_interval)

        beat()  # register before the first task can start
        self._thread = threading.Thread(target=loop, name="sporeprint-heartbeat", daemon=True)
        self._thread.start()

    def stop(self, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            with session_scope(get_settings().db_url) as session:
                workers.mark_stopped(session, worker.hostname, os.getpid())
        except Exception:
            log.exception("could not record the worker's shutdown")
