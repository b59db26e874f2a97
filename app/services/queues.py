"""Broker queue depths: how many job messages wait on each queue."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from kombu import Connection

from app.config import Settings

log = logging.getLogger(__name__)
TIMEOUT_S = 3


def queue_depths(settings: Settings, queues: Iterable[str]) -> dict[str, int | None]:
    """Messages waiting per queue; None where the broker could not say."""
    names = sorted(set(queues))
    depths: dict[str, int | None] = dict.fromkeys(names)
    options = {"connect_args": {"timeout": 30}} if settings.broker_url.startswith("sqla+") else {}
    try:
        with Connection(
            settings.broker_url, connect_timeout=TIMEOUT_S, transport_options=options
        ) as conn:
            conn.ensure_connection(max_retries=1, timeout=TIMEOUT_S)
            channel = conn.channel()
            for name in names:
                try:
                    # passive: ask about the queue without creating it
                    depths[name] = channel.queue_declare(queue=name, passive=True).message_count
                except conn.channel_errors:
                    # No such queue yet (no worker has bound it): nothing can be waiting there.
                    depths[name] = 0
                    channel = conn.channel()
    except Exception as exc:  # an unreachable broker must not break the status page
        log.warning("could not read queue depths: %s", exc)
    return depths
