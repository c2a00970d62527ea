"""One thin actor per command: load the job, call one function in ``jobs/``.

Importing this module declares the actors on the global broker, so only
``workers.bootstrap.start`` imports it, after building that broker.
"""

from __future__ import annotations

import dramatiq

from db.models import Job
from jobs import points
from workers.broker import SWEEPS_QUEUE
from workers.lifecycle import command
from workers.periodic import run_periodic
from workers.runtime import Runtime


@command("points.charge")
def charge_points(job: Job, rt: Runtime) -> dict:
    """``points.charge``: add ``amount`` points to the job owner's balance."""
    return points.charge(job.user_id, job.payload["amount"], f"job:{job.id}", rt.clock.now())


@dramatiq.actor(actor_name="periodic", queue_name=SWEEPS_QUEUE, max_retries=0)
def periodic(schedule_id: str, slot: int) -> None:
    """Scheduled work, sent by the scheduler as ``(schedule_id, slot)``."""
    run_periodic(schedule_id, slot)
