"""The invariants of a Bazaar database, checked in one snapshot (``bazaar check``).

Each invariant is one SQL query returning a short description of every offending row
("order 12 PAID paying 500: 2 USE row(s) of 1000"), with a second query counting what
it examined. All of them run in one REPEATABLE READ, read-only transaction, so on a
live system they see one consistent state: a command's effect and its job's terminal
state commit together, so nothing in flight looks half done. What may legitimately be
in flight is a job still running: unfinished jobs younger than ``RUNNING_GRACE`` (or,
with ``settle``, recorded after the check began) are not counted. PostgreSQL only.

The invariants are the ones the code guarantees, whoever wrote the rows (commands,
sweeps, ``bazaar demo-data``): point movements are logged per wallet, charges carry
their job's id (``job:<id>``), order, seat and auction payments their order,
reservation or artwork (``order:<id>``, ``reservation:<id>``, ``artwork:<id>``), and
orders, issued coupons and seat holds are made only by their commands, whose results
name them. Initial stock is not stored, so stock is checked only when the caller knows
it (the soak does).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import peewee

from jobs.clock import utcnow

RUNNING_GRACE = timedelta(seconds=10)
SHOWN = 5  # offending rows named per invariant


@dataclass(frozen=True)
class Invariant:
    """A rule, the query listing the rows that break it, and the count of rows it examines."""

    name: str
    offenders: str
    examined: str


@dataclass(frozen=True)
class Outcome:
    """What one invariant found: ``ok`` is None when it could not be checked."""

    name: str
    ok: bool | None
    examined: int
    offenders: list[str]
    note: str = ""

    def line(self) -> str:
        """``name  OK|FAIL|SKIP  detail``."""
        if self.ok is None:
            status, detail = "SKIP", self.note
        elif self.ok:
            status, detail = "OK", f"{self.examined:,} examined"
        else:
            shown = "; ".join(self.offenders[:SHOWN])
            more = " ..." if len(self.offenders) > SHOWN else ""
            status, detail = "FAIL", f"{len(self.offenders):,} of {self.examined:,}: {shown}{more}"
        return f"{self.name:<30} {status:<4}  {detail}"


# The movements of one type per reference (``amount``: their sum, spending counted positive).
_MOVES = """SELECT ref, count(*) AS n, min(user_id) AS user_id, {sign}sum(amount) AS amount
  FROM point_history WHERE type = '{kind}' AND starts_with(ref, '{prefix}') GROUP BY ref"""


def _made_by(name: str, job_type: str, key: str, table: str, noun: str) -> Invariant:
    """Each row of ``table`` is the result (``key``) of exactly one succeeded job of its
    owner, and each such result exists: no command applied twice, none half applied."""
    return Invariant(name, f"""
WITH made AS (SELECT id, user_id, (result::jsonb ->> '{key}')::bigint AS made
              FROM jobs WHERE type = '{job_type}' AND status = 'succeeded')
SELECT '{noun} ' || t.id || ': made by ' || count(m.id) || ' job(s)'
  FROM {table} t LEFT JOIN made m ON m.made = t.id AND m.user_id = t.user_id
  GROUP BY t.id HAVING count(m.id) <> 1
UNION ALL
SELECT 'job ' || m.id || ': its {noun} ' || m.made || ' is missing' FROM made m
  WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE t.id = m.made)""",
                     f"SELECT count(*) FROM {table}")


INVARIANTS = [
    Invariant("jobs terminal", """
SELECT 'job ' || id || ' ' || status || ' since ' || to_char(created_at, 'HH24:MI:SS')
  FROM jobs WHERE status NOT IN ('succeeded', 'failed') AND created_at < %(cutoff)s
  ORDER BY created_at""",
              "SELECT count(*) FROM jobs WHERE created_at < %(cutoff)s"),
    Invariant("charges applied once", f"""
WITH charged AS ({_MOVES.format(kind="CHARGE", prefix="job:", sign="")}),
charges AS (SELECT id, user_id, status, (payload::jsonb ->> 'amount')::bigint AS amount
            FROM jobs WHERE type = 'points.charge')
SELECT 'job ' || j.id || ' ' || j.status || ' of ' || j.amount || ': '
       || coalesce(c.n, 0) || ' CHARGE row(s) of ' || coalesce(c.amount, 0)
  FROM charges j LEFT JOIN charged c ON c.ref = 'job:' || j.id
  WHERE coalesce(c.n, 0) <> (j.status = 'succeeded')::int
     OR c.n = 1 AND (c.user_id <> j.user_id OR c.amount <> j.amount)
UNION ALL
SELECT c.ref || ': no such charge job' FROM charged c
  WHERE NOT EXISTS (SELECT 1 FROM charges j WHERE c.ref = 'job:' || j.id)""",
              "SELECT count(*) FROM jobs WHERE type = 'points.charge'"),
    Invariant("wallets equal history", """
