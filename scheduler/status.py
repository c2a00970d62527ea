"""What the scheduler is doing, read from Redis: which instance dispatches, and when each
schedule is next due."""

from __future__ import annotations

from typing import Any

from db.settings import Settings
from scheduler.bridge import DramatiqScheduler, active_key, scheduled_jobs_key
from scheduler.schedule import schedule_table


async def schedule_status(client: Any, prefix: str, settings: Settings) -> dict:
    """``{"active": name or None, "next_due": {schedule_id: unix_seconds}}`` on an asyncio
    ``client``, in one round trip. ``active`` names the scheduler that held the lock within
    the last few ticks; a schedule not (yet) registered in Redis is left out."""
    schedule_ids = {DramatiqScheduler.job_id(e): e.id for e in schedule_table(settings)}
    pipe = client.pipeline(transaction=False)
    pipe.get(active_key(prefix))
    pipe.zrange(scheduled_jobs_key(prefix), 0, -1, withscores=True)
    active, due = await pipe.execute()
    next_due = {}
    for job_id, score in due:
        job_id = job_id.decode() if isinstance(job_id, bytes) else job_id
        if job_id in schedule_ids:
            next_due[schedule_ids[job_id]] = int(score)
    return {"active": active.decode() if isinstance(active, bytes) else active,
            "next_due": next_due}
