"""The operator console's JSON: ``/admin/...`` (admin only), replays of faults, once."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from db.models import Job, OutboxEvent
from jobs.clock import utcnow
from jobs.platform import REGISTRY
from tests.support import admin_token, run_together
from tests.test_api_users import new_name

# Fixed, so that every test process collects the same test ids.
UNKNOWN_JOB = "5f0e4c1a-7d2b-4e8f-9a61-3c2d1b0a9e87"
READS = ["/admin/queues", "/admin/stats", "/admin/jobs", "/admin/outbox", "/admin/workers",
         "/admin/schedules"]
WRITES = [f"/admin/jobs/{UNKNOWN_JOB}/replay", "/admin/jobs/replay", "/admin/outbox/1/replay"]


@pytest.fixture
def api(stack):
    return stack.api


@pytest.fixture(scope="module")
def admin(stack, database) -> str:
    """The access token of a user holding the admin role."""
    return admin_token(stack.api, database)


@pytest.fixture
def user(api) -> str:
    return api.signup_login(new_name())


class Fault:
    """Make ``points.charge`` crash (an internal fault) for the users in ``victims``."""

    def __init__(self) -> None:
        self.victims: set[int] = set()
        self.command = REGISTRY.commands["points.charge"]

    def __enter__(self) -> Fault:
        real = self.command.handler

        def handler(ctx, payload):
            if ctx.user_id in self.victims:
                raise RuntimeError("the disk is on fire")
            return real(ctx, payload)

        REGISTRY.commands["points.charge"] = dataclasses.replace(self.command, handler=handler)
        return self

    def __exit__(self, *exc) -> None:
        REGISTRY.commands["points.charge"] = self.command


@pytest.fixture
def fault() -> Iterator[Fault]:
    with Fault() as f:
        yield f


def user_id(api, token: str) -> int:
    return api.get("/users/me", token=token).body["id"]


def charge(api, token: str, amount: int = 100) -> dict:
    reply = api.post("/points/charge", {"amount": amount}, token=token)
    assert reply.status == 202, reply
    return api.wait_job(reply.body["id"], token)


def faulted(api, token: str, fault: Fault, amount: int = 100) -> dict:
    """A charge that failed with INTERNAL_ERROR."""
    fault.victims.add(user_id(api, token))
    job = charge(api, token, amount)
    assert job["error"]["code"] == "INTERNAL_ERROR", job
    return job


def balance(api, token: str) -> int:
    return api.get("/points", token=token).body["balance"]


# -- who may ask --------------------------------------------------------------------------


@pytest.mark.parametrize("path", READS)
def test_reads_are_for_admins_only(api, user, admin, path):
    assert api.get(path).status == 401
    assert api.get(path, token=user).code == "INVALID_PERMISSION"
    assert api.get(path, token=user).status == 403
    assert api.get(path, token=admin).status == 200


@pytest.mark.parametrize("path", WRITES)
def test_replays_are_for_admins_only(api, user, path):
    assert api.post(path, {}).status == 401
    reply = api.post(path, {}, token=user)
    assert (reply.status, reply.code) == (403, "INVALID_PERMISSION")


# -- replaying one job --------------------------------------------------------------------


def test_a_fault_is_replayed_and_succeeds_once_the_fault_is_gone(api, admin, user, fault):
    # Given a charge that failed for an internal fault
    failed = faulted(api, user, fault)
    listed = api.get(f"/admin/jobs?status=failed&q={failed['id']}", token=admin).body["items"]
    assert [j["id"] for j in listed] == [failed["id"]]
    assert listed[0]["replayable"] and listed[0]["payload"] == {"amount": 100}
    assert listed[0]["user_id"] == user_id(api, user)
    # When the fault is gone and an admin replays it
    fault.victims.clear()
    reply = api.post(f"/admin/jobs/{failed['id']}/replay", token=admin)
    # Then a new job of the same owner, type and payload runs, and succeeds
    assert reply.status == 202, reply
    assert reply.body["replay_of"] == failed["id"] and reply.body["type"] == "points.charge"
    assert reply.body["status"] == "queued" and reply.body["payload"] == {"amount": 100}
    done = api.wait_job(reply.body["id"], user)  # the owner sees it as their own job
    assert done["status"] == "succeeded" and done["result"] == {"balance": 100}
    # And a second replay is refused: the points were charged once
    again = api.post(f"/admin/jobs/{failed['id']}/replay", token=admin)
    assert (again.status, again.code) == (409, "JOB_ALREADY_REPLAYED")
    original = api.get(f"/admin/jobs?q={failed['id']}", token=admin).body["items"][0]
    assert original["replayed_by"] == reply.body["id"] and not original["replayable"]
    assert balance(api, user) == 100


def test_racing_replays_of_one_job_make_one_job(api, admin, user, fault, database):
    # Given a failed job
    failed = faulted(api, user, fault)
    fault.victims.clear()
    answers: list[int] = []
    lock = threading.Lock()

    def replay() -> None:
        status = api.post(f"/admin/jobs/{failed['id']}/replay", token=admin).status
        with lock:
            answers.append(status)

    # When 16 operators replay it at once
    run_together(*[replay] * 16)
    # Then one is accepted, the rest are told it was replayed already; one charge applies
    assert sorted(answers) == [202] + [409] * 15
    with database.connection_context():
        replays = list(Job.select().where(Job.replay_of == uuid.UUID(failed["id"])))
    assert len(replays) == 1
    api.wait_job(str(replays[0].id), user)
    assert balance(api, user) == 100


def test_a_business_refusal_is_not_replayable(api, admin, user):
    # Given a charge refused by a rule (the balance cap)
    for _ in range(10):
        charge(api, user, 1_000_000)
    refused = charge(api, user, 1)
    assert refused["error"]["code"] == "MAX_BALANCE_EXCEEDED"
    # When an admin replays it, then it is refused, and so is a succeeded job
    reply = api.post(f"/admin/jobs/{refused['id']}/replay", token=admin)
    assert (reply.status, reply.code) == (409, "JOB_NOT_REPLAYABLE")
    done = charge(api, api.signup_login(new_name()))
    reply = api.post(f"/admin/jobs/{done['id']}/replay", token=admin)
    assert (reply.status, reply.code) == (409, "JOB_NOT_REPLAYABLE")
    listed = api.get(f"/admin/jobs?q={refused['id']}", token=admin).body["items"][0]
    assert not listed["replayable"]


@pytest.mark.parametrize("job_id", [UNKNOWN_JOB, "not-a-uuid", "1"])
def test_replaying_an_unknown_job_is_404(api, admin, job_id):
    reply = api.post(f"/admin/jobs/{job_id}/replay", token=admin)
    assert (reply.status, reply.code) == (404, "JOB_NOT_FOUND")


# -- replaying many -----------------------------------------------------------------------


def test_bulk_replay_counts_each_replayable_match_once(api, admin, fault, stack):
    # Given nothing replayable left from earlier tests
    api.post("/admin/jobs/replay", {}, token=admin)
    users = [api.signup_login(new_name()) for _ in range(3)]
    failed = [faulted(api, token, fault, 10 + i) for i, token in enumerate(users)]
    capped = api.signup_login(new_name())
    for _ in range(10):
        charge(api, capped, 1_000_000)
    assert charge(api, capped, 1)["error"]["code"] == "MAX_BALANCE_EXCEEDED"
    fault.victims.clear()
    # When an admin replays by a code no fault has, nothing is replayed
    reply = api.post("/admin/jobs/replay", {"code": "MAX_BALANCE_EXCEEDED"}, token=admin)
    assert (reply.status, reply.body) == (202, {"replayed": 0})
    reply = api.post("/admin/jobs/replay", {"type": "sns.like"}, token=admin)
    assert reply.body == {"replayed": 0}
    # When an admin replays one by its id as the text filter, that one is replayed
    reply = api.post("/admin/jobs/replay", {"q": failed[0]["id"]}, token=admin)
    assert reply.body == {"replayed": 1}
    # When several admins replay the rest at once, each fault is replayed once
    counts: list[int] = []

    def bulk() -> None:
        body = {"type": "points.charge", "code": "INTERNAL_ERROR"}
        counts.append(api.post("/admin/jobs/replay", body, token=admin).body["replayed"])

    run_together(*[bulk] * 4)
    assert sum(counts) == 2, counts
    # Then every replay succeeds, and each user was charged once
    for token, job in zip(users, failed, strict=True):
        original = api.get(f"/admin/jobs?q={job['id']}", token=admin).body["items"][0]
        assert original["replayed_by"], original
        assert api.wait_job(original["replayed_by"], token)["status"] == "succeeded"
    assert [balance(api, t) for t in users[1:]] == [11, 12]
    assert api.post("/admin/jobs/replay", {}, token=admin).body == {"replayed": 0}


@pytest.mark.parametrize("body", [{"type": 5}, {"code": ""}, {"other": 1}, [], {"type": "x" * 65}])
def test_bulk_replay_refuses_bad_filters(api, admin, body):
    reply = api.post("/admin/jobs/replay", body, token=admin)
    assert (reply.status, reply.code) == (400, "INVALID_REQUEST")


# -- lists and figures --------------------------------------------------------------------


def test_every_users_jobs_filtered_and_paged(api, admin, fault):
    tokens = [api.signup_login(new_name()) for _ in range(2)]
    jobs = [charge(api, tokens[i % 2], 1000 + i) for i in range(5)]
    ids = [j["id"] for j in jobs]
    mine = api.get("/admin/jobs?type=points.charge&limit=3", token=admin).body
    assert [j["id"] for j in mine["items"]] == ids[::-1][:3]  # newest first, both users
    assert {j["user_id"] for j in mine["items"]} == {user_id(api, t) for t in tokens}
    rest = api.get(f"/admin/jobs?type=points.charge&limit=2&cursor={mine['next_cursor']}",
                   token=admin).body
    assert [j["id"] for j in rest["items"]] == ids[::-1][3:5]
    # text search finds a payload
    found = api.get("/admin/jobs?q=1003", token=admin).body["items"]
    assert ids[3] in [j["id"] for j in found]
    failed = faulted(api, tokens[0], fault)
    by_code = api.get("/admin/jobs?status=failed&code=INTERNAL_ERROR", token=admin).body["items"]
    assert failed["id"] in [j["id"] for j in by_code]
    assert all(j["error"]["code"] == "INTERNAL_ERROR" for j in by_code)


@pytest.mark.parametrize("query", [
    "status=done", "code=lower", "type=Bad%20Type", "q=" + "x" * 201, "cursor=garbage",
    "limit=0", "limit=101", "other=1",
])
def test_jobs_list_refuses_bad_queries(api, admin, query):
    reply = api.get(f"/admin/jobs?{query}", token=admin)
    assert (reply.status, reply.code) == (400, "INVALID_REQUEST")


def test_stats_count_outcomes_and_latency(api, admin, fault):
    token = api.signup_login(new_name())
    for _ in range(3):
        charge(api, token, 5)
    faulted(api, token, fault)
    reply = api.get("/admin/stats?window=300", token=admin)
    assert reply.status == 200 and reply.body["window"] == 300
    row = next(r for r in reply.body["items"] if r["type"] == "points.charge")
    assert row["succeeded"] >= 3 and row["failed"] >= 1
    assert 0 < row["failure_ratio"] < 1
    assert row["per_second"] == round((row["succeeded"] + row["failed"]) / 300, 6)
    assert 0 <= row["p50_ms"] <= row["p95_ms"] < 30_000
    for bad in ("0", "abc", str(72 * 3600 + 1)):
        reply = api.get(f"/admin/stats?window={bad}", token=admin)
        assert (reply.status, reply.code) == (400, "INVALID_REQUEST")


def test_queues_workers_and_schedules(api, admin):
    queues = api.get("/admin/queues", token=admin).body["items"]
    assert {q["name"] for q in queues} == {"commands", "sweeps"}
    assert all(q["depth"] >= 0 and q["oldest_age_seconds"] >= 0 for q in queues)
    deadline = time.monotonic() + 10
    while not (workers := api.get("/admin/workers", token=admin).body["items"]):
        assert time.monotonic() < deadline, "no worker heartbeat"
        time.sleep(0.2)
    assert all(w["heartbeat_age_seconds"] < 10 and w["pid"] > 0 for w in workers)
    assert "commands" in workers[0]["queues"]
    schedules = api.get("/admin/schedules", token=admin).body
    resend = next(s for s in schedules["items"] if s["id"] == "jobs.resend")
    assert resend["every"].endswith("s") and int(resend["every"][:-1]) > 0
    prune = next(s for s in schedules["items"] if s["id"] == "ledger.prune")
    assert prune["every"] == "17 * * * *"
    assert "active" in schedules


# -- the outbox -----------------------------------------------------------------------------


def test_a_dead_outbox_event_is_listed_and_replayed_once(api, admin, database):
    now = utcnow()
    with database.connection_context():
        event_id = OutboxEvent.insert(
            topic="order.paid", payload={"order_id": 1}, status="DEAD", attempts=4,
            next_attempt_at=now, created_at=now, last_error="ConnectionError: refused",
        ).execute()
    dead = api.get("/admin/outbox?status=DEAD", token=admin).body["items"]
    listed = next(e for e in dead if e["id"] == event_id)
    assert listed["attempts"] == 4 and listed["last_error"] == "ConnectionError: refused"
    reply = api.post(f"/admin/outbox/{event_id}/replay", token=admin)
    assert reply.status == 202 and reply.body["status"] == "PENDING"
    assert reply.body["attempts"] == 0
    again = api.post(f"/admin/outbox/{event_id}/replay", token=admin)
    assert (again.status, again.code) == (409, "OUTBOX_EVENT_NOT_DEAD")
    for missing in ("999999999", "abc", "0", "9" * 30):
        reply = api.post(f"/admin/outbox/{missing}/replay", token=admin)
        assert (reply.status, reply.code) == (404, "OUTBOX_EVENT_NOT_FOUND")
    assert api.get("/admin/outbox?status=LOST", token=admin).status == 400
