"""Fixtures: settings per run mode, migrated databases, app clients, real Celery workers.

PostgreSQL and Redis are the machine's own (127.0.0.1); each test gets a fresh database and
a Redis database number that is flushed around it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from browsing import CHROMIUM, CHROMIUM_ARGS
from demo_model import DemoModel, train_demo_model
from fakegpu import FakeGpu
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, sync_playwright
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import Session
from support import PASSWORD, ROOT, settings_env, wait_for

from app.config import Settings
from app.db import dispose_engines, get_engine, session_scope
from app.main import create_app
from app.models import Role, Worker
from app.services import auth, migrations

PG_ADMIN_URL = os.environ.get(
    "SPOREPRINT_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
# A Redis server; each test takes one of its numbered databases at random (1-15), so runs in
# parallel on one machine rarely meet. The path of the URL is ignored.
REDIS_URL = os.environ.get("SPOREPRINT_TEST_REDIS", "redis://127.0.0.1:6379/0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` run only where an NVIDIA GPU answers (NVML or nvidia-smi)."""
    wanted = [item for item in items if item.get_closest_marker("gpu")]
    if not wanted:
        return
    from workers import gpu

    snapshot = gpu.snapshot("auto")
    if snapshot.devices:
        return
    skip = pytest.mark.skip(reason=f"needs an NVIDIA GPU; {snapshot.note or 'none here'}")
    for item in wanted:
        item.add_marker(skip)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards."""
    name = f"sporeprint_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    dispose_engines()
    with admin.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
            {"n": name},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture
def redis_url() -> Iterator[str]:
    url = make_url(REDIS_URL).set(database=str(random.randint(1, 15))).render_as_string(False)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    """Single-machine mode: nothing configured but the data directory."""
    (tmp_path / "data").mkdir()
    return Settings(_env_file=None, data_dir=tmp_path / "data")


@pytest.fixture
def pg_settings(tmp_path: Path, pg_url: str, redis_url: str) -> Settings:
    """Server mode against the machine's PostgreSQL and Redis, with fast heartbeats."""
    (tmp_path / "data").mkdir()
    return Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        database_url=pg_url,
        celery_broker_url=redis_url,
        heartbeat_interval=0.5,
        worker_timeout=3.0,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest) -> Settings:
    """Both run modes; tests using this run twice."""
    name = "sqlite_settings" if request.param == "sqlite" else "pg_settings"
    return request.getfixturevalue(name)


@pytest.fixture
def migrated(settings: Settings) -> Settings:
    migrations.upgrade(settings.db_url)
    return settings


@pytest.fixture
def db(migrated: Settings) -> Iterator[Session]:
    with Session(get_engine(migrated.db_url), expire_on_commit=False) as session:
        yield session


@pytest.fixture
def make_user(migrated: Settings) -> Callable[..., str]:
    def make(username: str, role: Role = Role.curator, password: str = PASSWORD) -> str:
        with session_scope(migrated.db_url) as session:
            auth.create_user(session, username, password, role)
        return username

    return make


@pytest.fixture
def web_app(migrated: Settings) -> FastAPI:
    return create_app(migrated)


@pytest.fixture
def client(web_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(web_app, base_url="http://testserver") as c:
        yield c


class WorkerProcess:
    def __init__(self, settings: Settings, queues: str, name: str) -> None:
        self.settings, self.name = settings, name
        self.log_path = settings.data_dir / f"{name.replace('@', '_')}.log"
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--queues", queues, "--name", name],
            cwd=ROOT, env=settings_env(settings), stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 60) -> None:
        def registered() -> bool:
            assert self.process.poll() is None, self.output()
            with session_scope(self.settings.db_url) as session:
                from sqlmodel import select

                row = session.exec(select(Worker).where(Worker.name == self.name)).first()
                return row is not None and row.stopped_at is None

        wait_for(registered, timeout, what=f"worker {self.name} to register")

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def kill_hard(self) -> None:
        """SIGKILL the whole process tree, as if the machine died."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill_hard()
        self.log.close()


@pytest.fixture
def start_worker() -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(settings: Settings, queues: str = "io,gpu", name: str | None = None) -> WorkerProcess:
        worker = WorkerProcess(settings, queues, name or f"test-{uuid.uuid4().hex[:6]}@testhost")
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def fake_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeGpu:
    """A fake `nvidia-smi` first on PATH for this process and the workers it starts."""
    gpu = FakeGpu(tmp_path)
    for key, value in gpu.environ().items():
        monkeypatch.setenv(key, value)
    return gpu


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen]:
    """A real process for a GPU process table to list (and for a test to end)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, driven by Playwright; one per test module.

    Not per session: Playwright's sync API keeps an event loop running on the main thread while
    it lives, and later tests that call `asyncio.run` (the downloader) need that thread free.
    """
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def js_errors() -> list[str]:
    """Collects a page's JavaScript and console errors (see `browsing.open_page`)."""
    return []


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> DemoModel:
    """A small trained model, made once per session (read-only: see tests/demo_model.py)."""
    pytest.importorskip("tensorflow")
    return train_demo_model(tmp_path_factory.mktemp("demo-model"))
