"""Query strings and path ids: typed, bounded, refused with a reason code."""

from __future__ import annotations

import re

from aiohttp import web

from jobs.errors import DomainError, InvalidRequest
from jobs.pagination import DEFAULT_LIMIT, MAX_LIMIT
from web.routing import Query

PAGING = (Query("limit", int, "1..100, default 20"), Query("cursor", str, "from next_cursor"))


def page_params(request: web.Request) -> tuple[int, str | None]:
    """``?limit=`` (1..100, default 20) and ``?cursor=``."""
    raw = request.query.get("limit")
    limit = DEFAULT_LIMIT
    if raw is not None:
        limit = query_int(raw, "limit", 1, MAX_LIMIT)
    return limit, request.query.get("cursor") or None


_DIGITS = re.compile(r"[0-9]{1,9}")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def refuse_unstorable(request: web.Request) -> None:
    """400 for a query parameter holding NUL or a lone surrogate (what a ``%00`` or an
    invalid UTF-8 escape decodes to): no database or hasher ever sees one. Checked once
    for every request, whatever the handler reads. (Path segments are ids and dates,
    each parsed strictly into its 404.)"""
    for name, value in request.query.items():
        if _UNSTORABLE.search(name) or _UNSTORABLE.search(value):
            raise InvalidRequest({_UNSTORABLE.sub("?", name): "holds a character that is not "
                                  "text (NUL or an invalid escape)"})


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
