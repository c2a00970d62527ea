"""Request and response shapes shared by every domain (and the OpenAPI built from them)."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec

from jobs.fields import NO_NUL, Int, Text, whole  # noqa: F401  (the views take them from here)

T = TypeVar("T")


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
