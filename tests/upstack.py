"""Run `sporeprint up` (web + io worker + gpu worker) as a real process tree for e2e tests.

`up` is started in a session of its own, exactly as a person would run it, with only
`SPOREPRINT_DATA_DIR` configured (plus whatever `extra_env` adds). Its children start their own
sessions too, so cleanup cannot rely on one process group: every process of the stack is also
found through /proc by the data directory in its environment, and killed on `close()`.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
CONFIG_VARS = ("DATABASE_URL", "CELERY_BROKER_URL")
# Rich writes plain text when not on a terminal, but be ready for colours and hyperlinks.
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
ADMIN_LINE = re.compile(
    r"Created the first user\W+username\s+([^\s,]+),?\s+password\s+(\S+)", re.IGNORECASE
)
QUEUES = ("io", "gpu")
RUNNING_LINE = re.compile(r"Sporeprint is running\s+at\s+(http://\S+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The test runner's environment minus every Sporeprint setting, plus the data directory."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SPOREPRINT_") and k not in CONFIG_VARS
    }
    env.update(SPOREPRINT_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", **extra)
    return env


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


# --- /proc --------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, starttime) of a process, or None when it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = data[data.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _environ_has(pid: int, entry: bytes) -> bool:
    try:
        return entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def is_alive(pid: int, starttime: int | None = None) -> bool:
    """Running (not a zombie) and, when `starttime` is given, still the same process."""
    stat = _stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return starttime is None or stat[3] == starttime


def living_in_group(pgid: int) -> list[int]:
    """Non-zombie members of process group `pgid`."""
    members = []
    for pid in _all_pids():
        stat = _stat(pid)
        if stat and stat[2] == pgid and stat[0] not in ("Z", "X"):
            members.append(pid)
    return members


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


# --- the stack -----------------------------------------------------------------------------------


class UpStack:
    """One `sporeprint up` process and everything it starts."""

    def __init__(
        self,
        data_dir: Path,
        log_dir: Path,
        *,
        port: int | None = None,
        extra_env: dict[str, str] | None = None,
        name: str = "up",
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = extra_env or {}
        log_dir.mkdir(parents=True, exist_ok=True)
        # Runs outside the checkout, so a developer's .env there cannot configure it.
        self.cwd = log_dir / f"{name}-cwd"
        self.cwd.mkdir(exist_ok=True)
        self.stdout_path = log_dir / f"{name}.stdout.log"
        self.stderr_path = log_dir / f"{name}.stderr.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.seen: dict[int, int] = {}  # pid -> starttime of every process seen in the tree
        self.children: list[int] = []  # up's direct children (session leaders)

    # -- life cycle --

    def start(self, timeout: float = 90) -> UpStack:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "up", "--port", str(self.port)],
                cwd=self.cwd, env=clean_env(self.data_dir, **self.extra_env),
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        self._wait(lambda: RUNNING_LINE.search(self.stderr()), deadline, "say it is running")
        self.snapshot()
        # `up` says "running" once the web server answers; the workers may still be booting.
        # Wait for both, so that a worker dying at start-up fails here, with its output.
        self._wait(
            lambda: all(re.search(rf"\b{q}@\S+ ready\.", self.stdout()) for q in QUEUES),
            deadline,
            "report both workers ready",
        )
        self.snapshot()
        return self

    def _wait(self, probe: Callable[[], object], deadline: float, what: str) -> None:
        assert self.process is not None
        while not probe():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"`sporeprint up` exited with code {self.process.returncode} before it would "
                    f"{what}\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"`sporeprint up` did not {what} in time\n{self.tail()}")
            time.sleep(0.2)

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def interrupt(self, timeout: float = 30) -> int:
        """Ctrl-C: SIGINT to up's process group, then wait for it to exit; its exit code."""
        self.snapshot()
        os.killpg(self.pid, signal.SIGINT)
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"`sporeprint up` still running {timeout} s after SIGINT\n{self.tail()}"
            ) from None

    def close(self) -> None:
        """Stop whatever is left, however it got there; never raises for a process already gone."""
        if self.process is not None and self.process.poll() is None:
            self.snapshot()
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        mine = os.getpgrp()
        for pid in self.survivors():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                group = os.getpgid(pid)
                if group != mine:
                    os.killpg(group, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.survivors() and time.monotonic() < deadline:
            time.sleep(0.1)

    # -- processes --

    def snapshot(self) -> None:
        """Remember every process now in up's tree (children re-parent to init once up is gone)."""
        if self.process is None or self.process.poll() is not None:
            return
        parents: dict[int, list[int]] = {}
        stats = {}
        for pid in _all_pids():
            stat = _stat(pid)
            if stat:
                stats[pid] = stat
                parents.setdefault(stat[1], []).append(pid)
        todo = [self.pid]
        while todo:
            pid = todo.pop()
            for child in parents.get(pid, []):
                self.seen[child] = stats[child][3]
                if pid == self.pid and child not in self.children:
                    self.children.append(child)
                todo.append(child)

    def survivors(self) -> list[int]:
        """Living processes of this stack: ones seen in its tree, or with its data dir in env."""
        found = {pid for pid, start in self.seen.items() if is_alive(pid, start)}
        marker = f"SPOREPRINT_DATA_DIR={self.data_dir}".encode()
        me = os.getpid()
        for pid in _all_pids():
            if pid != me and pid not in found and is_alive(pid) and _environ_has(pid, marker):
                found.add(pid)
        return sorted(found)

    # -- output --

    def stderr(self) -> str:
        return strip_ansi(self.stderr_path.read_text(errors="replace"))

    def stdout(self) -> str:
        return strip_ansi(self.stdout_path.read_text(errors="replace"))

    def admin_credentials(self) -> list[tuple[str, str]]:
        """Every (username, password) pair `up` announced on stderr."""
        return ADMIN_LINE.findall(self.stderr())

    def tail(self, lines: int = 40) -> str:
        out = "\n".join(self.stdout().splitlines()[-lines:])
        return f"--- up stderr ---\n{self.stderr()}\n--- up stdout (last {lines} lines) ---\n{out}"

    # -- HTTP --

    def client(self) -> httpx.Client:
        """A real-TCP client with its own cookie jar; redirects are left to the test."""
        return httpx.Client(base_url=self.url, follow_redirects=False, timeout=10)


def meta_csrf(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert match, "page has no csrf-token meta tag"
    return match.group(1)


def login(client: httpx.Client, username: str, password: str) -> str:
    """Sign in through the login form; the signed-in session's CSRF token."""
    page = client.get("/login")
    assert page.status_code == 200, page.text
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, "login form has no csrf_token field"
    response = client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": match.group(1)},
    )
    assert response.status_code == 303, (response.status_code, response.text[:500])
    assert response.headers["location"] == "/jobs"
    jobs = client.get("/jobs")
    assert jobs.status_code == 200, jobs.status_code
    return meta_csrf(jobs.text)
