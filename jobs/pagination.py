"""Opaque list cursors: ``?limit=&cursor=`` pages, newest first."""

from __future__ import annotations

import base64
import json
from typing import Any

from jobs.errors import InvalidRequest

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def encode_cursor(*parts: Any) -> str:
    """Pack the sort key of the last item of a page."""
    raw = json.dumps(parts, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, arity: int) -> list[Any] | None:
    """Unpack a cursor from :func:`encode_cursor`, refusing anything else."""
    if cursor is None:
        return None
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        parts = None
    if not isinstance(parts, list) or len(parts) != arity:
        raise InvalidRequest({"cursor": "is not a cursor this list gave out"})
    return parts


def decode_id_cursor(cursor: str | None) -> int | None:
    """Unpack a cursor holding one integer id."""
    parts = decode_cursor(cursor, 1)
    if parts is None:
        return None
    if not isinstance(parts[0], int) or isinstance(parts[0], bool):
        raise InvalidRequest({"cursor": "is not a cursor this list gave out"})
    return parts[0]


def page(items: list[Any], limit: int, key) -> tuple[list[Any], str | None]:
    """Cut a ``limit + 1`` fetch to ``limit`` items and the cursor of the next page."""
    if len(items) <= limit:
        return items, None
    items = items[:limit]
    return items, encode_cursor(*key(items[-1]))


def id_page(query, id_field, limit: int, cursor: str | None, newest_first: bool = False):
    """One page of ``query`` keyed by an integer id: ``(rows, next_cursor)``."""
    after = decode_id_cursor(cursor)
    if after is not None:
        query = query.where(id_field < after if newest_first else id_field > after)
    order = id_field.desc() if newest_first else id_field.asc()
    rows = list(query.order_by(order).limit(limit + 1))
    return page(rows, limit, lambda row: (getattr(row, id_field.name),))
