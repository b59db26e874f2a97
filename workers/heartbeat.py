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
from app.services import jobs, workers

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

        def beat() -> None:
            with session_scope(settings.db_url) as session:
                workers.heartbeat(session, **identity)
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