SELECT 'user ' || w.user_id || ': balance ' || w.balance || ', history ' || coalesce(h.sum, 0)
  FROM point_wallets w
  LEFT JOIN (SELECT user_id, sum(amount) FROM point_history GROUP BY user_id) h
    ON h.user_id = w.user_id
  WHERE w.balance <> coalesce(h.sum, 0)
UNION ALL
SELECT 'history ' || id || ': balance_after ' || balance_after || ', running sum ' || running
  FROM (SELECT id, balance_after,
               sum(amount) OVER (PARTITION BY user_id ORDER BY id) AS running
        FROM point_history) r
  WHERE balance_after <> running""",
              "SELECT count(*) FROM point_wallets"),
    Invariant("points conserved", """
SELECT 'wallets hold ' || owned || ', but charged ' || charged || ' - spent ' || spent
       || ' + paid to artists ' || earned || ' = ' || (charged - spent + earned)
  FROM (SELECT
    (SELECT coalesce(sum(balance + held), 0) FROM point_wallets) AS owned,
    (SELECT coalesce(sum(amount), 0) FROM point_history
      WHERE type IN ('CHARGE', 'REFUND')) AS charged,
    (SELECT coalesce(sum(pay_amount), 0) FROM orders WHERE status = 'PAID')
      + (SELECT coalesce(sum(price), 0) FROM reservations WHERE status = 'CONFIRMED')
      + (SELECT coalesce(sum(price), 0) FROM artworks WHERE status = 'SOLD') AS spent,
    (SELECT coalesce(sum(amount), 0) FROM point_history WHERE type = 'SALE') AS earned) t
  WHERE owned <> charged - spent + earned""",
              "SELECT count(*) FROM point_wallets"),
    _made_by("orders made once", "orders.create", "order_id", "orders", "order"),
    Invariant("order payments once", f"""
WITH used AS ({_MOVES.format(kind="USE", prefix="order:", sign="-")})
SELECT 'order ' || o.id || ' ' || o.status || ' paying ' || o.pay_amount || ': '
       || coalesce(u.n, 0) || ' USE row(s) of ' || coalesce(u.amount, 0)
  FROM orders o LEFT JOIN used u ON u.ref = 'order:' || o.id
  WHERE CASE WHEN o.status = 'PAID' AND o.pay_amount > 0
             THEN u.n IS DISTINCT FROM 1 OR u.amount <> o.pay_amount OR u.user_id <> o.user_id
             ELSE u.n IS NOT NULL END
     OR (o.status = 'PAID') <> (o.paid_at IS NOT NULL)
UNION ALL
SELECT u.ref || ': no such order' FROM used u
  WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE u.ref = 'order:' || o.id)""",
              "SELECT count(*) FROM orders"),
    _made_by("coupons issued once", "coupons.issue", "user_coupon_id", "user_coupons",
             "user coupon"),
    Invariant("coupon counts", """
SELECT 'coupon ' || c.id || ': issued ' || c.issued || ', held ' || count(uc.id)
       || ', stock ' || c.stock
  FROM coupons c LEFT JOIN user_coupons uc ON uc.coupon_id = c.id
  GROUP BY c.id HAVING c.issued <> count(uc.id) OR c.issued > c.stock""",
              "SELECT count(*) FROM coupons"),
    Invariant("coupons follow their orders", """
SELECT 'user coupon ' || uc.id || ' (used ' || uc.used || '): order '
       || coalesce(uc.order_id::text, '-') || ' ' || coalesce(o.status, '-')
  FROM user_coupons uc LEFT JOIN orders o ON o.id = uc.order_id
  WHERE CASE WHEN uc.order_id IS NULL THEN uc.used
             ELSE o.id IS NULL OR o.user_coupon_id IS DISTINCT FROM uc.id
               OR o.user_id <> uc.user_id OR o.status NOT IN ('NOT_PAID', 'PAID')
               OR uc.used <> (o.status = 'PAID') END
UNION ALL
SELECT 'order ' || o.id || ' ' || o.status || ': its coupon ' || o.user_coupon_id
       || ' is held by ' || coalesce(uc.order_id::text, 'no order')
  FROM orders o LEFT JOIN user_coupons uc ON uc.id = o.user_coupon_id
  WHERE o.user_coupon_id IS NOT NULL AND o.status IN ('NOT_PAID', 'PAID')
    AND uc.order_id IS DISTINCT FROM o.id""",
              "SELECT count(*) FROM user_coupons"),
    _made_by("seats held once", "concert.reserve", "reservation_id", "reservations", "reservation"),
    Invariant("one live holder per seat", """
