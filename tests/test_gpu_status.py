"""GPU telemetry, the status page, and the guarded way to end a GPU process."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import timedelta

import pytest
from fakegpu import GPU_UUID, FakeGpu
from fastapi.testclient import TestClient
from sqlmodel import Session, select
from support import PASSWORD, login, wait_for

from app.config import Settings
from app.db import session_scope
from app.models import Job, JobStatus, Role, utcnow
from app.services import gpus, jobs, workers
from workers import gpu

# Real `nvidia-smi --format=csv,noheader,nounits` output from a two-GPU machine.
SMI_GPUS = """\
0, GPU-1b2c3d4e-aaaa-bbbb-cccc-000000000000, NVIDIA A100-SXM4-40GB, 31245, 40960, 98, 67, 312.45
1, GPU-5f6a7b8c-aaaa-bbbb-cccc-111111111111, NVIDIA A100-SXM4-40GB, 4, 40960, 0, 31, [N/A]
"""
SMI_APPS = """\
48211, GPU-1b2c3d4e-aaaa-bbbb-cccc-000000000000, /usr/bin/python3, 31200
48377, GPU-5f6a7b8c-aaaa-bbbb-cccc-111111111111, python, [N/A]
"""


def test_parse_real_nvidia_smi_output() -> None:
    devices = gpu.parse_gpus(SMI_GPUS)
    assert [d.index for d in devices] == [0, 1]
    assert devices[0].memory_used_mb == 31245 and devices[0].power_w == pytest.approx(312.45)
    assert devices[1].power_w is None  # [N/A]
    processes = gpu.parse_apps(SMI_APPS, devices)
    assert [(p.pid, p.gpu_index, p.memory_mb) for p in processes] == [
        (48211, 0, 31200.0), (48377, 1, None),
    ]  # fmt: skip
    with pytest.raises(ValueError, match="unexpected nvidia-smi GPU line"):
        gpu.parse_gpus("0, only, three")


def test_snapshot_without_any_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    snap = gpu.snapshot("nvidia-smi")
    assert (snap.provider, snap.devices, snap.note) == ("none", [], gpu.NO_GPU)


def test_snapshot_from_fake_nvidia_smi(fake_gpu: FakeGpu, sleeper: subprocess.Popen) -> None:
    fake_gpu.hold(sleeper.pid, memory_mb=1234)
    snap = gpu.snapshot("nvidia-smi")
    assert snap.provider == "nvidia-smi"
    assert snap.devices[0].uuid == GPU_UUID and snap.devices[0].power_w is None
    [process] = snap.processes
    assert (process.pid, process.memory_mb, process.gpu_index) == (sleeper.pid, 1234.0, 0)
    assert "time.sleep(600)" in process.cmdline


def test_orphans_and_owners(db: Session) -> None:
    now = utcnow()
    job = jobs.create_job(db, "ping")
    jobs.start_job(db, job.id, worker_name="gpu@h", worker_host="h", worker_pid=500,
                   task_id=None)  # fmt: skip
    owned = gpus.orphan_reason(job, now - timedelta(hours=1), now, orphan_after=300)
    assert owned is None  # a running job's process belongs, however long it holds memory
    jobs.finish_job(db, job.id, JobStatus.failed, error="boom")
    db.refresh(job)
    assert "its job #1 failed" in gpus.orphan_reason(job, None, now + timedelta(minutes=5), 300)
    assert gpus.orphan_reason(None, now - timedelta(seconds=30), now, 300) is None
    assert "no job owns it" in gpus.orphan_reason(None, now - timedelta(minutes=10), now, 300)


def _snapshot(pid: int, memory: int = 2048, first_seen: str | None = None) -> dict:
    return {
        "provider": "nvidia-smi", "note": None,
        "devices": [{"index": 0, "uuid": GPU_UUID, "name": "NVIDIA H100", "memory_used_mb": 4096.0,
                     "memory_total_mb": 81920.0, "utilization": 37.0, "temperature_c": 54.0,
                     "power_w": None}],
        "processes": [{"pid": pid, "gpu_uuid": GPU_UUID, "gpu_index": 0, "name": "python3",
                       "cmdline": "python3 train.py", "memory_mb": float(memory),
                       "first_seen": first_seen or utcnow().isoformat()}],
    }  # fmt: skip


def test_status_page_shows_cards_processes_and_owners(
    client: TestClient, db: Session, make_user: Callable
) -> None:
    make_user("root", Role.admin)
    job = jobs.create_job(db, "ping", queue="gpu")
    jobs.start_job(db, job.id, worker_name="gpu@box", worker_host="box", worker_pid=4242,
                   task_id=None)  # fmt: skip
    old = (utcnow() - timedelta(hours=2)).isoformat()
    snap = _snapshot(4242)
    snap["processes"].append({**_snapshot(777, first_seen=old)["processes"][0]})
    workers.heartbeat(db, name="gpu@box", hostname="box", pid=1, queues=["gpu", "host.box"],
                      gpu_snapshot=snap)  # fmt: skip
    workers.heartbeat(db, name="io@cpu", hostname="cpu", pid=2, queues=["io"],
                      gpu_snapshot={"provider": "none", "note": gpu.NO_GPU, "devices": [],
                                    "processes": []})  # fmt: skip
    db.commit()
    login(client, "root", PASSWORD)

    html = client.get("/status").text
    assert 'data-gpu="box:0"' in html and "NVIDIA H100" in html and "4096 / 81920 MiB" in html
    assert f'href="/jobs/{job.id}">#{job.id} ping</a>' in html  # the owner, and running
    owned_row = re.search(r'<tr data-pid="4242"\s*>', html)
    assert owned_row, "the owned process is listed and not marked as an orphan"
    assert re.search(r'<tr data-pid="777" class="orphan">', html)
    assert "no job owns it and it has held GPU memory for 2.0 h" in html
    assert gpu.NO_GPU in html  # the CPU-only host says so
    assert re.search(r'data-queue="io">0 waiting', html)
    assert client.get("/status/live").text.count('data-gpu="box:0"') == 1


@pytest.mark.parametrize("role", [Role.viewer, Role.curator])
def test_only_admins_may_end_processes(
    client: TestClient, make_user: Callable, db: Session, role: Role
) -> None:
    make_user("someone", role)
    csrf = login(client, "someone", PASSWORD)
    response = client.post(
        "/status/processes/end", data={"host": "box", "pid": "4242", "csrf_token": csrf}
    )
    assert response.status_code == 403
    assert db.exec(select(Job)).all() == []


def test_ending_a_process_needs_the_csrf_token(
    client: TestClient, make_user: Callable, db: Session
) -> None:
    make_user("root", Role.admin)
    login(client, "root", PASSWORD)
    response = client.post("/status/processes/end", data={"host": "box", "pid": "4242"})
    assert response.status_code == 403
    assert db.exec(select(Job)).all() == []


def test_bad_end_requests_are_refused(client: TestClient, make_user: Callable) -> None:
    make_user("root", Role.admin)
    csrf = login(client, "root", PASSWORD)
    for host, pid in (("box; rm -rf /", "12"), ("box", "0"), ("box", "-5")):
        response = client.post(
            "/status/processes/end", data={"host": host, "pid": pid, "csrf_token": csrf}
        )
        assert response.status_code == 422, (host, pid)


@pytest.mark.integration
def test_admin_ends_a_real_gpu_process_through_its_worker(
    pg_settings: Settings, fake_gpu: FakeGpu, sleeper: subprocess.Popen, start_worker: Callable
) -> None:
    """The whole road: page → control queue of that host → worker → SIGTERM → outcome."""
    import socket

    from app.services import dispatch, migrations

    settings = pg_settings.model_copy(
        update={"gpu_provider": "nvidia-smi", "end_process_grace": 2.0}
    )
    migrations.upgrade(settings.db_url)
    fake_gpu.hold(sleeper.pid, memory_mb=3000)
    threading.Thread(target=sleeper.wait, daemon=True).start()  # reap it, as its parent would
    start_worker(settings, "gpu", name="gpu@it")
    host = socket.gethostname()

    def submit(pid: int) -> int:
        with session_scope(settings.db_url) as session:
            return dispatch.submit(
                session, settings, "end-process", params={"host": host, "pid": pid}
            ).id

    def outcome(pid: int, what: str) -> Job:
        job_id = submit(pid)

        def finished() -> Job | None:
            with session_scope(settings.db_url) as session:
                job = session.get(Job, job_id)
                return job if JobStatus(job.status).finished else None

        return wait_for(finished, 30, what=what)

    # A pid the GPU list does not show is refused, and left alone.
    stranger = subprocess.Popen(["sleep", "600"])
    try:
        refused = outcome(stranger.pid, "refusal")
        assert refused.status == JobStatus.failed
        assert f"refused: pid {stranger.pid} is not holding GPU memory" in refused.error
        assert stranger.poll() is None
        one = outcome(1, "pid 1 refusal")
        assert one.error == "refused: pid 1 is the init process"
    finally:
        stranger.kill()
        stranger.wait()

    ended = outcome(sleeper.pid, "end-process")
    assert ended.status == JobStatus.succeeded, ended.error
    assert ended.queue == f"host.{host}"
    assert ended.result["outcome"] == f"ended pid {sleeper.pid} (python3, 3000 MiB) with SIGTERM"
    wait_for(lambda: sleeper.poll() is not None, 10, what="the process to be gone")

    gone = outcome(sleeper.pid, "second request")
    assert "is not holding GPU memory" in gone.error  # no longer listed, so nothing to end

    # One that shrugs off SIGTERM gets SIGKILL after the grace period.
    stubborn = subprocess.Popen(
        [sys.executable, "-c",
         "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "print('ready', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert stubborn.stdout.readline().strip() == "ready"
    threading.Thread(target=stubborn.wait, daemon=True).start()
    fake_gpu.hold(stubborn.pid, name="python3", memory_mb=500)
    killed = outcome(stubborn.pid, "SIGKILL")
    assert killed.result["outcome"] == f"ended pid {stubborn.pid} (python3, 500 MiB) with SIGKILL"
    wait_for(lambda: stubborn.poll() is not None, 10, what="the stubborn process to be gone")
