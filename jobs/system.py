"""The platform's own periodic work: re-sending unsent jobs, the run ledger, the outbox relay.

Each handler runs inside the lifecycle's transaction and only touches the database;
what must reach Redis, the broker or the data platform is emitted and done after the
commit by this domain's reactions.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import msgspec

from db.models import Job, OutboxEvent, PeriodicRun
from jobs import outbox, records, sweeps
from jobs.fields import Positive
from jobs.platform import Context, Domain, Event, Periodic

log = logging.getLogger(__name__)


class SystemSettings(msgspec.Struct, frozen=True):
    """The platform's sweeps (``RESEND_INTERVAL`` ...) and where paid orders go."""

    resend_interval: Positive = 5
    job_resend_after: Positive = 10
    outbox_interval: Positive = 1
    data_platform_url: str | None = None


def resend_unsent(ctx: Context) -> dict:
    """Find jobs whose message may never have reached the broker; re-send them after commit.

    A missing broker epoch means Redis lost its data (it keeps nothing on disk), and with
    it every queued message: then every unfinished job counts as unsent. The epoch is set
    again only after this transaction commits, so a rollback cannot lose the re-send.
    """
    rt, forgotten = ctx.services, 0
    if not rt.broker_epoch.exists():
        forgotten = sweeps.forget_sends()
        ctx.emit("broker.epoch_lost", {"forgotten": forgotten})
    pending = sweeps.unsent_jobs(ctx.now, rt.config["system"].job_resend_after)
    if pending:
        ctx.emit("jobs.unsent", {"jobs": [[str(job_id), job_type] for job_id, job_type in pending]})
    return {"resent": len(pending), "forgotten": forgotten}


def renew_epoch(ctx: Context, event: Event) -> None:
    """After the unfinished jobs were marked unsent: the broker's data is known again."""
    log.warning("broker epoch was lost: unfinished jobs re-sent", extra=event.data)
    ctx.services.broker_epoch.renew(ctx.now)


def send_unsent(ctx: Context, event: Event) -> None:
    """Send the jobs found unsent, then mark them sent (in this reaction's transaction)."""
    pending = [tuple(pair) for pair in event.data["jobs"]]
    ctx.services.send_jobs(pending)
    records.mark_sent([job_id for job_id, _ in pending])
    log.info("jobs re-sent", extra={"jobs": len(pending)})


def prune_ledger(ctx: Context) -> dict:
    """Forget periodic runs older than a day."""
    return {"pruned": sweeps.prune_runs(ctx.now - timedelta(days=1))}


def claim_outbox(ctx: Context) -> dict:
    """Lease the due outbox events; they are delivered once this lease has committed."""
    claimed = outbox.claim_due(ctx.now)
    if claimed:
        ctx.emit("outbox.claimed", {"ids": [event.id for event in claimed]})
    return {"claimed": len(claimed)}


def deliver_claimed(ctx: Context, event: Event) -> dict:
    """Deliver leased events to the sink; record each outcome (retry later, or DEAD)."""
    delivered = failed = 0
    for row in outbox.leased(event.data["ids"]):
        try:
            ctx.services.sink.deliver(row.id, row.topic, row.payload)
        except Exception as e:
            status = outbox.record_failed(row, f"{type(e).__name__}: {e}", ctx.now)
            log.warning("outbox delivery failed",
                        extra={"event_id": row.id, "reason": str(e), "status": status})
            failed += 1
        else:
            outbox.record_delivered(row.id, ctx.now)
            delivered += 1
    return {"delivered": delivered, "failed": failed}


DOMAIN = Domain(
    name="system",
    periodic=(
        Periodic("jobs.resend", resend_unsent, every="resend_interval"),
        Periodic("ledger.prune", prune_ledger, cron="17 * * * *"),
        Periodic("outbox.deliver", claim_outbox, every="outbox_interval"),
    ),
    reactions={
        "broker.epoch_lost": renew_epoch,
        "jobs.unsent": send_unsent,
        "outbox.claimed": deliver_claimed,
    },
    live_topics=frozenset({"job"}),
    models=(Job, PeriodicRun, OutboxEvent),
    settings=SystemSettings,
)
