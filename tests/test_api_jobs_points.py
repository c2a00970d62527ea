"""Contract tests for commands and jobs, points, and the operations endpoints.

Binding contract: /work/shared/API.md, sections "Conventions", "Commands and jobs",
"Points" and "Operations".
"""

from __future__ import annotations

import base64
import json
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support import parse_time

JOB_FIELDS = {"id", "type", "status", "result", "error", "created_at", "started_at",
              "finished_at", "attempts"}
CAP = 10_000_000


def new_name(prefix: str = "u") -> str:
    """A username no other test uses."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def charge(api, token, amount, **kw):
    return api.post("/points/charge", {"amount": amount}, token=token, **kw)


def charge_done(api, token, amount) -> dict:
    """Charge and return the terminal job."""
    reply = charge(api, token, amount)
    assert reply.status == 202, reply
    return api.wait_job(reply.body["id"], token)


@pytest.fixture
def api(stack):
    return stack.api


@pytest.fixture
def token(api):
    """The access token of a fresh user."""
    return api.signup_login(new_name())


@pytest.fixture
def paused_worker(stack):
    """The worker is stopped for the test; ``resume()`` (or the teardown) starts it again."""
    stack.kill("worker", signal.SIGTERM)

    def resume():
        if "worker" not in stack.procs:
            stack.start_worker(processes=1, threads=8)

    yield resume
    resume()


# -- submitting a command --------------------------------------------------------------


def test_charge_is_202_with_location_retry_after_and_a_queued_job(api, token):
    # Given a user
    # When charging points
    reply = charge(api, token, 100)
    # Then the command is accepted with the job's address and a queued job body
    assert reply.status == 202, reply
    job = reply.body
    assert reply.headers["location"] == f"/api/v1/jobs/{job['id']}"
    assert reply.headers["retry-after"] == "1"
    assert set(job) == JOB_FIELDS
    uuid.UUID(job["id"])
    assert job["type"] == "points.charge"
    assert job["status"] == "queued"
    assert job["result"] is None and job["error"] is None
    assert job["started_at"] is None and job["finished_at"] is None
    assert job["attempts"] == 0
    parse_time(job["created_at"])


def test_a_charge_job_succeeds_with_the_new_balance(api, token):
    # Given a user who already charged 40
    charge_done(api, token, 40)
    # When they charge 60 and the job finishes
    job = charge_done(api, token, 60)
    # Then the job succeeded with the balance, and its times are in order
    assert job["status"] == "succeeded"
    assert job["result"] == {"balance": 100}
    assert job["error"] is None
    assert job["attempts"] == 1
    created, started, finished = (parse_time(job[k]) for k in
                                  ("created_at", "started_at", "finished_at"))
    assert created <= started <= finished


def test_prefer_wait_returns_200_with_the_terminal_job(api, token):
    # Given a running worker
    # When charging with Prefer: wait=5
    reply = charge(api, token, 10, headers={"Prefer": "wait=5"})
    # Then the answer is the finished job
    assert reply.status == 200, reply
    assert reply.body["status"] == "succeeded"
    assert reply.body["result"] == {"balance": 10}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"amount": "5"}', "amount"),
        (b'{"amount": true}', "amount"),
        (b'{"amount": 1.5}', "amount"),
        (b'{"amount": null}', "amount"),
        (b'{"amount": 0}', "amount"),
        (b'{"amount": -5}', "amount"),
        (b'{"amount": 1000001}', "amount"),
        (b"{}", "amount"),
        (b"", "amount"),
        (b'{"amount": 5, "user_id": 1}', "user_id"),
        (b"[5]", "body"),
        (b"5", "body"),
        (b'{"amount": 5', "body"),
        (b"\xff\xfe", "body"),
    ],
    ids=["string", "bool", "float", "null", "zero", "negative", "over-max", "missing",
         "empty-body", "unknown-field", "list", "number", "malformed", "not-utf8"],
)
def test_charge_with_an_invalid_body_is_400_naming_the_field(api, token, raw, field):
    # Given a charge body that is wrong in one way
    # When charging
    reply = api.post("/points/charge", raw=raw, token=token)
    # Then it is refused synchronously, naming the field, and nothing is charged
    assert reply.status == 400, reply
    assert reply.code == "INVALID_REQUEST"
    assert field in reply.body["error"]["fields"]
    assert api.get("/jobs", token=token).body["items"] == []


@pytest.mark.parametrize("amount", [1, 1_000_000])
def test_charge_accepts_amounts_at_the_bounds(api, token, amount):
    # Given the smallest or largest allowed amount
    # When charging it
    job = charge_done(api, token, amount)
    # Then it is charged
    assert job["result"] == {"balance": amount}


def test_a_body_over_64_kib_is_413_and_64_kib_is_not(api, token):
    # Given two bodies: exactly 64 KiB, and one byte more
    def body(size):
        head = b'{"amount": 1, "pad": "'
        return head + b"x" * (size - len(head) - 2) + b'"}'
    # When charging with each
    at_cap = api.post("/points/charge", raw=body(64 * 1024), token=token)
    over = api.post("/points/charge", raw=body(64 * 1024 + 1), token=token)
    # Then only the bigger one is too large (the other fails validation on "pad")
    assert over.status == 413, over
    assert over.code == "PAYLOAD_TOO_LARGE"
    assert at_cap.status == 400, at_cap
    assert "pad" in at_cap.body["error"]["fields"]


# -- idempotency -----------------------------------------------------------------------


def test_same_idempotency_key_and_body_returns_the_original_job_once(api, token):
    # Given a finished charge sent with an Idempotency-Key
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = charge(api, token, 70, headers=key)
    assert first.status == 202, first
    api.wait_job(first.body["id"], token)
    # When the same request is sent again
    again = charge(api, token, 70, headers=key)
    # Then the original, terminal job comes back with 200 and nothing is charged twice
    assert again.status == 200, again
    assert again.body["id"] == first.body["id"]
    assert again.body["status"] == "succeeded"
    assert api.get("/points", token=token).body == {"balance": 70, "held": 0}
    assert len(api.get("/jobs", token=token).body["items"]) == 1


def test_same_idempotency_key_with_another_body_is_422(api, token):
    # Given a charge sent with an Idempotency-Key
    key = {"Idempotency-Key": uuid.uuid4().hex}
    assert charge(api, token, 70, headers=key).status == 202
    # When the key is reused for a different amount
    reply = charge(api, token, 71, headers=key)
    # Then it is refused
    assert reply.status == 422, reply
    assert reply.code == "IDEMPOTENCY_KEY_REUSED"


def test_an_idempotency_key_belongs_to_one_user(api, token):
    # Given a key used by one user
    key = {"Idempotency-Key": "shared-key-" + uuid.uuid4().hex}
    mine = charge(api, token, 5, headers=key)
    # When another user sends the same key and body
    other = api.signup_login(new_name())
    theirs = charge(api, other, 5, headers=key)
    # Then they get their own job
    assert theirs.status == 202, theirs
    assert theirs.body["id"] != mine.body["id"]


@pytest.mark.parametrize("key", ["k" * 65, ""], ids=["65-chars", "empty"])
def test_an_idempotency_key_outside_1_to_64_chars_is_400(api, token, key):
    # Given a malformed Idempotency-Key
    # When charging with it
    reply = charge(api, token, 5, headers={"Idempotency-Key": key})
    # Then it is refused and nothing is queued
    assert reply.status == 400, reply
    assert reply.code == "INVALID_REQUEST"
    assert api.get("/jobs", token=token).body["items"] == []


def test_a_64_char_idempotency_key_is_accepted(api, token):
    # Given a key of exactly 64 characters
    # When charging with it
    reply = charge(api, token, 5, headers={"Idempotency-Key": "k" * 64})
    # Then it is accepted
    assert reply.status == 202, reply


def test_concurrent_requests_with_one_key_charge_once(api, token):
    # Given ten identical requests with the same key, sent at once
    key = {"Idempotency-Key": uuid.uuid4().hex}
    with ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(lambda _: charge(api, token, 30, headers=key), range(10)))
    # When they all have been answered
    # Then they all name one job, and the points are charged once
    assert all(r.status in (200, 202) for r in replies), replies
    ids = {r.body["id"] for r in replies}
    assert len(ids) == 1
    api.wait_job(ids.pop(), token)
    assert api.get("/points", token=token).body == {"balance": 30, "held": 0}


# -- reading jobs ----------------------------------------------------------------------


def test_get_job_returns_the_callers_job(api, token):
    # Given a charge
    submitted = charge(api, token, 9).body
    # When the owner reads the job
    reply = api.get(f"/jobs/{submitted['id']}", token=token)
    # Then it is the same job
    assert reply.status == 200, reply
    assert set(reply.body) == JOB_FIELDS
    assert reply.body["id"] == submitted["id"]
    assert reply.body["created_at"] == submitted["created_at"]


def test_get_job_with_wait_returns_the_terminal_job(api, token):
    # Given a just-submitted charge
    job_id = charge(api, token, 9).body["id"]
    # When long-polling it
    reply = api.get(f"/jobs/{job_id}?wait=10", token=token)
    # Then the answer is terminal
    assert reply.status == 200, reply
    assert reply.body["status"] == "succeeded"


def test_another_users_job_is_404(api, token):
    # Given someone else's job
    other = api.signup_login(new_name())
    job_id = charge(api, other, 9).body["id"]
    # When reading it, with and without waiting
    plain = api.get(f"/jobs/{job_id}", token=token)
    waiting = api.get(f"/jobs/{job_id}?wait=1", token=token)
    # Then it does not exist for this caller
    for reply in (plain, waiting):
        assert reply.status == 404, reply
        assert reply.code == "JOB_NOT_FOUND"


@pytest.mark.parametrize("job_id", ["not-a-uuid", str(uuid.uuid4())], ids=["malformed", "unknown"])
def test_a_malformed_or_unknown_job_id_is_404(api, token, job_id):
    # Given an id that names no job of the caller
    # When reading it
    reply = api.get(f"/jobs/{job_id}", token=token)
    # Then it is not found
    assert reply.status == 404, reply
    assert reply.code == "JOB_NOT_FOUND"


@pytest.mark.parametrize("wait", ["31", "x", "-1", "1.5", "%C2%B2"],
                         ids=["31", "letter", "negative", "decimal", "superscript-two"])
def test_get_job_with_a_bad_wait_is_400(api, token, wait):
    # Given a job
    job_id = charge(api, token, 9).body["id"]
    # When asking to wait an invalid time
    reply = api.get(f"/jobs/{job_id}?wait={wait}", token=token)
    # Then the request is invalid, naming wait
    assert reply.status == 400, reply
    assert reply.code == "INVALID_REQUEST"
    assert "wait" in reply.body["error"]["fields"]


def test_list_jobs_shows_only_the_callers_jobs_newest_first(api, token):
    # Given three charges of this user and one of another user
    ids = [charge(api, token, n).body["id"] for n in (1, 2, 3)]
    charge(api, api.signup_login(new_name()), 4)
    # When listing jobs
    reply = api.get("/jobs", token=token)
    # Then exactly this user's jobs come back, newest first
    assert reply.status == 200, reply
    assert [j["id"] for j in reply.body["items"]] == ids[::-1]
    assert reply.body["next_cursor"] is None
    assert all(set(j) == JOB_FIELDS for j in reply.body["items"])


def test_list_jobs_pages_with_limit_and_cursor(api, token):
    # Given five jobs
    ids = [charge(api, token, n).body["id"] for n in range(1, 6)]
    # When reading pages of two
    seen, cursor, pages = [], None, 0
    while True:
        query = "/jobs?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = api.get(query, token=token)
        assert page.status == 200, page
        assert len(page.body["items"]) <= 2
        seen += [j["id"] for j in page.body["items"]]
        cursor, pages = page.body["next_cursor"], pages + 1
        if cursor is None:
            break
    # Then every job appears once, newest first, over three pages
    assert seen == ids[::-1]
    assert pages == 3


def test_list_jobs_defaults_to_20_and_allows_100(api, token):
    # Given 21 jobs
    for _ in range(21):
        charge(api, token, 1)
    # When listing with the default limit and with limit=100
    default = api.get("/jobs", token=token)
    largest = api.get("/jobs?limit=100", token=token)
    # Then the default page holds 20 with a cursor; the large one holds all 21
    assert len(default.body["items"]) == 20
    assert default.body["next_cursor"] is not None
    assert len(largest.body["items"]) == 21
    assert largest.body["next_cursor"] is None


def test_list_jobs_filters_by_status_and_type(api, token):
    # Given one succeeded and one failed charge
    ok = charge(api, token, 1_000_000, headers={"Prefer": "wait=5"}).body
    for reply in [charge(api, token, 1_000_000) for _ in range(9)]:
        api.wait_job(reply.body["id"], token)
    failed = charge(api, token, 1, headers={"Prefer": "wait=5"}).body
    assert failed["status"] == "failed", failed
    # When filtering
    by_failed = api.get("/jobs?status=failed", token=token).body["items"]
    by_type = api.get("/jobs?type=points.charge&limit=100", token=token).body["items"]
    by_other_type = api.get("/jobs?type=orders.create", token=token).body["items"]
    # Then only the matching jobs come back
    assert [j["id"] for j in by_failed] == [failed["id"]]
    assert len(by_type) == 11 and ok["id"] in {j["id"] for j in by_type}
    assert by_other_type == []


@pytest.mark.parametrize(
    "query",
    ["status=done", "limit=0", "limit=101", "limit=x", "limit=%C2%B2", "cursor=garbage!",
     "cursor=" + base64.urlsafe_b64encode(b'["x","y"]').decode().rstrip("="),
     "type=" + "t" * 65],
    ids=["status", "limit-0", "limit-101", "limit-letter", "limit-superscript", "cursor-garbage",
         "cursor-forged", "type-too-long"],
)
def test_list_jobs_with_a_bad_query_is_400(api, token, query):
    # Given an invalid list query
    name = query.split("=")[0]
    # When listing
    reply = api.get(f"/jobs?{query}", token=token)
    # Then the request is invalid, naming the parameter
    assert reply.status == 400, reply
    assert reply.code == "INVALID_REQUEST"
    assert name in reply.body["error"]["fields"]


# -- without a worker: holding and 202 fall-backs ---------------------------------------


def test_wait_holds_until_the_time_is_up_for_an_unfinished_job(api, token, paused_worker):
    # Given a job no worker picks up
    job_id = charge(api, token, 5).body["id"]
    # When long-polling it for 2 seconds
    started = time.monotonic()
    reply = api.get(f"/jobs/{job_id}?wait=2", token=token)
    elapsed = time.monotonic() - started
    # Then the request was held about 2 s and answers the job as it is
    assert reply.status == 200, reply
    assert reply.body["status"] == "queued"
    assert 1.8 <= elapsed < 6


def test_prefer_wait_answers_202_when_the_job_is_not_done_in_time(api, token, paused_worker):
    # Given no worker
    # When charging with Prefer: wait=1
    started = time.monotonic()
    reply = charge(api, token, 5, headers={"Prefer": "wait=1"})
    # Then after about a second the usual 202 comes back
    assert reply.status == 202, reply
    assert reply.headers["location"] == f"/api/v1/jobs/{reply.body['id']}"
    assert reply.body["status"] == "queued"
    assert 0.9 <= time.monotonic() - started < 1.9  # held once, not twice


def test_idempotent_replay_of_an_unfinished_job_is_202(api, token, paused_worker):
    # Given a charge with a key that is not finished
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = charge(api, token, 5, headers=key)
    # When it is sent again
    again = charge(api, token, 5, headers=key)
    # Then the same, still unfinished job comes back with 202
    assert again.status == 202, again
    assert again.body["id"] == first.body["id"]
    assert again.headers["location"] == f"/api/v1/jobs/{first.body['id']}"


def test_a_long_poll_wakes_when_the_job_finishes(api, token, paused_worker):
    # Given a queued job and a client long-polling it for up to 25 s
    job_id = charge(api, token, 5).body["id"]
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        poll = pool.submit(api.get, f"/jobs/{job_id}?wait=25", token=token)
        time.sleep(0.5)
        # When a worker starts and runs the job
        paused_worker()
        reply = poll.result()
    # Then the poll returns the finished job well before its deadline
    assert reply.status == 200, reply
    assert reply.body["status"] == "succeeded"
    assert time.monotonic() - started < 20


# -- points ----------------------------------------------------------------------------


def test_a_new_user_has_a_zero_balance(api, token):
    # Given a new user
    # When reading the balance
    reply = api.get("/points", token=token)
    # Then it is zero
    assert reply.status == 200, reply
    assert reply.body == {"balance": 0, "held": 0}


def test_the_balance_can_reach_the_cap_exactly(api, token):
    # Given a balance of 9,000,000
    for reply in [charge(api, token, 1_000_000) for _ in range(9)]:
        api.wait_job(reply.body["id"], token)
    # When charging 1,000,000 more
    job = charge_done(api, token, 1_000_000)
    # Then the balance is exactly the cap
    assert job["status"] == "succeeded", job
    assert api.get("/points", token=token).body == {"balance": CAP, "held": 0}


def test_charging_past_the_cap_fails_the_job_and_changes_nothing(api, token):
    # Given a balance of 9,999,999
    for reply in [charge(api, token, 1_000_000) for _ in range(9)]:
        api.wait_job(reply.body["id"], token)
    charge_done(api, token, 999_999)
    history_before = api.get("/points/history?limit=100", token=token).body["items"]
    # When charging 2
    job = charge_done(api, token, 2)
    # Then the job fails with MAX_BALANCE_EXCEEDED and neither balance nor history change
    assert job["status"] == "failed", job
    assert job["result"] is None
    assert job["error"]["code"] == "MAX_BALANCE_EXCEEDED"
    assert job["error"]["message"]
    assert job["finished_at"] is not None
    assert api.get("/points", token=token).body == {"balance": CAP - 1, "held": 0}
    assert api.get("/points/history?limit=100", token=token).body["items"] == history_before


def test_concurrent_charges_all_apply_once(api, token):
    # Given twenty charges sent at once
    amounts = list(range(1, 21))
    with ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(lambda n: charge(api, token, n), amounts))
    # When they have all finished
    jobs = [api.wait_job(r.body["id"], token) for r in replies]
    # Then each succeeded once and the balance is their sum
    assert all(j["status"] == "succeeded" for j in jobs)
    assert api.get("/points", token=token).body == {"balance": sum(amounts), "held": 0}
    history = api.get("/points/history?limit=100", token=token).body["items"]
    assert sorted(h["amount"] for h in history) == amounts


def test_history_lists_charges_newest_first(api, token):
    # Given two charges
    first = charge_done(api, token, 300)
    second = charge_done(api, token, 200)
    # When reading the history
    reply = api.get("/points/history", token=token)
    # Then both appear, newest first, with running balances
    assert reply.status == 200, reply
    items = reply.body["items"]
    assert reply.body["next_cursor"] is None
    assert [set(h) for h in items] == [{"id", "type", "amount", "balance_after", "ref",
                                        "created_at"}] * 2
    assert [(h["type"], h["amount"], h["balance_after"]) for h in items] == [
        ("CHARGE", 200, 500), ("CHARGE", 300, 300)]
    assert items[0]["id"] != items[1]["id"]
    assert parse_time(items[0]["created_at"]) >= parse_time(items[1]["created_at"])
    assert first["id"] != second["id"]


def test_history_sums_to_the_balance(api, token):
    # Given several charges, one of them refused
    for amount in (1_000_000,) * 9 + (999_000, 5_000, 123):
        charge_done(api, token, amount)
    # When reading balance and history
    balance = api.get("/points", token=token).body["balance"]
    items = api.get("/points/history?limit=100", token=token).body["items"]
    # Then the history adds up to the balance, which never passed the cap
    assert balance == 9_999_123
    assert sum(h["amount"] for h in items) == balance
    assert items[0]["balance_after"] == balance


def test_history_pages_with_limit_and_cursor(api, token):
    # Given five charges
    for amount in (1, 2, 3, 4, 5):
        charge_done(api, token, amount)
    # When reading pages of two
    seen, cursor = [], None
    while True:
        page = api.get("/points/history?limit=2" + (f"&cursor={cursor}" if cursor else ""),
                       token=token)
        assert page.status == 200, page
        seen += [h["amount"] for h in page.body["items"]]
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    # Then every movement appears once, newest first
    assert seen == [5, 4, 3, 2, 1]


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=101", "limit=x", "limit=%C2%B2", "cursor=garbage!",
     "cursor=" + base64.urlsafe_b64encode(b'["x"]').decode().rstrip("=")],
    ids=["limit-0", "limit-101", "limit-letter", "limit-superscript", "cursor-garbage",
         "cursor-forged"],
)
def test_history_with_a_bad_query_is_400(api, token, query):
    # Given an invalid list query
    name = query.split("=")[0]
    # When reading the history
    reply = api.get(f"/points/history?{query}", token=token)
    # Then the request is invalid, naming the parameter
    assert reply.status == 400, reply
    assert reply.code == "INVALID_REQUEST"
    assert name in reply.body["error"]["fields"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/points"), ("GET", "/points/history"), ("POST", "/points/charge"),
     ("GET", "/jobs"), ("GET", "/jobs/0b1c2d3e-0000-4000-8000-000000000001")],
)
def test_points_and_jobs_require_a_token(api, method, path):
    # Given no Authorization header
    # When calling the endpoint
    reply = api.call(method, path, {"amount": 1} if method == "POST" else None)
    # Then it is unauthorized
    assert reply.status == 401, reply
    assert reply.code == "UNAUTHORIZED"


def test_a_charge_with_a_bad_token_is_refused_before_validation(api):
    # Given a garbage token and an invalid body
    # When charging
    reply = api.post("/points/charge", {"amount": 0}, token="garbage")
    # Then authentication fails first
    assert reply.status == 401, reply
    assert reply.code == "INVALID_TOKEN"


# -- operations ------------------------------------------------------------------------


def test_healthz_is_200(api, stack):
    # Given a running web process
    # When probing liveness without a token
    reply = api.get(f"http://127.0.0.1:{stack.port}/healthz")
    # Then it is up
    assert reply.status == 200, reply


def test_readyz_reports_database_and_redis_ok(api, stack):
    # Given reachable PostgreSQL and Redis
    # When probing readiness
    reply = api.get(f"http://127.0.0.1:{stack.port}/readyz")
    # Then it is ready, with a check per dependency
    assert reply.status == 200, reply
    checks = reply.body["checks"]
    assert set(checks) >= {"database", "redis"}
    assert all(v == "ok" for v in checks.values())


def test_metrics_expose_requests_jobs_and_queue_depth(api, stack, token):
    # Given a finished charge and a health probe
    charge_done(api, token, 1)
    api.get(f"http://127.0.0.1:{stack.port}/healthz")
    # When scraping metrics
    reply = api.get(f"http://127.0.0.1:{stack.port}/metrics")
    # Then the Prometheus text has requests, jobs by outcome and queue depths
    assert reply.status == 200, reply
    assert reply.headers["content-type"].startswith("text/plain")
    text = reply.body
    assert "# TYPE bazaar_http_requests_total counter" in text
    assert 'bazaar_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    jobs = [line for line in text.splitlines()
            if line.startswith('bazaar_jobs_total{outcome="succeeded",type="points.charge"}')]
    assert jobs and int(float(jobs[0].rsplit(" ", 1)[1])) >= 1
    assert "bazaar_queue_depth{" in text


@pytest.mark.parametrize("path", ["/api/v1/nothing-here", "/nothing-here", "/api/v1/points/x"])
def test_an_unknown_path_is_a_json_404(api, stack, path):
    # Given a path no route serves
    # When requesting it
    reply = api.get(f"http://127.0.0.1:{stack.port}{path}")
    # Then the answer is a JSON 404 error
    assert reply.status == 404, reply
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.code.endswith("NOT_FOUND")


def test_a_wrong_method_is_a_json_405(api, token):
    # Given a GET-only path
    # When POSTing to it
    reply = api.post("/points", {"amount": 1}, token=token)
    # Then the answer is a JSON 405 error
    assert reply.status == 405, reply
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.code == "METHOD_NOT_ALLOWED"


def test_a_405_names_the_allowed_methods(api, token):
    # Given a GET-only path
    # When DELETE is sent to it
    reply = api.call("DELETE", "/points", token=token)
    # Then the 405 says which methods are allowed (RFC 9110 15.5.6: Allow is required)
    assert reply.status == 405, reply
    assert "GET" in reply.headers.get("allow", "")


def test_error_bodies_never_carry_a_stack_trace(api, stack, token):
    # Given requests that fail in many ways, including an internal error
    job_id = charge(api, token, 1).body["id"]
    replies = [
        api.post("/points/charge", raw=b"{", token=token),
        api.get("/points"),
        api.get(f"/jobs/{uuid.uuid4()}", token=token),
        api.get(f"http://127.0.0.1:{stack.port}/nope"),
        api.call("PUT", "/points", token=token),
        api.post("/points/charge", raw=b"x" * (64 * 1024 + 10), token=token),
        api.get(f"/jobs/{job_id}?wait=%C2%B2", token=token),
    ]
    # When reading the bodies
    # Then each is a JSON error object without a traceback
    for reply in replies:
        assert reply.status >= 400, reply
        assert set(reply.body) == {"error"}, reply
        text = json.dumps(reply.body)
        assert "Traceback" not in text and 'File "' not in text
