"""The one actor every scheduled task arrives through: ``periodic(schedule_id, slot)``."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import timedelta

from jobs import bestsellers, concerts, orders, outbox, records, sweeps
from workers import runtime
from workers.broker import send_job

log = logging.getLogger(__name__)

Task = Callable[["runtime.Runtime"], dict]


def resend_unsent(rt: runtime.Runtime) -> dict:
    """Re-send jobs whose message may never have reached the broker.

    A missing epoch key means Redis lost its data (it keeps nothing on disk), and with
    it every queued message: then every unfinished job is sent again.
    """
    now = rt.clock.now()
    epoch_key = f"{rt.settings.redis_prefix}:broker-epoch"
    if rt.redis.set(epoch_key, now.isoformat(), nx=True):
        forgotten = sweeps.forget_sends()
        log.warning("broker epoch is new: re-sending unfinished jobs", extra={"jobs": forgotten})
    pending = sweeps.unsent_jobs(now, rt.settings.job_resend_after)
    for job_id, job_type in pending:
        send_job(rt.broker, job_id, job_type)
    records.mark_sent([job_id for job_id, _ in pending])
    if pending:
        log.info("jobs re-sent", extra={"jobs": len(pending)})
    return {"resent": len(pending)}


def prune_ledger(rt: runtime.Runtime) -> dict:
    """Forget periodic runs older than a day."""
    return {"pruned": sweeps.prune_runs(rt.clock.now() - timedelta(days=1))}


def expire_orders(rt: runtime.Runtime) -> dict:
    """Expire unpaid orders past their deadline."""
    return {"expired": orders.expire_unpaid_orders(rt.clock.now())}


def best_sellers_key(prefix: str) -> str:
    """Where the cached best-seller ranking lives."""
    return f"{prefix}:products:best"


def aggregate_sales(rt: runtime.Runtime) -> dict:
    """Recount daily sales and refresh the cached ranking."""
    ranking = bestsellers.aggregate_sales(rt.clock.now())
    rt.redis.set(best_sellers_key(rt.settings.redis_prefix), json.dumps(ranking))
    return {"ranked": len(ranking)}


def deliver_outbox(rt: runtime.Runtime) -> dict:
    """Deliver due outbox events to the sink; failures are rescheduled or end DEAD."""
    delivered = failed = 0
    for event in outbox.claim_due(rt.clock.now()):
        try:
            rt.sink.deliver(event.id, event.topic, event.payload)
        except Exception as e:
            status = outbox.record_failed(event, f"{type(e).__name__}: {e}", rt.clock.now())
            log.warning("outbox delivery failed",
                        extra={"event_id": event.id, "reason": str(e), "status": status})
            failed += 1
        else:
            outbox.record_delivered(event.id, rt.clock.now())
            delivered += 1
    return {"delivered": delivered, "failed": failed}


def promote_queues(rt: runtime.Runtime) -> dict:
    """Move every concert's line: end expired actives, drop idle waiters, promote."""
    room, promoted = rt.waiting_room, 0
    for concert_id in rt.redis.smembers(room.concerts_key):
        promoted += int(room.promote(int(concert_id), rt.clock.now())[0])
    return {"promoted": promoted}


def expire_holds(rt: runtime.Runtime) -> dict:
    """Release seat holds past their 5 minutes."""
    return {"released": concerts.expire_holds(rt.clock.now())}


TASKS: dict[str, Task] = {
    "jobs.resend": resend_unsent,
    "ledger.prune": prune_ledger,
    "orders.expire": expire_orders,
    "sales.aggregate": aggregate_sales,
    "outbox.deliver": deliver_outbox,
    "queue.promote": promote_queues,
    "concerts.expire_holds": expire_holds,
}


def run_periodic(schedule_id: str, slot: int) -> str:
    """Run ``schedule_id`` for ``slot`` unless that slot already ran; returns the outcome."""
    rt = runtime.current()
    task = TASKS.get(schedule_id)
    extra = {"schedule_id": schedule_id, "slot": slot}
    if task is None:
        log.error("unknown periodic task", extra=extra)
        return "unknown"
    with rt.database.connection_context():
        with rt.database.atomic():
            claimed = sweeps.claim_slot(schedule_id, slot, rt.clock.now())
        if not claimed:
            log.info("periodic slot already ran", extra=extra)
            return "duplicate"
        # The task makes its own transactions; a crash mid-way leaves it to the next slot.
        result = task(rt)
    log.debug("periodic ran", extra=extra | result)
    return "ran"

