"""`sporeprint up` with nothing configured: SQLite database, SQLite broker, three processes.

The whole product runs as a person would start it; the tests talk to it over real TCP only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import wait_for
from upstack import UpStack, cmdline, is_alive, living_in_group, login

pytestmark = pytest.mark.e2e

JOB_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30


@pytest.fixture
def stacks(tmp_path: Path) -> Iterator[list[UpStack]]:
    """Every `up` a test starts is torn down, with all its children, whatever happened."""
    started: list[UpStack] = []
    yield started
    for stack in started:
        stack.close()
    leftovers = {stack.pid: stack.survivors() for stack in started}
    assert not any(leftovers.values()), f"processes survived teardown: {leftovers}"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    assert not path.exists()
    return path


def start_up(stacks: list[UpStack], data_dir: Path, log_dir: Path, **kwargs) -> UpStack:
    stack = UpStack(data_dir, log_dir, **kwargs)
    stacks.append(stack)
    return stack.start()


def wait_jobs(client: httpx.Client, ids: set[int], timeout: float = JOB_TIMEOUT_S) -> list[dict]:
    """Poll the API until every job in `ids` has finished; their JSON, oldest first."""

    def finished() -> list[dict] | None:
        response = client.get("/api/jobs")
        assert response.status_code == 200, response.text
        rows = [job for job in response.json() if job["id"] in ids]
        assert len(rows) == len(ids), f"jobs missing from /api/jobs: {ids} vs {rows}"
        if all(job["status"] in ("succeeded", "failed", "cancelled") for job in rows):
            return sorted(rows, key=lambda job: job["id"])
        return None

    return wait_for(finished, timeout, interval=0.3, what=f"jobs {sorted(ids)} to finish")


def stop_and_check(stack: UpStack, pids_from_jobs: list[int]) -> None:
    """Ctrl-C `up`: exit code 0, 'stopped' printed, nothing of it left running."""
    assert len(stack.children) == 3, [cmdline(p) for p in stack.children]
    tree = dict(stack.seen)
    code = stack.interrupt(timeout=STOP_TIMEOUT_S)
    assert code == 0, stack.tail()
    assert re.search(r"^stopped\s*$", stack.stderr(), re.MULTILINE), stack.tail()

    # up's own process group is gone...
    with pytest.raises(ProcessLookupError):
        os.killpg(stack.pid, 0)

    # ...and so is each child's (they run in sessions of their own), and every process that
    # ever was in the tree: web, both workers, their pool processes, the jobs' own processes.
    def all_gone() -> bool:
        for pgid in stack.children:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                continue
            if living_in_group(pgid):  # a group of nothing but unreaped zombies is dead
                return False
        living = [pid for pid, start in tree.items() if is_alive(pid, start)]
        living += [pid for pid in pids_from_jobs if is_alive(pid) and "app.cli" in cmdline(pid)]
        return not living and not stack.survivors()

    # up has waited for its children already; allow a moment for init to reap orphans.
    wait_for(all_gone, 5, what="every process of the stack to be gone")


def test_up_runs_everything_on_one_machine(stacks: list[UpStack], data_dir: Path, tmp_path: Path):
    stack = start_up(stacks, data_dir, tmp_path)
    err = stack.stderr()
    assert "single-machine" in err, err

    # The first admin's password is printed once, on stderr, and nowhere else.
    credentials = stack.admin_credentials()
    assert len(credentials) == 1, err
    username, password = credentials[0]
    assert username == "admin"
    assert len(password) >= 12
    assert err.count(password) == 1
    assert password not in stack.stdout()

    with stack.client() as client:
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"

        anonymous = client.get("/jobs")
        assert anonymous.status_code == 303
        assert anonymous.headers["location"].startswith("/login")

        csrf = login(client, username, password)
        before = {job["id"] for job in client.get("/api/jobs").json()}
        assert before == set()

        # Without the token the session cannot queue anything.
        assert client.post("/jobs/ping").status_code == 403
        queued = client.post("/jobs/ping", headers={"X-CSRF-Token": csrf})
        assert queued.status_code == 303, queued.text
        ids = {job["id"] for job in client.get("/api/jobs").json()}
        assert len(ids) == 2

        jobs = wait_jobs(client, ids)
    assert [job["status"] for job in jobs] == ["succeeded", "succeeded"], jobs
    by_queue = {job["queue"]: job for job in jobs}
    assert set(by_queue) == {"io", "gpu"}, jobs
    for queue, job in by_queue.items():
        assert job["worker_name"].startswith(f"{queue}@"), job
        assert job["progress"] == 1.0
        assert job["result"]["pid"] == job["worker_pid"]
    assert by_queue["io"]["worker_name"] != by_queue["gpu"]["worker_name"]

    # Single-machine mode keeps its state in the data directory, not in the working directory.
    assert (data_dir / "sporeprint.db").is_file()
    assert (data_dir / "broker.db").is_file()
    assert not (stack.cwd / "data").exists()

    stop_and_check(stack, [job["worker_pid"] for job in jobs])


def test_restart_keeps_data_and_shows_no_new_password(
    stacks: list[UpStack], data_dir: Path, tmp_path: Path
):
    first = start_up(stacks, data_dir, tmp_path, name="first")
    [(username, password)] = first.admin_credentials()
    with first.client() as client:
        csrf = login(client, username, password)
        created = client.post(
            "/api/jobs",
            json={"kind": "ping", "queue": "io", "params": {"seconds": 0.2, "steps": 2}},
            headers={"X-CSRF-Token": csrf},
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        [job] = wait_jobs(client, {job_id})
        assert job["status"] == "succeeded", job
        cookies = dict(client.cookies)
    stop_and_check(first, [job["worker_pid"]])

    # Same data directory, same port: as a person would start it again tomorrow.
    second = start_up(stacks, data_dir, tmp_path, name="second", port=first.port)
    err = second.stderr()
    assert second.admin_credentials() == [], err
    assert "Created the first user" not in err
    assert password not in err
    assert password not in second.stdout()

    # The session cookie signed before the restart still works: the secret key was kept.
    with second.client() as client:
        client.cookies.update(cookies)
        still_in = client.get("/api/jobs")
        assert still_in.status_code == 200, still_in.text
        assert [j["id"] for j in still_in.json()] == [job_id]

    # The first password still signs in, and the earlier job is listed as it ended.
    with second.client() as client:
        login(client, username, password)
        listed = {j["id"]: j for j in client.get("/api/jobs").json()}
        assert set(listed) == {job_id}
        assert listed[job_id]["status"] == "succeeded"
        assert listed[job_id]["worker_name"] == job["worker_name"]
        jobs_page = client.get("/jobs").text
        assert f'id="job-{job_id}"' in jobs_page
    stop_and_check(second, [])
