"""The Celery application, configured from Sporeprint's settings.

Celery only carries messages: results are ignored and every bit of job state lives in the
database. `celery -A workers.celery_app worker` (what `sporeprint worker` runs) finds `app` here.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue
from kombu.transport import sqlalchemy as sqla_transport

from app.config import Settings, get_settings
from app.services.jobs import QUEUES
from workers.heartbeat import HeartbeatStep

TASK_MODULES = [
    "workers.tasks.ping",
    "workers.tasks.demo",
    "workers.tasks.imports",
    "workers.tasks.download",
    "workers.tasks.inat",
    "workers.tasks.curate",
    "workers.tasks.control",
    "workers.tasks.datasets",
    "workers.tasks.train",
    "workers.tasks.evaluate",
    "workers.tasks.export",
]
# Redis redelivers an unacknowledged message after this long; training runs for hours and our
# own start guard already refuses a second run, so make it long rather than surprising.
REDIS_VISIBILITY_TIMEOUT_S = 7 * 24 * 3600
SQLITE_POLL_INTERVAL_S = 0.1


def uses_sqlite_broker(settings: Settings) -> bool:
    return settings.broker_url.startswith("sqla+")


def create_celery(settings: Settings) -> Celery:
    celery = Celery("sporeprint", include=TASK_MODULES)
    options: dict = {}
    if uses_sqlite_broker(settings):
        # Passed to create_engine by kombu: wait for the write lock instead of failing.
        options = {"connect_args": {"timeout": 30}}
        # kombu hands every transport option to create_engine, so the poll interval cannot
        # go there; the 1 s default caps a worker at ~2 short jobs/s (acks_late, prefetch 1).
        sqla_transport.Transport.polling_interval = SQLITE_POLL_INTERVAL_S
    elif settings.broker_url.startswith("redis"):
        options = {"visibility_timeout": REDIS_VISIBILITY_TIMEOUT_S}
    celery.conf.update(
        broker_url=settings.broker_url,
        broker_transport_options=options,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        # Fail a publish within seconds when the broker is down, so the user hears about it.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5},
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="io",
        task_queues=[Queue(name) for name in QUEUES],
        task_create_missing_queues=True,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        # The SQL transport has no fan-out, so broadcast control cannot work there.
        worker_enable_remote_control=not uses_sqlite_broker(settings),
        worker_send_task_events=False,
        enable_utc=True,
    )
    return celery


app = create_celery(get_settings())
app.steps["worker"].add(HeartbeatStep)
