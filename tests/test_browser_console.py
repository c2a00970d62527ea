"""An operator in a real browser: the console against real web, worker and scheduler
processes, updating live while the workers stop and start, and a failed job replayed.

Headless Chromium is Debian's (``make browser`` installs it when missing); Playwright drives
it and downloads nothing. The test is skipped only when that Chromium is absent or cannot
start. It leaves a screenshot of the console in docs/console.png.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
import redis
from playwright.sync_api import Page, expect

from db.models import Job, User
from tests.support import ROOT, Api, Stack
from workers.events import deliveries_key

SCREENSHOT = ROOT / "docs" / "console.png"
PASSWORD = "password123"

pytestmark = pytest.mark.e2e




@pytest.fixture(scope="module")
def processes(process_env) -> Iterator[Stack]:
    """Real web, worker and scheduler processes on the session's database, with a Redis
    key space of their own (no worker heartbeat or queue of an earlier module shows)."""
    prefix = f"{process_env['REDIS_PREFIX']}-console"
    stack = Stack({**process_env, "REDIS_PREFIX": prefix})
    stack.start_worker(processes=1, threads=8)
    stack.start_scheduler()
    stack.start_web()
    yield stack
    stack.stop()


def submit(api: Api, token: str, path: str, body: dict) -> str:
    reply = api.post(path, body, token=token)
    assert reply.status == 202, reply
    return reply.body["id"]


def charge(api: Api, token: str, amount: int) -> str:
    return submit(api, token, "/points/charge", {"amount": amount})


def depth(page: Page, queue: str):
    return page.locator(f'#queues tr[data-queue="{queue}"] td.depth')


def test_an_operator_watches_queues_and_replays_a_failed_job(browser, processes, database):
    api = processes.api
    admin, user, rich = (f"{role}_{uuid.uuid4().hex[:8]}" for role in ("op", "u", "r"))
    for name in (admin, user, rich):
        api.signup_login(name, PASSWORD)
    with database.connection_context():
        User.update(is_admin=True).where(User.username == admin).execute()
    user_token, rich_token = api.login(user)["access_token"], api.login(rich)["access_token"]
    # Given some history: charges that succeeded, and refusals (past the balance cap, an
    # order from an empty cart)
    done = [(charge(api, user_token, 10), user_token) for _ in range(4)]
    done += [(charge(api, rich_token, 1_000_000), rich_token) for _ in range(10)]
    done += [(submit(api, user_token, "/orders", {"from_cart": True}), user_token)]
    for job_id, token in done:
        api.wait_job(job_id, token)
    api.wait_job(charge(api, rich_token, 1), rich_token)

    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    # When the admin logs in on the console
    page.goto(f"{api.base}/console")
    page.fill("#username", admin)
    page.fill("#password", PASSWORD)
    page.get_by_role("button", name="Log in").click()
    # Then the console shows the queues, a worker, the job types, and goes live
    expect(page.locator("#live")).to_have_text("live")
    expect(depth(page, "commands")).to_have_text("0")
    expect(page.locator("#workers .worker")).to_have_count(1)
    expect(page.locator("#stats tbody")).to_contain_text("points.charge")
    expect(page.locator("#failed tbody")).to_contain_text("MAX_BALANCE_EXCEEDED")

    # When the workers stop and commands come in
    processes.terminate("worker")
    expect(page.locator("#workers")).to_contain_text("No worker is running")
    for _ in range(3):
        charge(api, user_token, 1)
    # Then the commands queue's depth rises, with no reload
    expect(depth(page, "commands")).to_have_text("3")
    # Given a charge whose deliveries are spent (as when it keeps killing its worker)
    fault = charge(api, user_token, 7)
    counts = redis.Redis.from_url(processes.env["REDIS_URL"])
    counts.hset(deliveries_key(processes.env["REDIS_PREFIX"]), fault, 99)
    counts.close()
    expect(depth(page, "commands")).to_have_text("4")

    # When a worker starts again
    processes.start_worker(processes=1, threads=8)
    # Then the queue drains, and the failed job appears without a reload
    expect(depth(page, "commands")).to_have_text("0", timeout=20_000)
    row = page.locator(f'#failed tr[data-job="{fault}"]')
    expect(row).to_contain_text("INTERNAL_ERROR")
    expect(row).to_contain_text("gave up after repeated deliveries")
    expect(row).to_contain_text('{"amount":7}')

    # When the operator replays it and confirms
    row.get_by_role("button", name="Replay").click()
    dialog = page.locator("#confirm")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Replay").click()
    # Then the replay is recorded, and the page sees it succeed
    expect(row.locator(".replay-status")).to_have_text("succeeded")
    with database.connection_context():
        replay = Job.get(Job.replay_of == fault)
    assert replay.status == "succeeded"
    # ... and the schedules say which scheduler dispatches them, and when each last ran
    admin_token = api.login(admin, PASSWORD)["access_token"]
    schedules = api.get("/admin/schedules", token=admin_token).body
    assert schedules["active"], schedules
    outbox = next(s for s in schedules["items"] if s["id"] == "outbox.deliver")
    assert outbox["last_run_at"] and outbox["next_due_at"], outbox

    # When the operator filters by reason code, the filter goes into the URL
    page.fill("#f-code", "INTERNAL_ERROR")
    expect(page).to_have_url(re.compile(r"/console\?code=INTERNAL_ERROR$"))
    expect(page.locator("#failed tbody")).not_to_contain_text("MAX_BALANCE_EXCEEDED")
    expect(row).to_be_visible()
    page.get_by_role("button", name="Clear").click()
    expect(page.locator("#failed tbody")).to_contain_text("MAX_BALANCE_EXCEEDED")
    # ... nothing was fetched from anywhere else, and nothing failed
    assert all(url.startswith(api.base) for url in asked), asked
    assert errors == []
    expect(page.locator("#toast")).not_to_have_class(re.compile("show"))
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000
    page.close()


def test_only_an_admin_gets_in_and_a_session_outlives_its_access_token(browser, processes,
                                                                        database):
    api = processes.api
    admin, user = (f"{role}_{uuid.uuid4().hex[:8]}" for role in ("op", "u"))
    for name in (admin, user):
        api.signup_login(name, PASSWORD)
    with database.connection_context():
        User.update(is_admin=True).where(User.username == admin).execute()
    page = browser.new_page()

    def log_in(name: str, password: str = PASSWORD) -> None:
        page.fill("#username", name)
        page.fill("#password", password)
        page.get_by_role("button", name="Log in").click()

    page.goto(f"{api.base}/console?type=points.charge")
    # A wrong password, then a user without the admin role, are refused on the page
    log_in(admin, "wrong-password")
    expect(page.locator("#login-error")).not_to_be_empty()
    log_in(user)
    expect(page.locator("#login-error")).to_have_text("This account does not hold the admin role.")
    # An admin gets in, with the filter the URL gave
    log_in(admin)
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator("#f-type")).to_have_value("points.charge")
    # When the access token no longer works, the refresh cookie renews it
    page.evaluate("sessionStorage.setItem('bazaar.console.token', 'expired')")
    page.reload()
    expect(page.locator("#live")).to_have_text("live")
    assert page.evaluate("sessionStorage.getItem('bazaar.console.token')") != "expired"
    # ... and logging out ends it
    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#login")).to_be_visible()
    page.reload()
    expect(page.locator("#login")).to_be_visible()
    page.close()
