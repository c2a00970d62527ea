"""The outbox: events for the data platform, written in the transaction that caused them.

Delivery is at least once: a batch is claimed with a lease in one transaction (so a
crashed deliverer's events come back), delivered after that commit, then recorded. Failures retry
after 1 s, 10 s and 60 s; an event that still fails is DEAD until replayed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from peewee import fn

from db.connection import execute, for_update
from db.models import OutboxEvent

BACKOFF = (1, 10, 60)  # seconds before the 2nd, 3rd and 4th attempt
LEASE = timedelta(seconds=30)
PENDING, DELIVERED, DEAD = "PENDING", "DELIVERED", "DEAD"


def add_event(topic: str, payload: dict, now: datetime) -> None:
    """Inside the caller's transaction: queue an event for delivery."""
    execute(*insert_events([(topic, payload)], now))


def insert_events(events: list[tuple[str, dict]], now: datetime) -> tuple[str, tuple]:
    """The statement (and its parameters) that queues ``(topic, payload)`` events."""
    rows = ", ".join(["(%s, %s, %s, 0, %s, %s)"] * len(events))
    params = tuple(v for topic, payload in events
                   for v in (topic, OutboxEvent.payload.db_value(payload), PENDING, now, now))
    return ("INSERT INTO outbox_events (topic, payload, status, attempts, next_attempt_at,"
            f" created_at) VALUES {rows}", params)


def claim_due(now: datetime, limit: int = 100) -> list[OutboxEvent]:
    """Take up to ``limit`` due events for ``LEASE``; others skip them meanwhile."""
    due = for_update(
        OutboxEvent.select(OutboxEvent.id)
        .where((OutboxEvent.status == PENDING) & (OutboxEvent.next_attempt_at <= now))
        .order_by(OutboxEvent.id).limit(limit),
        skip_locked=True,
    )
    return list(
        OutboxEvent.update(next_attempt_at=now + LEASE)
        .where(OutboxEvent.id.in_(due))
        .returning(OutboxEvent)
        .execute()
    )


def leased(event_ids: list[int]) -> list[OutboxEvent]:
    """The leased events, still pending, in id order."""
    return list(OutboxEvent.select()
                .where(OutboxEvent.id.in_(event_ids) & (OutboxEvent.status == PENDING))
                .order_by(OutboxEvent.id))


def record_delivered(event_id: int, now: datetime) -> None:
    """The sink took the event."""
    (OutboxEvent.update(status=DELIVERED, delivered_at=now, attempts=OutboxEvent.attempts + 1,
                        last_error=None)
     .where(OutboxEvent.id == event_id).execute())


def record_failed(event: OutboxEvent, error: str, now: datetime) -> str:
    """The sink refused or failed: schedule the next attempt, or give up (DEAD)."""
    attempts = event.attempts + 1
    if attempts > len(BACKOFF):
        status, next_at = DEAD, now
    else:
        status, next_at = PENDING, now + timedelta(seconds=BACKOFF[attempts - 1])
    (OutboxEvent.update(status=status, attempts=attempts, next_attempt_at=next_at,
                        last_error=error[:2000])
     .where(OutboxEvent.id == event.id).execute())
    return status


def replay_dead(now: datetime) -> int:
    """Give every DEAD event a fresh round of attempts."""
    return (OutboxEvent.update(status=PENDING, attempts=0, next_attempt_at=now)
            .where(OutboxEvent.status == DEAD).execute())


def counts() -> dict[str, int]:
    """Events per status, every status named (0 when none)."""
    rows = (OutboxEvent.select(OutboxEvent.status, fn.COUNT(OutboxEvent.id))
            .group_by(OutboxEvent.status).tuples())
    return {DEAD: 0, DELIVERED: 0, PENDING: 0} | dict(rows)
