"""Helpers shared by the tests: settings for each run mode, subprocess environments, waiting."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from fastapi.testclient import TestClient

from app.config import Settings

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct-horse-battery"
T = TypeVar("T")


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment for a child process (worker, `sporeprint up`) that sees these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOREPRINT_")}
    env.pop("DATABASE_URL", None)
    env.pop("CELERY_BROKER_URL", None)
    env.update(
        SPOREPRINT_DATA_DIR=str(settings.data_dir),
        SPOREPRINT_HEARTBEAT_INTERVAL=str(settings.heartbeat_interval),
        SPOREPRINT_WORKER_TIMEOUT=str(settings.worker_timeout),
        SPOREPRINT_GPU_PROVIDER=settings.gpu_provider,
        SPOREPRINT_GPU_SAMPLE_INTERVAL=str(settings.gpu_sample_interval),
        SPOREPRINT_INAT_PHOTO_BASE_URL=settings.inat_photo_base_url,
        SPOREPRINT_END_PROCESS_GRACE=str(settings.end_process_grace),
        PYTHONUNBUFFERED="1",
    )
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    if settings.celery_broker_url:
        env["CELERY_BROKER_URL"] = settings.celery_broker_url
    if settings.secret_key:
        env["SPOREPRINT_SECRET_KEY"] = settings.secret_key
    return env


def wait_for(
    probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.2, what: str = ""
) -> T:
    """Poll `probe` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or probe}")
        time.sleep(interval)


def csrf_from(client: TestClient) -> str:
    """Fetch the login page to start a session and return its CSRF token."""
    import re

    html = client.get("/login").text
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "login page has no CSRF field"
    return match.group(1)


def login(client: TestClient, username: str, password: str) -> str:
    """Sign in through the form; returns the session's CSRF token for later requests."""
    token = csrf_from(client)
    response = client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    # Signing in starts a fresh session with a new token; read it from any page.
    import re

    html = client.get("/jobs").text
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert match
    return match.group(1)
