"""Job round trip: how fast a queued job reaches a worker and comes back finished.

Submits N no-op ping jobs to one io worker and measures jobs/s and the median time from
"queued" to "succeeded", in server mode (PostgreSQL + Redis) and in single-machine mode
(SQLite + kombu's SQL transport), in the same run. Prints one JSON line; the ratio is
server over single-machine throughput.

    .venv/bin/python bench/job_roundtrip.py [--jobs 100]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlmodel import col, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pgtemp import temporary_database  # noqa: E402

from app.config import Settings  # noqa: E402
from app.db import session_scope  # noqa: E402
from app.models import Job, JobStatus, Worker  # noqa: E402
from app.services import dispatch, migrations, preflight  # noqa: E402

REDIS = os.environ.get("SPOREPRINT_TEST_REDIS", "redis://127.0.0.1:6379/13")


def run_mode(settings: Settings, n: int) -> dict[str, float]:
    preflight.check_all(settings)  # what `sporeprint up` does first: dirs, broker file
    migrations.upgrade(settings.db_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOREPRINT_")}
    env.update(SPOREPRINT_DATA_DIR=str(settings.data_dir))
    for key, value in (("DATABASE_URL", settings.database_url),
                       ("CELERY_BROKER_URL", settings.celery_broker_url)):  # fmt: skip
        env.pop(key, None)
        if value:
            env[key] = value
    worker = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--queues", "io", "--name", "bench@local"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        while True:  # wait for the worker's first heartbeat
            with session_scope(settings.db_url) as s:
                if s.exec(select(Worker)).first():
                    break
            time.sleep(0.2)
        time.sleep(1.0)  # let the consumer attach to the queue
        started = time.perf_counter()
        with session_scope(settings.db_url) as s:
            for _ in range(n):
                dispatch.submit(s, settings, "ping", queue="io", params={"seconds": 0, "steps": 1})
        while True:
            with session_scope(settings.db_url) as s:
                done = s.exec(select(Job).where(col(Job.status) == JobStatus.succeeded)).all()
            if len(done) == n:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        latencies = [(j.finished_at - j.created_at).total_seconds() for j in done]
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:  # billiard's pool can hang in shutdown; don't wait on it
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    return {
        "jobs_per_s": round(n / elapsed, 2),
        "median_latency_s": round(statistics.median(latencies), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100, help="ping jobs per mode")
    args = parser.parse_args()

    import redis

    redis.Redis.from_url(REDIS).flushdb()
    with temporary_database() as pg_url, tempfile.TemporaryDirectory() as tmp:
        server = run_mode(
            Settings(_env_file=None, data_dir=Path(tmp, "server"), database_url=pg_url,
                     celery_broker_url=REDIS), args.jobs,
        )  # fmt: skip
        single = run_mode(Settings(_env_file=None, data_dir=Path(tmp, "single")), args.jobs)
    print(json.dumps({
        "bench": "job_roundtrip", "jobs": args.jobs, "worker_concurrency": 2,
        "server_postgres_redis": server, "single_machine_sqlite": single,
        "ratio_server_over_single_jobs_per_s": round(
            server["jobs_per_s"] / single["jobs_per_s"], 2
        ),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