SELECT 'date ' || concert_date_id || ' seat ' || seat_no || ': ' || count(*) || ' live'
  FROM reservations WHERE status IN ('HELD', 'CONFIRMED')
  GROUP BY concert_date_id, seat_no HAVING count(*) > 1""",
              "SELECT count(*) FROM reservations WHERE status IN ('HELD', 'CONFIRMED')"),
    Invariant("holds within the limit", """
SELECT 'user ' || r.user_id || ' concert ' || d.concert_id || ': ' || count(*) || ' live holds'
  FROM reservations r JOIN concert_dates d ON d.id = r.concert_date_id
  WHERE r.status = 'HELD' AND r.expires_at > %(now)s
  GROUP BY r.user_id, d.concert_id HAVING count(*) > %(hold_limit)s""",
              "SELECT count(*) FROM reservations WHERE status = 'HELD' AND expires_at > %(now)s"),
    Invariant("seat payments once", f"""
WITH used AS ({_MOVES.format(kind="USE", prefix="reservation:", sign="-")}),
paid AS (SELECT reservation_id, count(*) AS n, min(user_id) AS user_id, sum(amount) AS amount
         FROM concert_payments GROUP BY reservation_id)
SELECT 'reservation ' || r.id || ' ' || r.status || ' at ' || r.price || ': '
       || coalesce(p.n, 0) || ' payment(s), ' || coalesce(u.n, 0) || ' USE row(s) of '
       || coalesce(u.amount, 0)
  FROM reservations r LEFT JOIN used u ON u.ref = 'reservation:' || r.id
  LEFT JOIN paid p ON p.reservation_id = r.id
  WHERE CASE WHEN r.status <> 'CONFIRMED' THEN p.n IS NOT NULL OR u.n IS NOT NULL
             WHEN p.n IS DISTINCT FROM 1 OR p.amount <> r.price OR p.user_id <> r.user_id
               THEN true
             WHEN r.price > 0
               THEN u.n IS DISTINCT FROM 1 OR u.amount <> r.price OR u.user_id <> r.user_id
             ELSE u.n IS NOT NULL END
     OR (r.status = 'CONFIRMED') <> (r.paid_at IS NOT NULL)
UNION ALL
SELECT u.ref || ': no such reservation' FROM used u
  WHERE NOT EXISTS (SELECT 1 FROM reservations r WHERE u.ref = 'reservation:' || r.id)""",
              "SELECT count(*) FROM reservations"),
    Invariant("escrow equals leading bids", """
WITH leaders AS (SELECT leader_id AS user_id, 'artwork:' || id AS ref, leader_max AS amount
                 FROM artworks WHERE status = 'OPEN' AND leader_id IS NOT NULL),
escrowed AS (SELECT user_id, ref, -sum(amount) AS amount FROM point_history
             WHERE type IN ('HOLD', 'RELEASE') GROUP BY user_id, ref)
SELECT 'user ' || w.user_id || ': held ' || w.held || ', leading with ' || coalesce(l.sum, 0)
  FROM point_wallets w
  LEFT JOIN (SELECT user_id, sum(amount) FROM leaders GROUP BY user_id) l
    ON l.user_id = w.user_id
  WHERE w.held <> coalesce(l.sum, 0)
UNION ALL
SELECT 'user ' || coalesce(e.user_id, l.user_id) || ' on ' || coalesce(e.ref, l.ref)
       || ': escrowed ' || coalesce(e.amount, 0) || ', leading with ' || coalesce(l.amount, 0)
  FROM escrowed e FULL JOIN leaders l ON l.user_id = e.user_id AND l.ref = e.ref
  WHERE coalesce(e.amount, 0) <> coalesce(l.amount, 0)""",
              "SELECT count(*) FROM point_wallets"),
    Invariant("auctions settled once", """
WITH moves AS (
  SELECT ref,
         count(*) FILTER (WHERE type = 'USE') AS buys,
         min(user_id) FILTER (WHERE type = 'USE') AS buyer,
         -sum(amount) FILTER (WHERE type = 'USE') AS paid,
         count(*) FILTER (WHERE type = 'SALE') AS sales,
         min(user_id) FILTER (WHERE type = 'SALE') AS seller,
         sum(amount) FILTER (WHERE type = 'SALE') AS earned
  FROM point_history WHERE type IN ('USE', 'SALE') AND starts_with(ref, 'artwork:')
  GROUP BY ref),
events AS (SELECT artwork_id, count(*) AS n, max(version) AS last,
                  count(*) FILTER (WHERE type = 'closed') AS closed
           FROM artwork_events GROUP BY artwork_id)
