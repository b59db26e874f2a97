"""Start-up checks that turn a bad configuration into one actionable line, not a traceback."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

from kombu import Connection
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from app.config import Settings
from app.db import get_engine
from app.services import migrations
from app.services.jobs import QUEUES, control_queue

CONNECT_TIMEOUT_S = 5
SUPPORTED_DATABASES = ("postgresql", "sqlite")


class StartupError(RuntimeError):
    """Configuration or environment problem; the message tells the person what to do."""


def check_data_dir(settings: Settings) -> None:
    path = settings.data_dir
    probe = path / f".write-test-{uuid.uuid4().hex}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StartupError(
            f"data directory {path} cannot be written ({reason}); "
            "set SPOREPRINT_DATA_DIR to a folder you can write to"
        ) from None


def _parse_database_url(raw: str) -> URL:
    hint = "expected e.g. postgresql+psycopg2://user:password@host:5432/sporeprint"
    try:
        url = make_url(raw)
    except ArgumentError:
        raise StartupError(f"DATABASE_URL {raw!r} is not a database URL; {hint}") from None
    if url.get_backend_name() not in SUPPORTED_DATABASES:
        raise StartupError(
            f"DATABASE_URL uses {url.get_backend_name()!r}, which Sporeprint does not support; "
            f"{hint} (or unset it for a local SQLite file)"
        )
    if url.get_backend_name() == "postgresql" and not url.database:
        raise StartupError(f"DATABASE_URL names no database; {hint}")
    return url


def check_database(settings: Settings) -> None:
    url = _parse_database_url(settings.db_url)
    shown = url.render_as_string(hide_password=True)
    try:
        engine = get_engine(settings.db_url)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except ModuleNotFoundError as exc:
        raise StartupError(f"the database driver {exc.name!r} is not installed") from None
    except SQLAlchemyError as exc:
        first_line = str(getattr(exc, "orig", exc) or exc).strip().splitlines()[0]
        raise StartupError(
            f"cannot connect to the database {shown}: {first_line}; "
            "check that it is running and that DATABASE_URL is right"
        ) from None


def check_schema(settings: Settings) -> None:
    """Refuse to serve a database whose schema is older or newer than this code."""
    current = migrations.current_revision(settings.db_url)
    head = migrations.head_revision(settings.db_url)
    if current != head:
        raise StartupError(
            f"the database schema is at revision {current or 'none'} but this version needs "
            f"{head}; run `sporeprint migrate` first"
        )


def check_broker(settings: Settings) -> None:
    raw = settings.broker_url
    scheme = raw.split("://", 1)[0]
    if scheme.startswith("sqla+"):
        _prepare_sqlite_broker(raw.removeprefix("sqla+"))
    elif scheme in ("redis", "rediss"):
        _ping_redis(raw)
    else:
        _ping_kombu(raw)


def _prepare_sqlite_broker(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        raise StartupError(
            f"CELERY_BROKER_URL {url!r} is not supported; use redis://host:6379/0 "
            "(or unset it for the local SQLite broker)"
        )
    path = Path(parsed.database)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # WAL is a property of the file: set once here, it holds for every process using it.
        with sqlite3.connect(path, timeout=30) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
        # kombu's SQL transport creates a queue's row on first use with a check-then-insert
        # that is only locked within one process: two workers starting together on a new file
        # can both insert and one dies. Declare every queue once, here, before they start.
        with Connection(f"sqla+{url}", transport_options={"connect_args": {"timeout": 30}}) as c:
            for queue in (*QUEUES, control_queue()):
                c.default_channel.queue_declare(queue=queue)
    except (OSError, sqlite3.Error, SQLAlchemyError) as exc:
        raise StartupError(f"cannot open the broker database {path}: {exc}") from None


def _ping_redis(url: str) -> None:
    import redis

    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S
        )
        client.ping()
    except (redis.RedisError, ValueError) as exc:
        raise StartupError(
            f"cannot reach the broker at {_hide_password(url)}: {exc}; "
            "check that Redis is running and that CELERY_BROKER_URL is right"
        ) from None


def _ping_kombu(url: str) -> None:
    try:
        with Connection(url, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            conn.ensure_connection(max_retries=1, timeout=CONNECT_TIMEOUT_S)
    except Exception as exc:  # kombu raises transport-specific errors
        raise StartupError(
            f"cannot reach the broker at {_hide_password(url)}: {exc}; check CELERY_BROKER_URL"
        ) from None


def _hide_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1]


def check_all(settings: Settings, *, schema: bool = False) -> None:
    check_data_dir(settings)
    check_database(settings)
    check_broker(settings)
    if schema:
        check_schema(settings)
