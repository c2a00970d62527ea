"""Points rules on the real database: cap, never negative, history sums to balance."""

from __future__ import annotations

import threading

import pytest

from db.models import PointHistory, PointWallet
from jobs import points, users
from jobs.errors import DomainError


def make_user(name: str, clock) -> int:
    return users.create_user(name, "x", clock.now()).id


def history_sum(user_id: int) -> int:
    return sum(h.amount for h in PointHistory.select().where(PointHistory.user == user_id))


def test_charge_adds_and_logs(clean_db, clock):
    # Given a user with no points
    uid = make_user("alice", clock)
    # When they charge twice
    with clean_db.atomic():
        points.charge(uid, 300, "job:1", clock.now())
    with clean_db.atomic():
        result = points.charge(uid, 200, "job:2", clock.now())
    # Then the balance and history agree
    assert result == {"balance": 500}
    assert points.balance(uid) == {"balance": 500, "held": 0}
    page = points.history(uid, 20, None)
    assert [(i["type"], i["amount"], i["balance_after"]) for i in page["items"]] == [
        ("CHARGE", 200, 500),
        ("CHARGE", 300, 300),
    ]


def test_charge_past_the_cap_is_refused_and_changes_nothing(clean_db, clock):
    uid = make_user("capped", clock)
    with clean_db.atomic():
        points.charge(uid, 1_000_000, "job:a", clock.now())
    PointWallet.update(balance=9_999_950).where(PointWallet.user == uid).execute()
    with pytest.raises(DomainError) as refused, clean_db.atomic():
        points.charge(uid, 51, "job:b", clock.now())
    assert refused.value.code == "MAX_BALANCE_EXCEEDED"
    assert points.balance(uid)["balance"] == 9_999_950
    with clean_db.atomic():
        assert points.charge(uid, 50, "job:c", clock.now()) == {"balance": 10_000_000}


def test_spend_refuses_overdraft_and_refund_returns(clean_db, clock):
    uid = make_user("spender", clock)
    with clean_db.atomic():
        points.charge(uid, 100, "job:a", clock.now())
    with pytest.raises(DomainError) as refused, clean_db.atomic():
        points.spend(uid, 101, "order:1", clock.now())
    assert refused.value.code == "INSUFFICIENT_POINTS"
    with clean_db.atomic():
        assert points.spend(uid, 60, "order:1", clock.now()) == 40
        assert points.refund(uid, 60, "order:1", clock.now()) == 100
    assert history_sum(uid) == 100
    types = [i["type"] for i in points.history(uid, 20, None)["items"]]
    assert types == ["REFUND", "USE", "CHARGE"]


def test_point_movements_need_a_transaction(clean_db, clock):
    uid = make_user("loose", clock)
    with pytest.raises(RuntimeError):
        points.charge(uid, 1, "job:x", clock.now())


def test_history_pages_with_a_cursor(clean_db, clock):
    uid = make_user("pager", clock)
    for n in range(5):
        with clean_db.atomic():
            points.charge(uid, n + 1, f"job:{n}", clock.now())
    first = points.history(uid, 2, None)
    second = points.history(uid, 2, first["next_cursor"])
    third = points.history(uid, 2, second["next_cursor"])
    amounts = [i["amount"] for p in (first, second, third) for i in p["items"]]
    assert amounts == [5, 4, 3, 2, 1]
    assert third["next_cursor"] is None
    with pytest.raises(DomainError) as bad:
        points.history(uid, 2, "not-a-cursor")
    assert bad.value.code == "INVALID_REQUEST"


def test_concurrent_spends_never_overdraw(clean_db, clock):
    # Given 1,000 points and 40 threads each spending 50 (2,000 asked in all)
    uid = make_user("hammer", clock)
    with clean_db.atomic():
        points.charge(uid, 1_000, "job:seed", clock.now())
    outcomes: list[str] = []
    lock = threading.Lock()

    def spend_once(n: int) -> None:
        with clean_db.connection_context():
            try:
                with clean_db.atomic():
                    points.spend(uid, 50, f"order:{n}", clock.now())
                outcome = "ok"
            except DomainError as e:
                outcome = e.code
        with lock:
            outcomes.append(outcome)

    # When they all spend at once
    threads = [threading.Thread(target=spend_once, args=(n,)) for n in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then exactly 20 succeed, the balance is 0 and equals the history's sum
    assert outcomes.count("ok") == 20
    assert outcomes.count("INSUFFICIENT_POINTS") == 20
    assert points.balance(uid)["balance"] == 0
    assert history_sum(uid) == 0


def test_the_database_refuses_a_negative_balance(clean_db, clock):
    uid = make_user("checked", clock)
    with pytest.raises(Exception, match="check"):
        PointWallet.update(balance=-1).where(PointWallet.user == uid).execute()
