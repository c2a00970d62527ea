"""Opaque list cursors and keyset pages: ``?limit=&cursor=``.

A cursor is the sort key of the last item of a page, as compact JSON in URL-safe
base64. It is decoded with msgspec into the exact shape the list expects (a tuple of
typed, bounded values), so anything else (garbage, another list's cursor, deep nesting,
numbers past any bound, dates at the calendar's edges) is one 400, never a 500.
"""

from __future__ import annotations

import binascii
from datetime import datetime
from typing import Annotated, Any, TypeVar

import msgspec
import peewee

from jobs.errors import InvalidRequest

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_CURSOR = 512
T = TypeVar("T")

Id = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
"""A row id inside a cursor."""
Moment = Annotated[datetime, msgspec.Meta(tz=False)]
"""A stored (naive UTC) time inside a cursor."""

_encode = msgspec.json.Encoder().encode


def encode_cursor(*parts: Any) -> str:
    """Pack the sort key of the last item of a page."""
    return binascii.b2a_base64(_encode(parts), newline=False).decode().translate(
        _URLSAFE).rstrip("=")


_URLSAFE = str.maketrans("+/", "-_")
_STANDARD = str.maketrans("-_", "+/")


def decode_cursor(cursor: str | None, shape: type[T]) -> T | None:
    """Unpack a cursor from :func:`encode_cursor` as ``shape`` (a tuple type); 400 otherwise."""
    if cursor is None:
        return None
    try:
        if len(cursor) > MAX_CURSOR or not cursor.isascii():
            raise ValueError(cursor)
        raw = binascii.a2b_base64(cursor.translate(_STANDARD) + "=" * (-len(cursor) % 4),
                                  strict_mode=True)
        return msgspec.json.decode(raw, type=shape)
    except (ValueError, binascii.Error, msgspec.DecodeError, RecursionError):
        raise InvalidRequest({"cursor": "is not a cursor this list gave out"}) from None


def page(items: list[Any], limit: int, key) -> tuple[list[Any], str | None]:
    """Cut a ``limit + 1`` fetch to ``limit`` items and the cursor of the next page."""
    if len(items) <= limit:
        return items, None
    items = items[:limit]
    return items, encode_cursor(*key(items[-1]))


def keyset_page(query: peewee.Select, fields: tuple[peewee.Field, ...], shape: type,
                limit: int, cursor: str | None, newest_first: bool = False):
    """One page of ``query`` in the order of ``fields`` (a unique key, such as
    ``(created_at, id)``), after the cursor's key: ``(rows, next_cursor)``.

    Keyset paging never repeats or skips a row that existed when paging began, however
    many rows are added meanwhile (a new row sorts before the cursor, or after it).
    """
    after = decode_cursor(cursor, shape)
    if after is not None:
        key = peewee.Tuple(*fields)
        bound = peewee.Tuple(*(f.db_value(v) for f, v in zip(fields, after, strict=True)))
        query = query.where(key < bound if newest_first else key > bound)
    order = [f.desc() if newest_first else f.asc() for f in fields]
    rows = list(query.order_by(*order).limit(limit + 1))
    return page(rows, limit, lambda row: tuple(getattr(row, f.name) for f in fields))


def id_page(query, id_field, limit: int, cursor: str | None, newest_first: bool = False):
    """One page of ``query`` keyed by an integer id: ``(rows, next_cursor)``."""
    return keyset_page(query, (id_field,), tuple[Id], limit, cursor, newest_first)
