"""Request and response shapes shared by every domain (and the OpenAPI built from them)."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

import msgspec

T = TypeVar("T")


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


class NoBody(msgspec.Struct, forbid_unknown_fields=True):
    """An empty JSON object (or no body at all)."""


class ErrorDetail(msgspec.Struct):
    """What went wrong: a stable reason code, a human message, the offending fields."""

    code: str
    message: str
    fields: dict[str, str] | None = None


class Error(msgspec.Struct):
    """Every error answer."""

    error: ErrorDetail


class JobError(msgspec.Struct):
    """Why a job failed."""

    code: str
    message: str


class JobBody(msgspec.Struct):
    """A job: the asynchronous outcome of a command."""

    id: str
    type: str
    status: str
    result: dict[str, Any] | None
    error: JobError | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    attempts: int


class Page(msgspec.Struct, Generic[T]):
    """One page of a list; pass ``next_cursor`` as ``?cursor=`` for the next."""

    items: list[T]
    next_cursor: str | None


class Items(msgspec.Struct, Generic[T]):
    """A short list, whole."""

    items: list[T]
