"""The `sporeprint` command line."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from app.config import Settings, get_settings
from app.db import session_scope
from app.models import Role
from app.services import auth, migrations, preflight
from app.services.preflight import StartupError

cli = typer.Typer(
    name="sporeprint",
    help="Sporeprint: curate wild photos, train image classifiers on GPUs, export them for phones.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# soft_wrap: an error stays on one line, whatever the terminal width.
console = Console(stderr=True, soft_wrap=True)

STARTUP_TIMEOUT_S = 60
STOP_GRACE_S = 10


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@contextmanager
def _startup_errors() -> Iterator[None]:
    """Turn configuration problems into one line and a non-zero exit."""
    try:
        yield
    except StartupError as exc:
        raise _fail(str(exc)) from None


def _settings() -> Settings:
    try:
        return get_settings()
    except Exception as exc:  # pydantic's message names the bad variable
        raise _fail(f"invalid configuration: {exc}".replace("\n", " ")) from None


def _ensure_admin(settings: Settings) -> None:
    try:
        with session_scope(settings.db_url) as session:
            password = auth.ensure_admin(session, settings.admin_password)
    except auth.AuthError as exc:
        raise _fail(f"SPOREPRINT_ADMIN_PASSWORD cannot be used: {exc}") from None
    if password:
        console.print(
            "[bold]Created the first user[/]: username [cyan]admin[/], password "
            f"[cyan]{password}[/]  (shown once; keep it somewhere safe)",
            highlight=False,
        )


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@cli.command()
def migrate(
    revision: Annotated[
        str, typer.Option(help="Target revision ('head', or one to go back to).")
    ] = ("head"),
) -> None:
    """Bring the database schema up to date (or to REVISION)."""
    settings = _settings()
    with _startup_errors():
        preflight.check_data_dir(settings)
        preflight.check_database(settings)
    current = migrations.current_revision(settings.db_url)
    head = migrations.head_revision(settings.db_url)
    if revision == "head" or revision == head:
        migrations.upgrade(settings.db_url, revision)
    else:
        migrations.downgrade(settings.db_url, revision)
    console.print(f"schema: {current or 'empty'} → {migrations.current_revision(settings.db_url)}")


@cli.command()
def web(
    host: Annotated[str | None, typer.Option(help="Bind address (default from settings).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
) -> None:
    """Run the web server alone (server mode; run `sporeprint migrate` first)."""
    import uvicorn

    settings = _settings()
    with _startup_errors():
        preflight.check_all(settings, schema=True)
    _ensure_admin(settings)
    _logging()
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        proxy_headers=True,
        log_level="info",
    )


@cli.command()
def worker(
    queues: Annotated[
        str, typer.Option(help="Comma-separated queues to consume: io, gpu or both.")
    ] = "io,gpu",
    concurrency: Annotated[
        int | None, typer.Option(help="Parallel tasks (default: 1 for gpu, 2 for io).", min=1)
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Worker name (default: <queues>@<hostname>).")
    ] = None,
) -> None:
    """Run a Celery worker (it also consumes its host's control queue)."""
    from app.services.jobs import QUEUES

    settings = _settings()
    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(wanted) - set(QUEUES))
    if not wanted or unknown:
        raise _fail(f"unknown queue(s) {', '.join(unknown) or '(none)'}; choose from {QUEUES}")
    with _startup_errors():
        preflight.check_all(settings, schema=True)

    from app.services.jobs import control_queue
    from workers.celery_app import app as celery
    from workers.celery_app import uses_sqlite_broker

    gpu = "gpu" in wanted
    argv = [
        "worker",
        "--queues", ",".join([*wanted, control_queue()]),
        "--hostname", name or f"{'-'.join(wanted)}@%h",
        "--concurrency", str(concurrency or (1 if gpu else 2)),
        "--loglevel", "INFO",
    ]  # fmt: skip
    if gpu:
        # A fresh child per GPU job, so TensorFlow always hands its memory back.
        argv += ["--max-tasks-per-child", "1"]
    if uses_sqlite_broker(settings):
        # The SQL transport has no broadcast; our own heartbeats cover liveness.
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    celery.worker_main(argv)


