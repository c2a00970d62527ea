"""``/metrics`` read with prometheus-client's own parser; queue figures on the real broker.

Binding contract: the issue "Operator console" (item 1) and API.md, section "Operations".
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
from collections.abc import Iterator

import dramatiq
import pytest
import redis.asyncio as aioredis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from prometheus_client.parser import text_string_to_metric_families

from tests.inprocess import InProcessStack
from web.metrics import queue_families
from workers.broker import COMMANDS_QUEUE, QUEUES, SWEEPS_QUEUE, dramatiq_namespace, queue_view
from workers.events import last_finish_key

STALL = 1.0  # seconds: the stall threshold of this module's stack


@pytest.fixture(scope="module")
def stack(process_env: dict[str, str]) -> Iterator[InProcessStack]:
    """The in-process stack with a short stall threshold and heartbeat interval."""
    s = InProcessStack(process_env | {"STALL_SECONDS": str(STALL), "HEARTBEAT_INTERVAL": "0.2"})
    s.start_worker(processes=1, threads=4)
    s.start_web()
    yield s
    s.stop()


@pytest.fixture
def api(stack):
    return stack.api


@pytest.fixture
def token(api):
    return api.signup_login(f"m_{uuid.uuid4().hex[:10]}")


def scrape(stack) -> dict[str, dict[tuple, float]]:
    """``/metrics`` as ``{sample name: {sorted label items: value}}``, parsed by
    prometheus-client (which fails on malformed text)."""
    reply = stack.api.get(f"http://127.0.0.1:{stack.port}/metrics")
    assert reply.status == 200, reply
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(reply.body):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    """One sample's value (0 when absent)."""
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def charge(api, token: str, amount: int) -> dict:
    reply = api.post("/points/charge", {"amount": amount}, token=token)
    assert reply.status == 202, reply
    return api.wait_job(reply.body["id"], token)


def test_metrics_count_requests_outcomes_latency_queues_and_workers(stack, api, token):
    # Given the figures before, then jobs that succeed and one that fails
    before, started = scrape(stack), time.time()
    for _ in range(10):
        assert charge(api, token, 1_000_000)["status"] == "succeeded"
    assert charge(api, token, 1)["status"] == "failed"  # past the balance cap
    api.get(f"http://127.0.0.1:{stack.port}/healthz")
    # When scraping (outcomes are counted in batches: the last can be a moment behind its job)
    kind = {"type": "points.charge"}
    deadline = time.monotonic() + 5
    while True:
        after = scrape(stack)
        counted = (value(after, "bazaar_jobs_total", outcome="failed", **kind)
                   - value(before, "bazaar_jobs_total", outcome="failed", **kind))
        if counted or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    # Then jobs are counted by type and outcome
    for outcome, n in (("succeeded", 10), ("failed", 1)):
        delta = (value(after, "bazaar_jobs_total", outcome=outcome, **kind)
                 - value(before, "bazaar_jobs_total", outcome=outcome, **kind))
        assert delta == n, (outcome, delta)
    # ... their submit-to-terminal latency is a histogram with cumulative buckets
    count = value(after, "bazaar_job_latency_seconds_count", **kind)
    assert count - value(before, "bazaar_job_latency_seconds_count", **kind) == 11
    assert value(after, "bazaar_job_latency_seconds_bucket", le="+Inf", **kind) == count
    buckets = [v for labels, v in after["bazaar_job_latency_seconds_bucket"].items()
               if dict(labels)["type"] == "points.charge"]
    assert buckets == sorted(buckets) and value(after, "bazaar_job_latency_seconds_sum",
                                                **kind) > 0
    # ... the workers noted when a job last finished (what the stall flag weighs)
    last = stack.client.get(last_finish_key(stack.settings.redis_prefix))
    assert started < float(last) <= time.time()
    # ... HTTP requests by method, route and status, and their latency by route
    assert value(after, "bazaar_http_requests_total", method="GET", route="/healthz",
                 status="200") >= 1
    assert value(after, "bazaar_http_request_duration_seconds_count", route="/healthz") >= 1
    # ... every queue has its depth, delayed and dead messages, oldest age and stall flag
    for queue in QUEUES:
        for name in ("bazaar_queue_depth", "bazaar_queue_delayed", "bazaar_dead_letters",
                     "bazaar_queue_oldest_ready_age_seconds", "bazaar_queue_stalled"):
            assert (("queue", queue),) in after[name], (name, queue)
        assert value(after, "bazaar_queue_stalled", queue=queue) == 0
    # ... and the in-process worker beats
    assert after["bazaar_workers"][()] >= 1
    ours = [dict(labels)["worker"] for labels in after["bazaar_worker_heartbeat_age_seconds"]
            if dict(labels)["worker"].split(":")[1] == str(os.getpid())]
    assert len(ours) == 1
    assert value(after, "bazaar_worker_heartbeat_age_seconds", worker=ours[0]) < 2


def test_a_queue_is_stalled_while_its_oldest_message_waits_and_nothing_finishes(stack, api,
                                                                               token):
    # Given no worker, and a command waiting on the queue for longer than the threshold
    stack.kill("worker")
    try:
        reply = api.post("/points/charge", {"amount": 1}, token=token)
        assert reply.status == 202, reply
        time.sleep(STALL + 0.3)
        # When scraping
        stuck = scrape(stack)
    finally:
        stack.start_worker(processes=1, threads=4)
    # Then that queue is stalled, and only that one; its oldest message is that old
    assert value(stuck, "bazaar_queue_stalled", queue=COMMANDS_QUEUE) == 1
    assert value(stuck, "bazaar_queue_stalled", queue=SWEEPS_QUEUE) == 0
    assert value(stuck, "bazaar_queue_depth", queue=COMMANDS_QUEUE) == 1
    assert value(stuck, "bazaar_queue_oldest_ready_age_seconds", queue=COMMANDS_QUEUE) > STALL
    assert not any(dict(labels)["worker"].split(":")[1] == str(os.getpid())
                   for labels in stuck.get("bazaar_worker_heartbeat_age_seconds", {}))
    # ... and once a worker runs the job, it is not
    assert api.wait_job(reply.body["id"], token)["status"] == "succeeded"
    drained = scrape(stack)
    assert value(drained, "bazaar_queue_stalled", queue=COMMANDS_QUEUE) == 0
    assert value(drained, "bazaar_queue_depth", queue=COMMANDS_QUEUE) == 0


