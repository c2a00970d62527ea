"""Concert reservation end to end: real web, worker and scheduler processes."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from datetime import date

import pytest

from db.models import ConcertPayment, PointHistory, PointWallet, Reservation, User
from jobs import concerts
from jobs.clock import utcnow
from tests.loadclient import post_many, wait_all
from tests.shop_fixtures import bulk_users
from tests.support import Stack

pytestmark = pytest.mark.e2e
DAYS = [date(2027, 5, 1), date(2027, 5, 2)]


@pytest.fixture(scope="module")
def concert_stack(process_env):
    s = Stack({**process_env, "QUEUE_ACTIVE_LIMIT": "150", "QUEUE_PROMOTE_INTERVAL": "1"})
    s.start_worker(processes=2, threads=8)
    s.start_scheduler()
    s.start_web()
    yield s
    s.stop()


def new_concert(database, price: int = 1_000) -> int:
    with database.connection_context():
        return concerts.create_concert("e2e", [(d, price) for d in DAYS], utcnow())["id"]


def queue_tokens(api_base: str, tokens: list[str], concert_id: int) -> list[dict]:
    requests = [("/queue/tokens", {"concert_id": concert_id}, {"Authorization": f"Bearer {t}"})
                for t in tokens]
    return [body for _, body in asyncio.run(post_many(api_base, requests, concurrency=100))]


def outcome(job: dict) -> str:
    return job["error"]["code"] if job["error"] else job["status"]


def test_100_users_reserving_one_seat_leave_one_hold(concert_stack, database, settings):
    api = concert_stack.api
    tokens = bulk_users(database, settings, "seat_", 100)
    cid = new_concert(database)
    queued = queue_tokens(api.base, tokens, cid)
    assert {q["status"] for q in queued} == {"ACTIVE"}
    requests = [("/reservations", {"concert_id": cid, "date": DAYS[0].isoformat(), "seat_no": 1},
                 {"Authorization": f"Bearer {t}", "Queue-Token": q["token"]})
                for t, q in zip(tokens, queued, strict=True)]
    replies = asyncio.run(post_many(api.base, requests, concurrency=100))
    assert {status for status, _ in replies} == {202}, [b for s, b in replies if s != 202][:3]
    jobs = asyncio.run(wait_all(api.base, [(b["id"], t) for (_, b), t in
                                           zip(replies, tokens, strict=True)]))
    assert Counter(outcome(j) for j in jobs) == {"succeeded": 1, "SEAT_NOT_AVAILABLE": 99}
    with database.connection_context():
        held = [(r.seat_no, r.status) for r in Reservation.select()
                if r.concert_date.concert_id == cid]
    assert held == [(1, "HELD")]


def test_points_and_seats_agree_after_a_mixed_run(concert_stack, database, settings):
    # Given 60 users with 5,000 points each, and seats at 1,000
    api = concert_stack.api
    tokens = bulk_users(database, settings, "mixed_", 60, balance=5_000)
    cid = new_concert(database, price=1_000)
    queued = queue_tokens(api.base, tokens, cid)
    rng = random.Random(7)
    # When each asks for 3 random seats (collisions likely), then pays for what they got,
    # and some pay twice at once
    requests = [("/reservations", {"concert_id": cid, "date": rng.choice(DAYS).isoformat(),
                                   "seat_no": rng.randint(1, 40)},
                 {"Authorization": f"Bearer {t}", "Queue-Token": q["token"]})
                for t, q in zip(tokens, queued, strict=True) for _ in range(3)]
    replies = asyncio.run(post_many(api.base, requests, concurrency=100))
    owners = [r[2] for r in requests]
    jobs = asyncio.run(wait_all(api.base, [(b["id"], h["Authorization"][7:]) for (_, b), h in
                                           zip(replies, owners, strict=True)]))
    holds = [(j["result"]["reservation_id"], h) for j, h in zip(jobs, owners, strict=True)
             if j["status"] == "succeeded"]
    assert holds
    payments = [(f"/reservations/{rid}/payment", {}, h) for rid, h in holds]
    payments += payments[:10]
    pay_replies = asyncio.run(post_many(api.base, payments, concurrency=50))
    accepted = [(b["id"], h["Authorization"][7:]) for (status, b), (_, _, h) in
                zip(pay_replies, payments, strict=True) if status in (200, 202)]
    asyncio.run(wait_all(api.base, accepted))
    # Then every seat has at most one live holder, and points match confirmed seats exactly
    with database.connection_context():
        mine = [r for r in Reservation.select() if r.concert_date.concert_id == cid]
        live = Counter((r.concert_date_id, r.seat_no) for r in mine
                       if r.status in ("HELD", "CONFIRMED"))
        assert max(live.values()) == 1
        confirmed = [r for r in mine if r.status == "CONFIRMED"]
        assert ConcertPayment.select().where(ConcertPayment.reservation.in_(
            [r.id for r in confirmed])).count() == len(confirmed)
        users = User.select().where(User.username.startswith("mixed_"))
        spent = sum(5_000 - w.balance for w in PointWallet.select().where(
            PointWallet.user.in_(users)))
        assert spent == 1_000 * len(confirmed)
        for user in users:
            history = sum(h.amount for h in PointHistory.select().where(PointHistory.user == user))
            assert history == PointWallet.get(PointWallet.user == user).balance
    assert len(confirmed) > 0


def test_the_scheduler_promotes_the_next_in_line(concert_stack, database, settings):
    # Given a full room (150 active) and two users waiting
    api = concert_stack.api
    tokens = bulk_users(database, settings, "line_", 152)
    cid = new_concert(database)
    queued = queue_tokens(api.base, tokens[:150], cid)
    assert {q["status"] for q in queued} == {"ACTIVE"}
    waiting = [api.post("/queue/tokens", {"concert_id": cid}, token=t).body for t in tokens[150:]]
    assert [(w["status"], w["position"]) for w in waiting] == [("WAITING", 1), ("WAITING", 2)]
    # When an active user pays for a seat (which ends their token)
    first = {"Authorization": f"Bearer {tokens[0]}", "Queue-Token": queued[0]["token"]}
    with database.connection_context():
        PointWallet.update(balance=10_000).where(PointWallet.user == User.get(
            User.username == "line_0").id).execute()
    held = api.post("/reservations", {"concert_id": cid, "date": DAYS[1].isoformat(),
                                      "seat_no": 50}, headers={**first, "Prefer": "wait=10"},
                    token=None)
    assert held.body["status"] == "succeeded", held
    paid = api.post(f"/reservations/{held.body['result']['reservation_id']}/payment",
                    headers={**first, "Prefer": "wait=10"})
    assert paid.body["status"] == "succeeded", paid
    # Then within a few seconds the first waiting user is ACTIVE and the second moves up
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = api.get("/queue/tokens/me", token=tokens[150],
                      headers={"Queue-Token": waiting[0]["token"]}).body
        if now["status"] == "ACTIVE":
            break
        time.sleep(0.3)
    assert now["status"] == "ACTIVE"
    second = api.get("/queue/tokens/me", token=tokens[151],
                     headers={"Queue-Token": waiting[1]["token"]}).body
    assert (second["status"], second["position"]) == ("WAITING", 1)
    gone = api.get("/queue/tokens/me", token=tokens[0], headers={"Queue-Token": queued[0]["token"]})
    assert gone.status == 410