class _Child:
    """A child process whose output is relayed line by line with a name prefix."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.process = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            bufsize=1, start_new_session=True,  # our signal handler decides when it stops
        )  # fmt: skip
        self.tail: list[str] = []
        threading.Thread(target=self._relay, daemon=True).start()

    def _relay(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.tail = [*self.tail[-19:], line.rstrip()]
            sys.stdout.write(f"{self.name:>10} | {line}")
            sys.stdout.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)


def _wait_healthy(url: str, children: list[_Child]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        for child in children:
            if child.process.poll() is not None:
                raise StartupError(f"{child.name} exited with code {child.process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise StartupError(f"the web server did not answer at {url} within {STARTUP_TIMEOUT_S} s")


def _stop_all(children: list[_Child]) -> None:
    for child in children:
        child.stop()
    deadline = time.monotonic() + STOP_GRACE_S
    for child in children:
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            console.print(f"{child.name} did not stop within {STOP_GRACE_S} s; killing it")
            child.kill()
            child.process.wait()


@cli.command()
def up(
    host: Annotated[str | None, typer.Option(help="Bind address (default from settings).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
) -> None:
    """Start everything on this machine: web, an io worker and a gpu worker.

    With nothing configured it keeps all its state in ./data (SQLite). Ctrl-C stops it all.
    """
    settings = _settings()
    with _startup_errors():
        preflight.check_all(settings)
        migrations.upgrade(settings.db_url)
    _ensure_admin(settings)
    host, port = host or settings.host, port or settings.port
    env = {**os.environ, "SPOREPRINT_DATA_DIR": str(settings.data_dir), "PYTHONUNBUFFERED": "1"}
    me = [sys.executable, "-m", "app.cli"]
    children = [
        _Child("web", [*me, "web", "--host", host, "--port", str(port)], env),
        _Child("worker-io", [*me, "worker", "--queues", "io"], env),
        _Child("worker-gpu", [*me, "worker", "--queues", "gpu"], env),
    ]
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    try:
        _wait_healthy(url, children)
    except StartupError as exc:
        _stop_all(children)
        raise _fail(str(exc)) from None
    mode = "single-machine (SQLite)" if settings.single_machine else "server"
    console.print(
        f"[bold green]Sporeprint is running[/] at [link={url}]{url}[/]  ({mode} mode, data in "
        f"{settings.data_dir}); press Ctrl-C to stop",
        highlight=False,
    )
    exit_code = 0
    while not stopping.wait(0.5):
        dead = [c for c in children if c.process.poll() is not None]
        if dead:
            console.print(f"[red]{dead[0].name} stopped unexpectedly; stopping the rest[/]")
            exit_code = 1
            break
    console.print("stopping…")
    _stop_all(children)
    console.print("stopped")
    raise typer.Exit(exit_code)


@cli.command("create-user")
def create_user(
    username: str,
    role: Annotated[Role, typer.Option(help="What the user may do.")] = Role.curator,
    password: Annotated[
        str | None, typer.Option(help="Password (asked for when not given).", show_default=False)
    ] = None,
) -> None:
    """Add a user who signs in with a password."""
    settings = _settings()
    with _startup_errors():
        preflight.check_database(settings)
        preflight.check_schema(settings)
    password = password or typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        with session_scope(settings.db_url) as session:
            auth.create_user(session, username, password, role)
    except auth.AuthError as exc:
        raise _fail(str(exc)) from None
    console.print(f"created {role} user {username!r}")


@cli.command("create-token")
def create_token(
    username: str,
    name: Annotated[str, typer.Option(help="What the token is for.")] = "cli",
) -> None:
    """Make an API token for USERNAME; it is printed once, on standard output."""
    from sqlmodel import select

    from app.models import User

    settings = _settings()
    with _startup_errors():
        preflight.check_database(settings)
        preflight.check_schema(settings)
    with session_scope(settings.db_url) as session:
        user = session.exec(select(User).where(User.username == username)).first()
        if user is None:
            raise _fail(f"there is no user {username!r}")
        try:
            token, _ = auth.create_api_token(session, user, name)
        except auth.AuthError as exc:
            raise _fail(str(exc)) from None
    print(token)


@cli.command("demo-data")
def demo_data(
    directory: Annotated[Path, typer.Argument(help="Folder to write (new, or a previous demo).")],
    per_species: Annotated[int, typer.Option(help="Photos per species.", min=1)] = 60,
    species: Annotated[
        int | None, typer.Option(help="How many species (default: all).", min=1)
    ] = None,
    anomalies: Annotated[float, typer.Option(help="Share of planted bad photos.")] = 0.04,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 256,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = 0,
) -> None:
    """Write a synthetic mushroom dataset (species/image.jpg) with planted anomalies."""
    from app.services.demo_data import generate_demo_dataset

    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), console=console,
    ) as progress:  # fmt: skip
        task = progress.add_task("drawing photos", total=None)
        try:
            manifest = generate_demo_dataset(
                directory, per_species=per_species, species_count=species,
                anomaly_fraction=anomalies, image_size=size, seed=seed,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )  # fmt: skip
        except (ValueError, FileExistsError, OSError) as exc:
            raise _fail(str(exc)) from None
    console.print(
        f"wrote {len(manifest.images)} photos of {len(manifest.species)} species "
        f"({len(manifest.anomalies)} planted anomalies) to {directory}; "
        f"manifest: {directory / 'manifest.csv'}"
    )


def _add_subcommands() -> None:
    from app.cli_curate import curate
    from app.cli_inat import inat
    from app.cli_models import export, predict
    from app.cli_train import train

    cli.add_typer(inat, name="inat")
    cli.command("curate")(curate)
    cli.command("export")(export)
    cli.command("predict")(predict)
    cli.command("train")(train)


_add_subcommands()


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
