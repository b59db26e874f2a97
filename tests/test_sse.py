"""Server-Sent Events: live job updates read from the database, resumable by Last-Event-ID."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from support import PASSWORD, wait_for

from app.config import Settings
from app.db import session_scope
from app.main import create_app
from app.models import JobStatus, Role
from app.services import auth, jobs

pytestmark = pytest.mark.integration


@pytest.fixture
def live(migrated: Settings) -> Iterator[httpx.Client]:
    """The real app on a real port, and a signed-in HTTP client."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(migrated), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 20, what="uvicorn")
    with session_scope(migrated.db_url) as session:
        auth.create_user(session, "ada", PASSWORD, Role.curator)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
        assert token
        client.post(
            "/login", data={"username": "ada", "password": PASSWORD, "csrf_token": token[1]}
        )
        yield client
    server.should_exit = True
    thread.join(timeout=10)


def read_events(response: httpx.Response, until: str, limit: float = 15) -> list[dict]:
    """Parse an SSE stream until an event named `until` arrives."""
    events, current = [], {"data": []}
    started = time.monotonic()
    for line in response.iter_lines():
        if time.monotonic() - started > limit:
            raise AssertionError(f"no '{until}' event within {limit} s; got {events}")
        if line.startswith(":"):
            continue  # keep-alive comment
        if not line:
            if current.get("event"):
                events.append({**current, "data": "\n".join(current["data"])})
                if current["event"] == until:
                    return events
            current = {"data": []}
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            current["data"].append(value)
        else:
            current[field] = value
    raise AssertionError(f"stream ended before '{until}': {events}")


def test_job_stream_resumes_after_last_event_id_and_closes_when_done(
    live: httpx.Client, migrated: Settings
) -> None:
    with session_scope(migrated.db_url) as session:
        job = jobs.create_job(session, "ping", queue="io")
        jobs.start_job(session, job.id, worker_name="io@x", worker_host="x", worker_pid=1,
                       task_id=None)  # fmt: skip
        jobs.log(session, job.id, "first line")
        seen = jobs.last_event_id(session, job.id)

    def finish_later() -> None:
        time.sleep(1.0)
        with session_scope(migrated.db_url) as session:
            jobs.log(session, job.id, "second line")
            jobs.finish_job(session, job.id, JobStatus.succeeded, result={})

    threading.Thread(target=finish_later, daemon=True).start()
    # A reconnecting browser sends Last-Event-ID: only what came after it is sent again.
    with live.stream("GET", f"/jobs/{job.id}/stream", headers={"Last-Event-ID": str(seen)}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = read_events(r, until="done")

    ids = [int(e["id"]) for e in events]
    assert min(ids) > seen and ids == sorted(ids)
    logs = "".join(e["data"] for e in events if e["event"] == "log")
    assert "second line" in logs and "first line" not in logs
    statuses = [e["data"] for e in events if e["event"] == "status"]
    assert 'data-status="succeeded"' in statuses[-1]


def test_jobs_list_stream_sends_new_rows(live: httpx.Client, migrated: Settings) -> None:
    with session_scope(migrated.db_url) as session:
        mark = jobs.last_event_id(session)

    def queue_later() -> None:
        time.sleep(0.8)
        with session_scope(migrated.db_url) as session:
            jobs.create_job(session, "ping", queue="gpu")

    threading.Thread(target=queue_later, daemon=True).start()
    with live.stream("GET", f"/jobs/stream?after={mark}") as r:
        events = read_events(r, until="jobs")
    rows = events[-1]["data"]
    assert 'data-status="queued"' in rows and "<code>gpu</code>" in rows


def test_streams_need_a_session(live: httpx.Client) -> None:
    anonymous = httpx.get(live.base_url.join("/jobs/stream"), follow_redirects=False)
    assert anonymous.status_code == 303
