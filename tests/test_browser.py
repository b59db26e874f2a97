"""The Jobs pages in a real browser: sign in, ping both workers, watch jobs finish live.

One `sporeprint up` (single-machine mode) serves the whole module; Chromium is Debian's own,
driven by Playwright. A full-page screenshot of the Jobs page lands in test-artifacts/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import browsing
import pytest
from browsing import ARTIFACTS, open_page
from playwright.sync_api import Browser, Page, expect
from upstack import UpStack

pytestmark = pytest.mark.browser

PASSWORD = "browser-test-horse-battery"
JOB_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpStack]:
    base = tmp_path_factory.mktemp("browser")
    up = UpStack(base / "data", base, extra_env={"SPOREPRINT_ADMIN_PASSWORD": PASSWORD})
    try:
        up.start()
        # A configured admin password is used as given and never echoed.
        assert up.admin_credentials() == [], up.stderr()
        assert PASSWORD not in up.stderr() + up.stdout()
        yield up
    finally:
        up.close()
    assert up.survivors() == [], "processes of `sporeprint up` survived the tests"


@pytest.fixture
def page(browser: Browser, stack: UpStack, js_errors: list[str]) -> Iterator[Page]:
    with open_page(browser, stack.url, js_errors) as page:
        yield page


def sign_in(page: Page) -> None:
    browsing.sign_in(page, "admin", "/jobs", password=PASSWORD)
    expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()


def row_ids(page: Page) -> list[str]:
    return page.locator('#job-rows tr[id^="job-"]').evaluate_all("rows => rows.map(r => r.id)")


def test_ping_workers_updates_the_jobs_table_live(page: Page, js_errors: list[str]):
    sign_in(page)
    before = row_ids(page)
    page.evaluate("window.__marker = 1")

    page.locator("#ping-button").click()
    # htmx swaps the new rows in; two of them, one per queue.
    new_ids = page.wait_for_function(
        """(before) => {
            const ids = [...document.querySelectorAll('#job-rows tr[id^="job-"]')]
                .map(r => r.id).filter(id => !before.includes(id));
            return ids.length >= 2 ? ids : null;
        }""",
        arg=before,
    ).json_value()
    assert len(new_ids) == 2, new_ids

    # Server-Sent Events carry them to the end; nothing reloads the page.
    for row_id in new_ids:
        row = page.locator(f"#{row_id}")
        expect(row).to_have_attribute("data-status", "succeeded", timeout=JOB_TIMEOUT_MS)
        expect(row.locator("[data-testid=status]")).to_have_text("succeeded")
    succeeded = page.locator('#job-rows tr[data-status="succeeded"]')
    expect(succeeded).to_have_count(len(before) + 2)
    assert page.evaluate("window.__marker") == 1, "the Jobs page reloaded"
    expect(page).to_have_url(re.compile(r"/jobs$"))
    queues = sorted(page.locator(f"#{i} td:nth-child(3)").inner_text() for i in new_ids)
    assert queues == ["gpu", "io"]
    expect(page.locator("#ping-button")).to_be_enabled()

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "jobs.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # One job's own page tells the same story.
    job_id = new_ids[0].removeprefix("job-")
    page.locator(f"#{new_ids[0]} td.num a").click()
    expect(page).to_have_url(re.compile(rf"/jobs/{job_id}$"))
    expect(page.locator("#job-status [data-testid=status]")).to_have_text("succeeded")
    expect(page.locator("#job-log")).to_contain_text("hello from")
    expect(page.locator("#job-log")).to_contain_text("succeeded")
    assert js_errors == []


def test_job_page_follows_a_running_job(page: Page, js_errors: list[str]):
    sign_in(page)
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert token
    created = page.request.post(
        "/api/jobs",
        data={"kind": "ping", "queue": "io", "params": {"seconds": 4, "steps": 8}},
        headers={"X-CSRF-Token": token},
    )
    assert created.status == 201, created.text()
    job_id = created.json()["id"]

    response = page.goto(f"/jobs/{job_id}")
    assert response is not None and response.ok
    initial = re.search(r'class="job-status" data-status="(\w+)"', response.text())
    assert initial and initial.group(1) in ("queued", "running"), initial
    # Record every state the status card shows from now on.
    page.evaluate(
        """() => {
            window.__marker = 2;
            window.__seen = [];
            const card = document.querySelector('#job-status');
            const record = () => {
                const box = card.querySelector('.job-status');
                const bar = card.querySelector('[role=progressbar]');
                window.__seen.push([box && box.dataset.status,
                                    bar && bar.getAttribute('aria-valuenow')]);
            };
            record();
            new MutationObserver(record).observe(card, {childList: true, subtree: true});
        }"""
    )

    status = page.locator("#job-status .job-status")
    expect(status).to_have_attribute("data-status", "succeeded", timeout=JOB_TIMEOUT_MS)
    expect(page.locator("#job-status [data-testid=status]")).to_have_text("succeeded")
    bar = page.locator("#job-status [role=progressbar]")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    fill = bar.evaluate(
        "el => el.querySelector('.progress-bar').getBoundingClientRect().width"
        " / el.getBoundingClientRect().width"
    )
    assert fill == pytest.approx(1.0, abs=0.02), f"the progress bar is drawn {fill:.0%} full"
    expect(page.locator("#job-log")).to_contain_text("hello from")
    expect(page.locator("#job-log")).to_contain_text("succeeded")
    assert page.evaluate("window.__marker") == 2, "the job page reloaded"

    seen = page.evaluate("window.__seen")
    statuses = [state for state, _ in seen]
    assert "running" in statuses, seen
    partial = [int(v) for state, v in seen if state == "running" and v and 0 < int(v) < 100]
    assert partial, f"no intermediate progress was shown live: {seen}"
    assert js_errors == []
