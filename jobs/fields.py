"""Bounded field types shared by command payloads (here) and request bodies (``web``), and
the bounds of the domains' settings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from jobs.errors import InvalidRequest


def whole(regex: str) -> str:
    """A pattern the whole string must match (``$`` alone would allow a trailing newline)."""
    return f"^(?:{regex})(?![\\s\\S])"


NO_NUL = "[^\\x00]*"
"""Any text but NUL, which PostgreSQL cannot store (it would be a 500, not a 400)."""


def Text(lo: int, hi: int, regex: str | None = None, description: str | None = None) -> Any:
    """A string of ``lo..hi`` characters matching ``regex`` whole (by default: no NUL)."""
    return Annotated[str, msgspec.Meta(min_length=lo, max_length=hi,
                                       pattern=whole(regex or NO_NUL),
                                       description=description)]


def Int(lo: int, hi: int) -> Any:
    """An integer in ``lo..hi`` (JSON booleans are not integers)."""
    return Annotated[int, msgspec.Meta(ge=lo, le=hi)]


Positive = Annotated[int, msgspec.Meta(ge=1)]
"""A domain setting that must be at least 1: an interval, a time to live, a limit."""

Count = Annotated[int, msgspec.Meta(ge=0)]
"""A domain setting that may be 0."""


def naive_utc(moment: datetime, field: str) -> datetime:
    """An aware time from a request as the naive UTC the database stores; a time whose
    UTC falls outside the calendar (``0001-01-01T00:00+23:59``) is the field's 400."""
    try:
        return moment.astimezone(UTC).replace(tzinfo=None)
    except (OverflowError, ValueError):
        raise InvalidRequest({field: "is outside the calendar"}) from None
