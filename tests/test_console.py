"""The operator console: its page, its live stream, and the hub listening to every key."""

from __future__ import annotations

import asyncio
import re
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
import redis

from jobs.platform import Event, load_domains
from tests.conftest import REDIS_URL
from tests.support import Api, SseEvent, SseReader, admin_token
from web.app import hub_client
from web.hub import LiveHub
from web.views.console import MAX_FAILED_PER_TICK, Inbox, snapshot_moments
from workers.events import Publisher, deliveries_key


def new_name() -> str:
    return f"c_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def api(stack) -> Api:
    return stack.api


@pytest.fixture(scope="module")
def admin(api: Api, database) -> str:
    """The access token of a user holding the admin role."""
    return admin_token(api, database)


@pytest.fixture
def paused_worker(stack) -> Iterator[None]:
    """No worker runs during the test's first part; the test starts it again."""
    stack.kill("worker", signal.SIGTERM)
    yield
    if "worker" not in stack.procs:
        stack.start_worker(processes=1, threads=8)


def events_url(api: Api, token: str | None = None) -> str:
    query = "" if token is None else f"?access_token={token}"
    return f"{api.base}/api/v1/admin/events{query}"


def next_named(reader: SseReader, name: str, seconds: float = 15) -> SseEvent:
    """The next event called ``name`` (others, such as snapshots, are passed over)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        event = reader.next()
        if event.event == name:
            return event
    raise AssertionError(f"no {name} event within {seconds}s")


# -- the hub ---------------------------------------------------------------------------

def test_a_listener_of_every_key_hears_each_event_of_its_topic():
    prefix = f"bzt-hub-{uuid.uuid4().hex[:8]}"
    load_domains()
    sync = redis.Redis.from_url(REDIS_URL)
    publisher = Publisher(sync, prefix)

    async def scenario() -> tuple[list, list, list]:
        live = hub_client(REDIS_URL)
        hub = LiveHub(live, prefix)
        every, seven, later = [], [], []
        # Given a listener of every key of "job", one of key 7, and one that leaves
        hub.listen("job", "*", every.append)
        hub.listen("job", "7", seven.append)
        stop = hub.listen("job", "*", later.append)
        stop()
        await hub.start()
        await asyncio.wait_for(hub.connected.wait(), 5)
        # When events of keys 7 and 8 and of another topic are published
        publisher.publish([Event("job", {"n": 1}, key="7"), Event("job", {"n": 2}, key="8"),
                           Event("artwork", {"n": 3}, key="7")])
        deadline = time.monotonic() + 5
        while len(every) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # (anything more would have come by now)
        await hub.stop()
        await live.aclose()
        return every, seven, later

    try:
        every, seven, later = asyncio.run(scenario())
    finally:
        sync.close()
    # Then the every-key listener heard both job events, the key-7 one its own only
    assert [e.data["n"] for e in every] == [1, 2]
    assert [e.data["n"] for e in seven] == [1]
    assert later == []


# -- the stream's bookkeeping (no I/O) --------------------------------------------------

def test_many_outcomes_cost_one_jobs_frame_and_a_flood_of_failures_a_resync():
    inbox = Inbox()
    # Given a thousand outcomes in one tick, of which more failed than a tick carries
    for n in range(1000):
        status = "failed" if n % 10 == 0 else "succeeded"
        inbox.deliver(Event("job", {"id": str(n), "status": status}, key="42"))
    # Then a tick sends the failures it can carry, then one resync, and one count
    urgent = inbox.take_urgent()
    assert len(urgent) == MAX_FAILED_PER_TICK + 1
    assert b'"user_id":42' in urgent[0] and urgent[-1].startswith(b"event: resync")
    assert inbox.take_changed() == [b'event: jobs\ndata: {"changed":1000}\n\n']
    assert inbox.take_urgent() == [] and inbox.take_changed() == []
    # ... and a gap in the hub is a resync
    inbox.deliver(None)
    assert inbox.take_urgent() == [b"event: resync\ndata: {}\n\n"]


def test_a_snapshot_changes_when_its_figures_do_not_when_time_passes():
    def snapshot(at: float, depth: int, beat_age: float) -> dict:
        return {"at": at,
                "queues": [{"name": "commands", "depth": depth, "delayed": 0, "dead": 0,
                            "oldest_age_seconds": 3.0 + (at - 1000) if depth else 0.0}],
                "workers": [{"id": "w1", "pid": 1, "host": "h", "queues": ["commands"],
                             "heartbeat_age_seconds": beat_age, "running": []}]}

    first = snapshot_moments(snapshot(1000.0, 2, 0.5))
    # A second later, the same queue and worker, one second older
    assert snapshot_moments(snapshot(1001.0, 2, 1.5)) == first
    # A new message, or a new heartbeat, is a change
    assert snapshot_moments(snapshot(1001.0, 3, 1.5)) != first
    assert snapshot_moments(snapshot(1001.0, 2, 0.1)) != first


# -- the page --------------------------------------------------------------------------

def test_the_console_is_a_page_that_loads_nothing_from_elsewhere(api):
    reply = api.get(f"{api.base}/console?type=points.charge&code=INTERNAL_ERROR&q=x")
    assert reply.status == 200, reply
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    html = reply.body
    assert re.findall(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", html) == []
    assert "http://" not in html and "https://" not in html
    policy = reply.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]+'", policy)
    assert "innerHTML" not in html
    # ... and the landing page now links it
    assert 'href="/console"' in api.get(f"{api.base}/").body


# -- the stream ------------------------------------------------------------------------

def test_the_stream_is_401_without_a_token_and_403_for_a_user(api):
    token = api.signup_login(new_name())
    assert (api.get("/admin/events").status, api.get("/admin/events").code) == (
        401, "UNAUTHORIZED")
    for reply in (api.get("/admin/events", token=token),
                  api.get(events_url(api, token))):
        assert (reply.status, reply.code) == (403, "INVALID_PERMISSION")


def test_an_admin_opens_the_stream_with_the_query_token_and_gets_a_snapshot(api, admin):
    request = urllib.request.Request(events_url(api, admin))
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        head = response.readline() + response.readline()
    assert head.startswith(b"event: snapshot\ndata: {")
    assert b'"queues":[{"name":"commands"' in head and b'"workers":[' in head


def test_a_failed_job_reaches_the_stream_at_once(api, admin, paused_worker, stack, database):
    # Given an admin following the stream, and a charge no worker has picked up
    reader = SseReader(events_url(api), admin)
    try:
        user = api.signup_login(new_name())
        job_id = api.post("/points/charge", {"amount": 5}, token=user).body["id"]
        # ... whose deliveries are spent (as when it keeps killing its worker)
        counts = redis.Redis.from_url(stack.env["REDIS_URL"])
        counts.hset(deliveries_key(stack.env["REDIS_PREFIX"]), job_id, 99)
        counts.close()
        # When a worker starts and takes it
        stack.start_worker(processes=1, threads=8)
        # Then the stream says it failed, with its owner and reason
        failed = next_named(reader, "failed").data
        assert failed["id"] == job_id and failed["status"] == "failed"
        assert failed["error"]["code"] == "INTERNAL_ERROR"
        assert failed["type"] == "points.charge" and failed["user_id"] > 0
        # ... and that jobs changed
        assert next_named(reader, "jobs").data["changed"] >= 1
    finally:
        reader.close()


def test_a_query_token_that_is_not_valid_is_401(api):
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(events_url(api, "not-a-token"), timeout=10)
    assert refused.value.code == 401
