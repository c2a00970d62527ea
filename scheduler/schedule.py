"""What runs periodically, under stable ids (a restart or a second instance upserts them)."""

from __future__ import annotations

from dataclasses import dataclass

from db.settings import Settings


@dataclass(frozen=True)
class Entry:
    """A periodic task: every ``interval`` seconds, or on a UTC ``cron`` line."""

    id: str
    interval: int | None = None
    cron: str | None = None


def schedule_table(settings: Settings) -> list[Entry]:
    """The schedule of this deployment."""
    return [
        Entry("jobs.resend", interval=settings.resend_interval),
        Entry("ledger.prune", cron="17 * * * *"),
        Entry("orders.expire", interval=settings.order_expiry_interval),
        Entry("sales.aggregate", interval=settings.sales_interval),
        Entry("outbox.deliver", interval=settings.outbox_interval),
        Entry("queue.promote", interval=settings.queue_promote_interval),
        Entry("concerts.expire_holds", interval=settings.hold_expiry_interval),
    ]
