"""``/artworks``: list and read artworks, their bids and live events; artists list them.

Bids and buy-now are commands (``auction.bid``, ``auction.buy_now``): their doors only
check that the artwork exists; everything else is decided under the artwork's lock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import msgspec
from aiohttp import web

from jobs import auction
from jobs.clock import utcnow
from jobs.errors import DomainError, InvalidRequest
from jobs.platform import Event
from web import sse
from web.auth import require_user
from web.commands import DB, HUB, STREAMS
from web.responses import json_response
from web.routing import Query, Route
from web.shapes import Int, Page, Text
from web.validation import PAGING, page_params, path_id, query_choice, query_int

MIN_AHEAD, MAX_AHEAD = timedelta(minutes=1), timedelta(days=30)
Price = Int(100, 100_000_000)


class NewArtwork(msgspec.Struct, forbid_unknown_fields=True):
    """An artwork to auction; ``ends_at`` is 1 minute to 30 days ahead, with its offset."""

    title: Text(1, 200)
    genre: auction.Genre
    start_price: Price
    ends_at: Annotated[datetime, msgspec.Meta(tz=True)]
    description: Text(0, 5000) | None = None
    instant_price: Int(101, 100_000_000_000) | None = None

    def __post_init__(self) -> None:
        if self.instant_price is not None and self.instant_price <= self.start_price:
            raise InvalidRequest({"instant_price": "must be above start_price"})


class Person(msgspec.Struct):
    """A user as others see them."""

    id: int
    username: str


class Artwork(msgspec.Struct):
    """An artwork and where its auction stands (``price``: the highest visible bid)."""

    id: int
    title: str
    genre: str
    description: str | None
    artist: Person
    start_price: int
    instant_price: int | None
    price: int | None
    bid_count: int
    min_next_bid: int
    ends_at: str
    original_ends_at: str
    status: str
    winner: Person | None
    created_at: str


class VisibleBid(msgspec.Struct):
    """A bid as the history shows it (``automatic``: raised by the bidder's maximum)."""

    amount: int
    bidder: Person
    automatic: bool
    created_at: str


class MyBid(msgspec.Struct):
    """An artwork the caller bid on, their maximum and whether they lead (or won)."""

    artwork: Artwork
    my_max_amount: int
    leading: bool
    status: str


async def create_artwork(request: web.Request, body: NewArtwork) -> web.Response:
    """``POST /artworks`` (artists): 201 with the artwork."""
    user_id = await require_user(request)
    now = utcnow()
    ends_at = body.ends_at.astimezone(UTC).replace(tzinfo=None) if _ahead(body.ends_at) else None
    if ends_at is None:
        raise InvalidRequest({"ends_at": "must be 1 minute to 30 days ahead"})
    db = request.app[DB]
    if not await db(auction.is_artist, user_id):
        raise DomainError("INVALID_PERMISSION", "only artists list artworks", status=403)
    artwork = await db(auction.create_artwork, user_id, body.title, body.genre,
                       body.description, body.start_price, body.instant_price, ends_at, now)
    return json_response(artwork, 201)


def _ahead(when: datetime) -> bool:
    """Whether ``when`` (aware) is 1 minute to 30 days from now; compared before any
    conversion, so a date at the calendar's edge is refused, not overflowed."""
    now = datetime.now(UTC)
    return now + MIN_AHEAD <= when <= now + MAX_AHEAD


async def list_artworks(request: web.Request) -> web.Response:
    """``GET /artworks?genre=&status=&artist_id=``: newest first."""
    genre = query_choice(request, "genre", set(auction.GENRES))
    status = query_choice(request, "status", set(auction.STATUSES))
    raw_artist = request.query.get("artist_id")
    artist = None if raw_artist is None else query_int(raw_artist, "artist_id", 1, 10**9 - 1)
    limit, cursor = page_params(request)
    return json_response(await request.app[DB](auction.list_artworks, genre, status, artist,
                                                limit, cursor))


async def get_artwork(request: web.Request) -> web.Response:
    """``GET /artworks/{id}``."""
    artwork_id = path_id(request, "artwork_id", "ARTWORK_NOT_FOUND")
    return json_response(await request.app[DB](auction.get_artwork, artwork_id))


async def bids(request: web.Request) -> web.Response:
    """``GET /artworks/{id}/bids``: the visible bid history, newest first."""
    artwork_id = path_id(request, "artwork_id", "ARTWORK_NOT_FOUND")
    limit, cursor = page_params(request)
    return json_response(await request.app[DB](auction.bid_history, artwork_id, limit, cursor))


async def events(request: web.Request) -> web.StreamResponse:
    """``GET /artworks/{id}/events``: ``bid`` and ``closed``, live, ``id:`` the version."""
    artwork_id = path_id(request, "artwork_id", "ARTWORK_NOT_FOUND")
    db = request.app[DB]
    await db(auction.require_artwork, artwork_id)

    async def since(after: int | None) -> list[Event]:
        return await db(auction.events_since, artwork_id, after)

    return await sse.stream(request, request.app[HUB], request.app[STREAMS],
                            (auction.LIVE_BID, auction.LIVE_CLOSED), str(artwork_id), since,
                            event_name=lambda e: e.topic.removeprefix("auction."),
                            contiguous=True)


async def my_bids(request: web.Request) -> web.Response:
    """``GET /users/me/bids``: the artworks the caller bid on."""
    user_id = await require_user(request)
    limit, cursor = page_params(request)
    return json_response(await request.app[DB](auction.my_bids, user_id, limit, cursor))


async def artwork_door(request: web.Request, user_id: int, fields: dict) -> None:
    """``auction.bid`` and ``auction.buy_now`` at the door: 404 for an unknown artwork."""
    await request.app[DB](auction.require_artwork, fields["artwork_id"])


DOORS = {"auction.bid": artwork_door, "auction.buy_now": artwork_door}
NOT_FOUND = ("ARTWORK_NOT_FOUND",)
ROUTES = [
    Route("POST", "/artworks", create_artwork, "List an artwork (artists)", body=NewArtwork,
          response=Artwork, status=201, errors=("INVALID_PERMISSION",)),
    Route("GET", "/artworks", list_artworks, "Artworks, newest first", response=Page[Artwork],
          auth="none", query=(Query("genre", str, ", ".join(auction.GENRES)),
                              Query("status", str, "OPEN, SOLD or UNSOLD"),
                              Query("artist_id", int, "the artist's user id"), *PAGING)),
    Route("GET", "/artworks/{artwork_id}", get_artwork, "One artwork", response=Artwork,
          errors=NOT_FOUND, auth="none"),
    Route("GET", "/artworks/{artwork_id}/bids", bids, "The visible bids, newest first",
          response=Page[VisibleBid], errors=NOT_FOUND, auth="none", query=PAGING),
    Route("GET", "/artworks/{artwork_id}/events", events,
          "Live stream of the artwork's bids and close (event: bid, closed)",
          errors=NOT_FOUND, auth="none", content_type="text/event-stream",
          headers=("Last-Event-ID",)),
    Route("GET", "/users/me/bids", my_bids, "The artworks the caller bid on",
          response=Page[MyBid], query=PAGING),
]
