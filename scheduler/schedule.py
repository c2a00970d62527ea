"""What runs periodically, from every domain's declarations, under stable ids (a restart
or a second instance upserts them)."""

from __future__ import annotations

from dataclasses import dataclass

from db.settings import Settings
from jobs.platform import REGISTRY, load_domains


@dataclass(frozen=True)
class Entry:
    """A periodic task: every ``interval`` seconds, or on a UTC ``cron`` line."""

    id: str
    interval: int | None = None
    cron: str | None = None


def schedule_table(settings: Settings) -> list[Entry]:
    """The schedule of this deployment: every registered periodic task."""
    load_domains()
    return [Entry(task.id, interval=REGISTRY.interval(task, settings), cron=task.cron)
            for task in REGISTRY.periodic.values()]
