"""Time, injected: every rule that reads the time takes a ``now`` from a Clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def utcnow() -> datetime:
    """Naive UTC now (the storage convention of every timestamp column)."""
    return datetime.now(UTC).replace(tzinfo=None)


def unix(moment: datetime) -> float:
    """A stored (naive UTC) time as Unix seconds."""
    return moment.replace(tzinfo=UTC).timestamp()


def from_unix(seconds: float) -> datetime:
    """Unix seconds as a stored (naive UTC) time."""
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


class Clock:
    """The real clock."""

    def now(self) -> datetime:
        """The current naive UTC time."""
        return utcnow()


class FixedClock(Clock):
    """A clock that tests set and move by hand."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        """The time the test set."""
        return self.at

    def advance(self, **delta: float) -> None:
        """Move the clock forward, e.g. ``advance(minutes=5)``."""
        self.at += timedelta(**delta)


def iso(dt: datetime | None) -> str | None:
    """ISO 8601 with an explicit UTC offset, as the API shows times."""
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC).isoformat(timespec="milliseconds")
