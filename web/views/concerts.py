"""Concert reservation behind the waiting room: queue tokens, concerts, seats, reservations."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated

import msgspec
from aiohttp import web

from jobs import concerts
from jobs.clock import iso, utcnow
from jobs.errors import DomainError, InvalidRequest
from web.auth import TOKENS, Tokens, bearer_user, require_admin, require_user
from web.commands import DB
from web.fastlane import Answer
from web.responses import json_response
from web.routing import Route
from web.schema import decode_body
from web.shapes import Int, Items, Page, Text
from web.validation import PAGING, page_params, path_id
from workers.waiting_room import TurnRoom, WaitingRoom

ROOM = web.AppKey("waiting_room", WaitingRoom)
TURN_ROOM = web.AppKey("waiting_room_turns", TurnRoom)
MAX_DATES = 60


class Join(msgspec.Struct, forbid_unknown_fields=True):
    """The concert to queue for."""

    concert_id: Int(1, 2**53)


class NewDate(msgspec.Struct, forbid_unknown_fields=True):
    """A date of the concert and the price of each of its 50 seats."""

    date: date
    seat_price: Int(0, 100_000_000)


class NewConcert(msgspec.Struct, forbid_unknown_fields=True):
    """A concert with its dates."""

    title: Text(1, 200)
    dates: Annotated[list[NewDate], msgspec.Meta(min_length=1, max_length=MAX_DATES)]

    def __post_init__(self) -> None:
        if len({d.date for d in self.dates}) != len(self.dates):
            raise InvalidRequest({"dates": "each date may appear once"})


class QueuePlace(msgspec.Struct):
    """A place in the waiting room."""

    token: str
    status: str
    position: int
    active_until: str | None


class QueueStatus(msgspec.Struct):
    """Where a queue token stands."""

    status: str
    position: int
    estimated_wait_seconds: int
    active_until: str | None


class ConcertSummary(msgspec.Struct):
    """A concert."""

    id: int
    title: str


class ConcertDate(msgspec.Struct):
    """A date with seats left."""

    date: str
    seat_price: int
    available_seats: int


class Seat(msgspec.Struct):
    """A seat of a date."""

    seat_no: int
    price: int
    status: str


_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def strict_day(value: str) -> date | None:
    """A ``YYYY-MM-DD`` date, or None (``date.fromisoformat`` also takes week dates)."""
    if not _DAY.fullmatch(value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _queue_claims(request: web.Request, user_id: int) -> dict:
    return queue_claims(request.app[TOKENS], request.headers.get("Queue-Token", ""), user_id)


def queue_claims(tokens: Tokens, token: str, user_id: int) -> dict:
    """The verified claims of ``user_id``'s ``Queue-Token`` header (``""``: none was sent)."""
    if not token:
        raise DomainError("QUEUE_TOKEN_INVALID", "a Queue-Token header is required",
                          status=401)
    try:
        claims = tokens.decode(token, "queue")
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
    place = await request.app[TURN_ROOM].status(claims["cid"], user_id, claims["token"], utcnow())
    if place.status == "EXPIRED":
        raise DomainError("QUEUE_TOKEN_EXPIRED", "the queue token has expired", status=410)
    if place.status != "ACTIVE":
        raise DomainError("QUEUE_TOKEN_NOT_ACTIVE", "still waiting in line", status=403)
    return user_id, claims["cid"]


async def take_token(request: web.Request, body: Join) -> web.Response:
    """``POST /queue/tokens``: 201 with a new place in line, 200 with the one already held."""
    return json_response(*await take_place(request.app, await require_user(request), body))


async def my_place(request: web.Request) -> web.Response:
    """``GET /queue/tokens/me``: status, position and estimated wait (changes no one's place)."""
    user_id = await require_user(request)
    return json_response(await place_of(request.app, user_id,
                                        request.headers.get("Queue-Token", "")))


async def take_place(app: web.Application, user_id: int, body: Join) -> tuple[dict, int]:
    """A new place in ``body``'s line (201) or the one ``user_id`` already holds (200)."""
    room = app[TURN_ROOM]
    token = app[TOKENS].issue_queue_token(user_id, body.concert_id)
    # One script call: a concert that already has a line exists; only a new one costs
    # a database read (and a second call).
    place = await room.join(body.concert_id, user_id, token, utcnow(), known=False)
    if place is None:
        await app[DB](concerts.require_concert, body.concert_id)
        place = await room.join(body.concert_id, user_id, token, utcnow())
    return ({"token": place.token, "status": place.status, "position": place.position,
             "active_until": iso(place.active_until)}, 201 if place.created else 200)