def message(queue: str, sent: float) -> dramatiq.Message:
    return dramatiq.Message(queue_name=queue, actor_name="noop", args=(), kwargs={},
                            options={}, message_timestamp=int(sent * 1000))


@pytest.fixture
def own_settings(settings):
    """The session's settings with a key space of this test's own (under the session's)."""
    prefix = f"{settings.redis_prefix}-{uuid.uuid4().hex[:6]}"
    return dataclasses.replace(settings, redis_prefix=prefix)


def test_queue_view_on_redis_ages_the_oldest_ready_message_and_leaves_out_delayed_ones(
        own_settings):
    # Given a Redis broker with two ready messages and a much older delayed one
    broker = RedisBroker(url=own_settings.redis_url,
                         namespace=dramatiq_namespace(own_settings))
    for queue in QUEUES:
        broker.declare_queue(queue)
    now = time.time()
    broker.enqueue(message(COMMANDS_QUEUE, now - 100), delay=60_000)
    broker.enqueue(message(COMMANDS_QUEUE, now - 5))
    broker.enqueue(message(COMMANDS_QUEUE, now - 1))

    async def view(at: float) -> list[dict]:
        client = aioredis.Redis.from_url(own_settings.redis_url)
        try:
            return await queue_view(broker, client, own_settings, at)
        finally:
            await client.aclose()

    # When viewing the queues
    rows = asyncio.run(view(now))
    # Then depth counts the ready messages, the oldest is aged, the delayed one is apart
    assert rows == [
        {"name": COMMANDS_QUEUE, "depth": 2, "oldest_age_seconds": pytest.approx(5, abs=0.01),
         "delayed": 1, "dead": 0},
        {"name": SWEEPS_QUEUE, "depth": 0, "oldest_age_seconds": 0.0, "delayed": 0, "dead": 0},
    ]
    # ... and the stall flag follows the threshold and the last finish
    later = now + 40  # the oldest ready message is 45 s old
    rows = asyncio.run(view(later))

    def stall_flags(last_finish: float | None) -> dict[str, float]:
        [family] = [f for f in queue_families(rows, last_finish, later, 30)
                    if f.name == "bazaar_queue_stalled"]
        return {s.labels["queue"]: s.value for s in family.samples}

    assert stall_flags(None) == {COMMANDS_QUEUE: 1, SWEEPS_QUEUE: 0}
    assert stall_flags(later - 31) == {COMMANDS_QUEUE: 1, SWEEPS_QUEUE: 0}
    assert stall_flags(later - 10) == {COMMANDS_QUEUE: 0, SWEEPS_QUEUE: 0}
    broker.close()


def test_queue_view_reads_the_in_process_stub_broker(own_settings):
    # Given the stub broker with one ready and one delayed message
    broker = StubBroker()
    for queue in QUEUES:
        broker.declare_queue(queue)
    now = time.time()
    broker.enqueue(message(SWEEPS_QUEUE, now - 3))
    broker.enqueue(message(SWEEPS_QUEUE, now - 50), delay=60_000)
    # When viewing the queues
    rows = asyncio.run(queue_view(broker, None, own_settings, now))
    # Then the ready one is counted and aged, the delayed one only counted
    assert rows[1] == {"name": SWEEPS_QUEUE, "depth": 1,
                       "oldest_age_seconds": pytest.approx(3, abs=0.01), "delayed": 1,
                       "dead": 0}
    assert rows[0]["depth"] == 0 and rows[0]["oldest_age_seconds"] == 0.0


def test_http_metrics_count_each_series_and_fill_each_latency_bucket_once() -> None:
    from web.metrics import HTTP_BUCKETS, HttpMetrics, exposition

    http = HttpMetrics()
    for seconds in (0.0004, 0.001, 0.003, 0.003, 20.0):  # (0.001: on a bound, within it)
        http.observe("GET", "/queue/tokens/me", 200, seconds)
    http.observe("GET", "/queue/tokens/me", 410, 0.002)
    http.observe("BREW", "/queue/tokens/me", 405, 0.0001)
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(exposition(http, []).decode()):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    route = "/queue/tokens/me"
    assert value(samples, "bazaar_http_requests_total", method="GET", route=route,
                 status="200") == 5
    assert value(samples, "bazaar_http_requests_total", method="GET", route=route,
                 status="410") == 1
    assert value(samples, "bazaar_http_requests_total", method="OTHER", route=route,
                 status="405") == 1
    buckets = {le: value(samples, "bazaar_http_request_duration_seconds_bucket",
                         route=route, le=le)
               for le in [*(str(b) for b in HTTP_BUCKETS), "+Inf"]}
    assert buckets["0.001"] == 3  # 0.0001, 0.0004 and 0.001
    assert buckets["0.0025"] == 4 and buckets["0.005"] == 6
    assert buckets["10.0"] == 6 and buckets["+Inf"] == 7
    assert value(samples, "bazaar_http_request_duration_seconds_count", route=route) == 7
    assert value(samples, "bazaar_http_request_duration_seconds_sum",
                 route=route) == pytest.approx(20.0095)
