"""Request validation: every field typed and bounded, unknown fields refused."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from jobs.errors import DomainError, InvalidRequest
from jobs.pagination import DEFAULT_LIMIT, MAX_LIMIT


@dataclass(frozen=True)
class Field:
    """One expected field: its type, bounds and whether it may be left out."""

    kind: type
    required: bool = True
    min: int | None = None
    max: int | None = None
    pattern: re.Pattern[str] | None = None
    hint: str = ""

    def check(self, value: Any) -> str | None:
        """What is wrong with ``value``, or None."""
        if self.kind is int and (not isinstance(value, int) or isinstance(value, bool)):
            return "must be an integer"
        if self.kind is bool and not isinstance(value, bool):
            return "must be true or false"
        if self.kind is str:
            if not isinstance(value, str):
                return "must be a string"
            size = len(value)
            if (self.min is not None and size < self.min) or (
                self.max is not None and size > self.max
            ):
                return f"must be {self.min}..{self.max} characters"
            if self.pattern is not None and not self.pattern.fullmatch(value):
                return self.hint or "has an invalid format"
            return None
        too_small = self.min is not None and value < self.min
        too_big = self.max is not None and value > self.max
        if self.kind is int and (too_small or too_big):
            return f"must be between {self.min:,} and {self.max:,}"
        return None


def Int(lo: int, hi: int, required: bool = True) -> Field:
    """An integer in ``lo..hi`` (booleans are not integers here)."""
    return Field(int, required, lo, hi)


def Str(
    lo: int, hi: int, pattern: str | None = None, hint: str = "", required: bool = True
) -> Field:
    """A string of ``lo..hi`` characters, optionally matching ``pattern``."""
    return Field(str, required, lo, hi, re.compile(pattern) if pattern else None, hint)


def Bool(required: bool = True) -> Field:
    """A JSON boolean."""
    return Field(bool, required)


def Anything(required: bool = True) -> Field:
    """Any JSON value (the caller checks it further)."""
    return Field(object, required)


def validate(data: Any, schema: dict[str, Field]) -> dict[str, Any]:
    """Check a decoded JSON body against ``schema``; 400 naming every offending field."""
    if not isinstance(data, dict):
        raise InvalidRequest({"body": "must be a JSON object"})
    problems = {name: "is not a known field" for name in data if name not in schema}
    for name, field in schema.items():
        if name not in data:
            if field.required:
                problems[name] = "is required"
        elif (problem := field.check(data[name])) is not None:
            problems[name] = problem
    if problems:
        raise InvalidRequest(problems)
    return data


async def read_body(request: web.Request) -> Any:
    """Read and decode the JSON body (an empty body counts as ``{}``)."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest({"body": "is not valid JSON"}, "malformed JSON") from None


async def read_json(request: web.Request, schema: dict[str, Field]) -> dict[str, Any]:
    """Read, decode and validate the JSON body against ``schema``."""
    return validate(await read_body(request), schema)


def page_params(request: web.Request) -> tuple[int, str | None]:
    """``?limit=`` (1..100, default 20) and ``?cursor=``."""
    raw = request.query.get("limit")
    limit = DEFAULT_LIMIT
    if raw is not None:
        limit = query_int(raw, "limit", 1, MAX_LIMIT)
    return limit, request.query.get("cursor") or None


_DIGITS = re.compile(r"[0-9]{1,9}")


def query_int(raw: str, name: str, lo: int, hi: int) -> int:
    """A query parameter that must be a plain (ASCII) integer in ``lo..hi``."""
    if not _DIGITS.fullmatch(raw) or not lo <= int(raw) <= hi:
        raise InvalidRequest({name: f"must be an integer between {lo} and {hi}"})
    return int(raw)


def query_choice(request: web.Request, name: str, choices: set[str]) -> str | None:
    """An optional query parameter restricted to ``choices``."""
    value = request.query.get(name)
    if value is not None and value not in choices:
        raise InvalidRequest({name: f"must be one of {', '.join(sorted(choices))}"})
    return value


MAX_ID = 2**63 - 1


def path_id(request: web.Request, name: str, not_found: str) -> int:
    """A numeric id from the path; anything else is the resource's 404."""
    raw = request.match_info[name]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19):
        raise DomainError(not_found, "no such resource")
    value = int(raw)
    if not 1 <= value <= MAX_ID:
        raise DomainError(not_found, "no such resource")
    return value


def parse_time(value: str, name: str) -> datetime:
    """An ISO 8601 time with an offset, as naive UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest({name: "must be an ISO 8601 time with an offset"}) from None
    if parsed.tzinfo is None:
        raise InvalidRequest({name: "must include a UTC offset"})
    return parsed.astimezone(UTC).replace(tzinfo=None)