async def place_of(app: web.Application, user_id: int, queue_token: str) -> dict:
    """Where ``user_id``'s queue token stands; a poll keeps its place (``touch``)."""
    claims = queue_claims(app[TOKENS], queue_token, user_id)
    place = await app[TURN_ROOM].status(claims["cid"], user_id, claims["token"], utcnow(),
                                        touch=True)
    if place.status == "EXPIRED":
        raise DomainError("QUEUE_TOKEN_EXPIRED", "the queue token has expired", status=410)
    return {"status": place.status, "position": place.position,
            "estimated_wait_seconds": app[ROOM].estimated_wait(place),
            "active_until": iso(place.active_until)}


async def poll_lane(app: web.Application, headers: dict[str, str], body: bytes) -> Answer:
    """``GET /queue/tokens/me`` in the fast lane (``web.fastlane``)."""
    user_id = await bearer_user(app[TOKENS], headers.get("authorization", ""))
    return 200, await place_of(app, user_id, headers.get("queue-token", ""))


async def join_lane(app: web.Application, headers: dict[str, str], body: bytes) -> Answer:
    """``POST /queue/tokens`` in the fast lane: authenticated before the body is read."""
    user_id = await bearer_user(app[TOKENS], headers.get("authorization", ""))
    place, status = await take_place(app, user_id, decode_body(body, Join))
    return status, place


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


async def reserve_door(request: web.Request, user_id: int, fields: dict) -> None:
    """``concert.reserve`` at the door: an ACTIVE queue token for that concert."""
    await require_active(request, fields["concert_id"])


async def pay_door(request: web.Request, user_id: int, fields: dict) -> None:
    """``concert.pay`` at the door: an ACTIVE queue token, for the reservation's concert."""
    _, concert_id = await require_active(request, None)
    held_for = await request.app[DB](concerts.reservation_concert, user_id,
                                     fields["reservation_id"])
    if held_for is not None and held_for != concert_id:
        raise DomainError("QUEUE_TOKEN_NOT_ACTIVE", "this queue token is for another concert",
                          status=403)
    fields["concert_id"] = concert_id


async def create_concert(request: web.Request, body: NewConcert) -> web.Response:
    """``POST /admin/concerts`` (admin): a concert with dates of 50 seats."""
    await require_admin(request)
    dates = [(d.date, d.seat_price) for d in body.dates]
    concert = await request.app[DB](concerts.create_concert, body.title, dates, utcnow())
    return json_response(concert, 201)


QUEUE_TOKEN = ("Queue-Token",)
DOORS = {"concert.reserve": reserve_door, "concert.pay": pay_door}
ROUTES = [
    Route("POST", "/queue/tokens", take_token, "Take a place in a concert's line",
          body=Join, response=QueuePlace, status=201, errors=("CONCERT_NOT_FOUND",),
          lane=join_lane),
    Route("GET", "/queue/tokens/me", my_place, "Where the caller's queue token stands",
          response=QueueStatus, headers=QUEUE_TOKEN,
          errors=("QUEUE_TOKEN_INVALID", "QUEUE_TOKEN_EXPIRED"), lane=poll_lane),
    Route("GET", "/concerts", list_concerts, "Concerts", response=Page[ConcertSummary],
          auth="none", query=PAGING),
    Route("GET", "/concerts/{concert_id}/dates", dates, "Dates with seats left",
          response=Items[ConcertDate], headers=QUEUE_TOKEN,
          errors=("CONCERT_NOT_FOUND", "QUEUE_TOKEN_NOT_ACTIVE", "QUEUE_TOKEN_INVALID",
                  "QUEUE_TOKEN_EXPIRED")),
    Route("GET", "/concerts/{concert_id}/dates/{date}/seats", seats, "Seats 1..50 of a date",
          response=Items[Seat], headers=QUEUE_TOKEN,
          errors=("CONCERT_NOT_FOUND", "SCHEDULE_NOT_FOUND", "QUEUE_TOKEN_NOT_ACTIVE",
                  "QUEUE_TOKEN_INVALID", "QUEUE_TOKEN_EXPIRED")),
    Route("POST", "/admin/concerts", create_concert, "Add a concert (admin)", body=NewConcert,
          status=201, errors=("INVALID_PERMISSION",), auth="admin"),
]
