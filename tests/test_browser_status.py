"""Browser: the status page shows a (fake) GPU and the process holding it, live."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable

import pytest
from browsing import live_app, open_page, shot, sign_in
from fakegpu import FakeGpu
from playwright.sync_api import Browser, expect
from support import PASSWORD

from app.config import Settings
from app.db import session_scope
from app.main import create_app
from app.models import Role
from app.services import auth, migrations

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def test_status_page_follows_a_gpu_process_until_an_admin_ends_it(
    pg_settings: Settings,
    fake_gpu: FakeGpu,
    sleeper: subprocess.Popen,
    start_worker: Callable,
    browser: Browser,
    js_errors: list[str],
) -> None:
    settings = pg_settings.model_copy(
        update={"gpu_provider": "nvidia-smi", "end_process_grace": 2.0}
    )
    migrations.upgrade(settings.db_url)
    with session_scope(settings.db_url) as session:
        auth.create_user(session, "root", PASSWORD, Role.admin)
    fake_gpu.hold(sleeper.pid, name="python3", memory_mb=2048)
    threading.Thread(target=sleeper.wait, daemon=True).start()
    start_worker(settings, "gpu", name="gpu@browser")

    with live_app(create_app(settings)) as url, open_page(browser, url, js_errors) as page:
        sign_in(page, "root", "/status")
        card = page.locator(".gpu-card").first
        expect(card).to_contain_text("NVIDIA H100 80GB HBM3")
        expect(card).to_contain_text("4321 / 81559 MiB")
        row = page.locator(f'tr[data-pid="{sleeper.pid}"]')
        expect(row).to_contain_text("2048 MiB")
        expect(row).to_contain_text("none")  # no job owns it
        shot(page, "status.png")

        page.once("dialog", lambda dialog: dialog.accept())
        row.get_by_role("button", name="End").click()
        # The worker ends it, its next heartbeat drops it, and the page follows without reload.
        expect(page.locator(f'tr[data-pid="{sleeper.pid}"]')).to_have_count(0, timeout=30_000)
        expect(page.locator("td.outcome").first).to_contain_text(
            f"ended pid {sleeper.pid} (python3, 2048 MiB) with SIGTERM", timeout=30_000
        )
    assert sleeper.poll() is not None
    assert js_errors == []
