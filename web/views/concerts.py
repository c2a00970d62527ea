"""Concert reservation behind the waiting room: queue tokens, concerts, seats, reservations."""

from __future__ import annotations

import re
from datetime import date

from aiohttp import web

from jobs import concerts
from jobs.clock import iso, utcnow
from jobs.errors import DomainError, InvalidRequest
from web.auth import TOKENS, require_admin, require_user
from web.commands import DB, GATEWAY
from web.responses import json_response
from web.validation import Anything, Int, Str, page_params, path_id, read_body, read_json, validate
from workers.waiting_room import WaitingRoom

ROOM = web.AppKey("waiting_room", WaitingRoom)
JOIN = {"concert_id": Int(1, 2**53)}
RESERVE = {"concert_id": Int(1, 2**53), "date": Str(10, 10), "seat_no": Int(1, 50)}
NEW_CONCERT = {"title": Str(1, 200), "dates": Anything()}
NEW_DATE = {"date": Str(10, 10), "seat_price": Int(0, 100_000_000)}
MAX_DATES = 60


_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def strict_day(value: str) -> date | None:
    """A ``YYYY-MM-DD`` date, or None (``date.fromisoformat`` also takes week dates)."""
    if not _DAY.fullmatch(value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def parse_day(value: str, field: str) -> date:
    """A ``YYYY-MM-DD`` date from a body field; 400 otherwise."""
    day = strict_day(value)
    if day is None:
        raise InvalidRequest({field: "must be a date, YYYY-MM-DD"})
    return day


def _queue_claims(request: web.Request, user_id: int) -> dict:
    token = request.headers.get("Queue-Token", "")
    if not token:
        raise DomainError("QUEUE_TOKEN_INVALID", "a Queue-Token header is required",
                          status=401)
    try:
        claims = request.app[TOKENS].decode(token, "queue")
    except DomainError as e:
        if e.code == "TOKEN_EXPIRED":
            raise DomainError("QUEUE_TOKEN_EXPIRED", "the queue token has expired",
                              status=410) from None
        raise DomainError("QUEUE_TOKEN_INVALID", "the queue token is not valid",
                          status=401) from None
    if int(claims["sub"]) != user_id or not isinstance(claims.get("cid"), int):
        raise DomainError("QUEUE_TOKEN_INVALID", "this queue token is not yours", status=401)
    return claims | {"token": token}


async def require_active(request: web.Request, concert_id: int | None) -> tuple[int, int]:
    """The user and the concert of an ACTIVE queue token (for ``concert_id``, if given)."""
    user_id = await require_user(request)
    claims = _queue_claims(request, user_id)
    if concert_id is not None and claims["cid"] != concert_id:
        raise DomainError("QUEUE_TOKEN_NOT_ACTIVE", "this queue token is for another concert",
                          status=403)
    room = request.app[ROOM]
    place = room.parse_status(await room.status(claims["cid"], user_id, claims["token"],
                                                utcnow()))
    if place.status == "EXPIRED":
        raise DomainError("QUEUE_TOKEN_EXPIRED", "the queue token has expired", status=410)
    if place.status != "ACTIVE":
        raise DomainError("QUEUE_TOKEN_NOT_ACTIVE", "still waiting in line", status=403)
    return user_id, claims["cid"]


async def take_token(request: web.Request) -> web.Response:
    """``POST /queue/tokens``: 201 with a new place in line, 200 with the one already held."""
    user_id = await require_user(request)
    body = await read_json(request, JOIN)
    room = request.app[ROOM]
    # A concert that already has a line exists; only a new one costs a database read.
    if not await room.client.sismember(room.concerts_key, body["concert_id"]):
        await request.app[DB](concerts.require_concert, body["concert_id"])
    token = request.app[TOKENS].issue_queue_token(user_id, body["concert_id"])
    place = room.parse_join(await room.join(body["concert_id"], user_id, token, utcnow()))
    return json_response({"token": place.token, "status": place.status,
                          "position": place.position, "active_until": iso(place.active_until)},
                         201 if place.created else 200)


async def my_place(request: web.Request) -> web.Response:
    """``GET /queue/tokens/me``: status, position and estimated wait (changes no one's place)."""
    user_id = await require_user(request)
    claims = _queue_claims(request, user_id)
    room = request.app[ROOM]
    place = room.parse_status(await room.status(claims["cid"], user_id, claims["token"],
                                                utcnow(), touch=True))
    if place.status == "EXPIRED":
        raise DomainError("QUEUE_TOKEN_EXPIRED", "the queue token has expired", status=410)
    return json_response({"status": place.status, "position": place.position,
                          "estimated_wait_seconds": room.estimated_wait(place),
                          "active_until": iso(place.active_until)})


async def list_concerts(request: web.Request) -> web.Response:
    """``GET /concerts``."""
    limit, cursor = page_params(request)
    return json_response(await request.app[DB](concerts.list_concerts, limit, cursor))


async def dates(request: web.Request) -> web.Response:
    """``GET /concerts/{id}/dates``: dates with seats left (ACTIVE token)."""
    concert_id = path_id(request, "concert_id", "CONCERT_NOT_FOUND")
    await require_active(request, concert_id)
    return json_response(await request.app[DB](concerts.available_dates, concert_id, utcnow()))


async def seats(request: web.Request) -> web.Response:
    """``GET /concerts/{id}/dates/{date}/seats`` (ACTIVE token)."""
    concert_id = path_id(request, "concert_id", "CONCERT_NOT_FOUND")
    await require_active(request, concert_id)
    day = strict_day(request.match_info["date"])
    if day is None:
        raise DomainError("SCHEDULE_NOT_FOUND", "the concert has no such date")
    return json_response(await request.app[DB](concerts.seats, concert_id, day, utcnow()))


async def reserve(request: web.Request) -> web.Response:
    """``POST /reservations`` -> job ``concert.reserve`` (ACTIVE token for that concert)."""
    body = await read_json(request, RESERVE)
    day = parse_day(body["date"], "date")
    user_id, _ = await require_active(request, body["concert_id"])
    payload = {"concert_id": body["concert_id"], "date": day.isoformat(),
               "seat_no": body["seat_no"]}
    return await request.app[GATEWAY].submit(request, user_id, "concert.reserve", payload)


async def pay(request: web.Request) -> web.Response:
    """``POST /reservations/{id}/payment`` -> job ``concert.pay`` (ACTIVE token)."""
    reservation_id = path_id(request, "reservation_id", "RESERVATION_NOT_FOUND")
    await read_json(request, {})
    user_id, concert_id = await require_active(request, None)
    held_for = await request.app[DB](concerts.reservation_concert, user_id, reservation_id)
    if held_for is not None and held_for != concert_id:
        raise DomainError("QUEUE_TOKEN_NOT_ACTIVE", "this queue token is for another concert",
                          status=403)
    return await request.app[GATEWAY].submit(
        request, user_id, "concert.pay",
        {"reservation_id": reservation_id, "concert_id": concert_id})


async def create_concert(request: web.Request) -> web.Response:
    """``POST /admin/concerts`` (admin): a concert with dates of 50 seats."""
    await require_admin(request)
    body = validate(await read_body(request), NEW_CONCERT)
    lines = body["dates"]
    if not isinstance(lines, list) or not 1 <= len(lines) <= MAX_DATES:
        raise InvalidRequest({"dates": f"must be a list of 1..{MAX_DATES} dates"})
    parsed, problems = [], {}
    for n, line in enumerate(lines):
        try:
            validate(line, NEW_DATE)
            parsed.append((parse_day(line["date"], "date"), line["seat_price"]))
        except InvalidRequest as e:
            problems |= {f"dates[{n}].{k}": v for k, v in e.fields.items()}
    if problems:
        raise InvalidRequest(problems)
    if len({d for d, _ in parsed}) != len(parsed):
        raise InvalidRequest({"dates": "each date may appear once"})
    concert = await request.app[DB](concerts.create_concert, body["title"], parsed, utcnow())
    return json_response(concert, 201)
