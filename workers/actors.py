"""The actors, generated from the registry: one per command, and one for periodic work.

Each actor is thin: it hands the job id (or the schedule slot) to the lifecycle, which
loads the job, decodes its payload with the command's schema and runs its handler.
"""

from __future__ import annotations

import dramatiq

from jobs.platform import REGISTRY
from workers.broker import COMMANDS_QUEUE, SWEEPS_QUEUE
from workers.lifecycle import execute_job, run_periodic


def _command_actor(job_type: str, doc: str) -> None:
    def run(job_id: str, user_id: int | None = None, payload: dict | None = None) -> None:
        execute_job(job_id, job_type=job_type, user_id=user_id, payload=payload)

    run.__name__ = run.__qualname__ = job_type.replace(".", "_")
    run.__doc__ = doc
    dramatiq.actor(run, actor_name=job_type, queue_name=COMMANDS_QUEUE)


def periodic(schedule_id: str, slot: int) -> None:
    """Scheduled work, sent by the scheduler as ``(schedule_id, slot)``."""
    run_periodic(schedule_id, slot)


def declare_actors(broker: dramatiq.Broker) -> None:
    """Declare an actor on ``broker`` for every registered command not declared yet."""
    for job_type, command in REGISTRY.commands.items():
        if job_type not in broker.actors:
            _command_actor(job_type, command.summary)
    if "periodic" not in broker.actors:
        dramatiq.actor(periodic, actor_name="periodic", queue_name=SWEEPS_QUEUE)
