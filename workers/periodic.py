"""The one actor every scheduled task arrives through: ``periodic(schedule_id, slot)``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from jobs import records, sweeps
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


TASKS: dict[str, Task] = {
    "jobs.resend": resend_unsent,
    "ledger.prune": prune_ledger,
}


def run_periodic(schedule_id: str, slot: int) -> str:
    """Run ``schedule_id`` for ``slot`` unless that slot already ran; returns the outcome."""
    rt = runtime.current()
    task = TASKS.get(schedule_id)
    extra = {"schedule_id": schedule_id, "slot": slot}
    if task is None:
        log.error("unknown periodic task", extra=extra)
        return "unknown"
    with rt.database.connection_context(), rt.database.atomic():
        if not sweeps.claim_slot(schedule_id, slot, rt.clock.now()):
            log.info("periodic slot already ran", extra=extra)
            return "duplicate"
        result = task(rt)
    log.debug("periodic ran", extra=extra | result)
    return "ran"

