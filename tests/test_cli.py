"""The command line: start-up errors are one actionable line, `--help` helps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

from app.config import Settings
from app.services import migrations, preflight


def run_cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("SPOREPRINT_")}
    base.pop("DATABASE_URL", None)
    base.pop("CELERY_BROKER_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], cwd=ROOT, env={**base, **env},
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    text = lines[0]
    assert text.startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in text, text


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("not a url", "is not a database URL"),
        ("mysql://root@127.0.0.1/x", "does not support"),
        ("postgresql+psycopg2://postgres@127.0.0.1:1/sporeprint", "cannot connect to the database"),
        ("postgresql+psycopg2://postgres@127.0.0.1:5432/", "names no database"),
    ],
)
def test_bad_database_url(tmp_path: Path, url: str, fragment: str) -> None:
    env = {"SPOREPRINT_DATA_DIR": str(tmp_path), "DATABASE_URL": url}
    _one_line_error(run_cli("web", env=env), fragment)


def test_unreachable_broker(tmp_path: Path) -> None:
    env = {"SPOREPRINT_DATA_DIR": str(tmp_path), "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}
    _one_line_error(run_cli("up", env=env), "cannot reach the broker", "CELERY_BROKER_URL")


def test_unwritable_data_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    env = {"SPOREPRINT_DATA_DIR": str(blocker / "data")}
    _one_line_error(run_cli("up", env=env), "cannot be written", "SPOREPRINT_DATA_DIR")


def test_invalid_setting_value(tmp_path: Path) -> None:
    env = {"SPOREPRINT_DATA_DIR": str(tmp_path), "SPOREPRINT_PORT": "eighty"}
    _one_line_error(run_cli("web", env=env), "invalid configuration", "port")


def test_web_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    _one_line_error(
        run_cli("web", env={"SPOREPRINT_DATA_DIR": str(tmp_path)}), "run `sporeprint migrate`"
    )


def test_too_short_admin_password(tmp_path: Path) -> None:
    env = {"SPOREPRINT_DATA_DIR": str(tmp_path), "SPOREPRINT_ADMIN_PASSWORD": "short"}
    _one_line_error(run_cli("up", env=env), "SPOREPRINT_ADMIN_PASSWORD", "at least 8")


def test_unknown_worker_queue(tmp_path: Path) -> None:
    env = {"SPOREPRINT_DATA_DIR": str(tmp_path)}
    _one_line_error(run_cli("worker", "--queues", "io,cpu", env=env), "unknown queue(s) cpu")


def test_migrate_then_users_and_tokens(tmp_path: Path) -> None:
    env = {"SPOREPRINT_DATA_DIR": str(tmp_path)}
    migrated = run_cli("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    head = migrations.head_revision(f"sqlite:///{tmp_path / 'sporeprint.db'}")
    assert f"empty → {head}" in migrated.stderr
    made = run_cli("create-user", "ada", "--role", "admin", "--password", "long-enough", env=env)
    assert made.returncode == 0, made.stderr
    _one_line_error(
        run_cli("create-user", "ada", "--password", "long-enough", env=env), "already exists"
    )
    _one_line_error(run_cli("create-user", "bob", "--password", "short", env=env), "at least 8")
    token = run_cli("create-token", "ada", "--name", "laptop", env=env)
    assert token.returncode == 0 and token.stdout.strip().startswith("sp_")
    _one_line_error(run_cli("create-token", "nobody", env=env), "no user 'nobody'")


def test_help_lists_every_command() -> None:
    result = run_cli("--help", env={})
    assert result.returncode == 0
    for command in (
        "up",
        "web",
        "worker",
        "migrate",
        "create-user",
        "create-token",
        "demo-data",
        "train",
    ):
        assert command in result.stdout


def test_preflight_is_silent_when_all_is_well(sqlite_settings: Settings) -> None:
    preflight.check_all(sqlite_settings)  # raises on any problem
    assert (sqlite_settings.data_dir / "broker.db").exists()