SELECT 'artwork ' || a.id || ' ' || a.status || ': ' || coalesce(m.buys, 0) || ' payment(s), '
       || coalesce(m.sales, 0) || ' sale(s), version ' || a.version || ', '
       || coalesce(e.n, 0) || ' event(s)'
  FROM artworks a LEFT JOIN moves m ON m.ref = 'artwork:' || a.id
  LEFT JOIN events e ON e.artwork_id = a.id
  WHERE CASE WHEN a.status = 'SOLD'
             THEN m.buys IS DISTINCT FROM 1 OR m.buyer IS DISTINCT FROM a.winner_id
               OR m.paid IS DISTINCT FROM a.price OR m.sales IS DISTINCT FROM 1
               OR m.seller IS DISTINCT FROM a.artist_id OR m.earned IS DISTINCT FROM a.price
             ELSE m.ref IS NOT NULL END
     OR a.version <> coalesce(e.n, 0) OR a.version <> coalesce(e.last, 0)
     OR coalesce(e.closed, 0) <> (a.status <> 'OPEN')::int""",
              "SELECT count(*) FROM artworks"),
    Invariant("feed counts equal rows", """
SELECT 'post ' || p.id || ': like_count ' || p.like_count || ' for ' || coalesce(l.n, 0)
       || ' likes, comment_count ' || p.comment_count || ' for ' || coalesce(c.n, 0)
  FROM posts p
  LEFT JOIN (SELECT post_id, count(*) AS n FROM post_likes GROUP BY post_id) l
    ON l.post_id = p.id
  LEFT JOIN (SELECT post_id, count(*) AS n FROM post_comments GROUP BY post_id) c
    ON c.post_id = p.id
  WHERE p.like_count <> coalesce(l.n, 0) OR p.comment_count <> coalesce(c.n, 0)""",
              "SELECT count(*) FROM posts"),
]

STOCK = Invariant("stock conserved", """
SELECT 'product ' || i.id || ': stock ' || coalesce(p.stock::text, 'missing') || ' + '
       || coalesce(s.units, 0) || ' in live orders, of ' || i.stock
  FROM unnest(%(product_ids)s::bigint[], %(initial_stock)s::bigint[]) AS i(id, stock)
  LEFT JOIN products p ON p.id = i.id
  LEFT JOIN (SELECT oi.product_id, sum(oi.quantity) AS units
             FROM order_items oi JOIN orders o ON o.id = oi.order_id
             WHERE o.status <> 'EXPIRED' GROUP BY oi.product_id) s ON s.product_id = i.id
  WHERE p.stock + coalesce(s.units, 0) IS DISTINCT FROM i.stock""",
                  "SELECT cardinality(%(product_ids)s::bigint[])")


def unfinished(db: peewee.Database, before: datetime) -> int:
    """Jobs recorded before ``before`` that are not terminal yet."""
    with db.connection_context():
        return db.execute_sql("SELECT count(*) FROM jobs WHERE created_at < %s AND status NOT IN"
                              " ('succeeded', 'failed')", (before,)).fetchone()[0]


def settle(db: peewee.Database, seconds: float, before: datetime) -> int:
    """Wait up to ``seconds`` for the jobs recorded before ``before`` to finish; how many
    are still unfinished."""
    deadline = time.monotonic() + seconds
    while (left := unfinished(db, before)) and time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    return left


def check(db: peewee.Database, hold_limit: int, settle_seconds: float = 0,
          initial_stock: Mapping[int, int] | None = None) -> list[Outcome]:
    """Every invariant's outcome, read in one snapshot.

    Unfinished jobs count when recorded ``RUNNING_GRACE`` before the check began or, with
    ``settle_seconds``, when recorded before it began and still unfinished after waiting
    that long for them. ``initial_stock`` (``{product_id: units}``) enables the stock rule.
    """
    began = utcnow()
    cutoff = began - RUNNING_GRACE
    if settle_seconds > 0:
        settle(db, settle_seconds, began)
        cutoff = began
    stock = dict(initial_stock or {})
    params = {"cutoff": cutoff, "now": utcnow(), "hold_limit": hold_limit,
              "product_ids": list(stock), "initial_stock": list(stock.values())}
    rules = INVARIANTS + ([STOCK] if initial_stock is not None else [])
    with db.connection_context(), db.atomic(isolation_level="REPEATABLE READ, READ ONLY"):
        outcomes = [_run(db, rule, params) for rule in rules]
    if initial_stock is None:
        outcomes.append(Outcome(STOCK.name, None, 0, [],
                                "initial stock is not stored; the soak checks it"))
    return outcomes


def _run(db: peewee.Database, rule: Invariant, params: dict) -> Outcome:
    offenders = [row[0] for row in db.execute_sql(rule.offenders, params).fetchall()]
    examined = db.execute_sql(rule.examined, params).fetchone()[0]
    return Outcome(rule.name, not offenders, examined, offenders)


def report(outcomes: list[Outcome]) -> tuple[str, bool]:
    """The lines to print, and whether every checked invariant holds."""
    return "\n".join(o.line() for o in outcomes), all(o.ok is not False for o in outcomes)
