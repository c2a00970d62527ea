"""The art auction: artworks, proxy bids with points in escrow, soft close, buy-now, closing.

Every change of an auction happens under its artwork's row lock (``SELECT ... FOR
UPDATE``), inside the job's one transaction, so bids, buy-now and the closing sweep of
one artwork apply one at a time and each sees what the previous one committed:

- **Proxy bidding.** Each bidder's highest accepted maximum is hidden in
  ``artwork_bidders``; the artwork keeps the leader's maximum and the highest maximum of
  everyone else (``second_max``), which is all the price rule needs.
- **Escrow.** The leader's whole maximum is held from their points (``points.hold``) in
  the transaction that makes them lead, and released in the one that outbids them; a
  hold the balance cannot cover fails the bid, and the rollback undoes all of it.
  Wallets are always locked in ascending user order, so two auctions moving the same
  wallets cannot deadlock.
- **Events.** Each accepted bid and each close adds one to ``version`` and writes the
  event as an ``artwork_events`` row; it is emitted to the live hub only after commit,
  and a stream replays the rows after a reconnect.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Literal

import msgspec
import peewee

from db.connection import for_update
from db.models import Artwork, ArtworkEvent, Bid, Bidder, User
from jobs import points
from jobs.clock import iso
from jobs.errors import DomainError, InvalidRequest
from jobs.fields import Count, Positive
from jobs.pagination import id_page
from jobs.platform import Command, Context, Domain, Event, Periodic

GENRES = ("PAINTING", "SCULPTURE", "PHOTOGRAPHY", "DRAWING", "PRINT", "CRAFT", "DIGITAL",
          "OTHER")
OPEN, SOLD, UNSOLD = "OPEN", "SOLD", "UNSOLD"
STATUSES = (OPEN, SOLD, UNSOLD)
MAX_POINTS = 10**12
CLOSE_BATCH = 100
REPLAY_LIMIT = 1000
LIVE_BID, LIVE_CLOSED = "auction.bid", "auction.closed"
Genre = Literal["PAINTING", "SCULPTURE", "PHOTOGRAPHY", "DRAWING", "PRINT", "CRAFT",
                "DIGITAL", "OTHER"]


class AuctionSettings(msgspec.Struct, frozen=True):
    """Soft close: a bid this many seconds before the end moves the end to this many
    seconds after the bid, never past the original end + ``auction_max_extension``.
    The sweep looks for due auctions every ``auction_close_interval`` seconds."""

    auction_soft_close: Count = 120
    auction_max_extension: Count = 3600
    auction_close_interval: Positive = 1


def increment(price: int) -> int:
    """The minimum raise over ``price``: 5 % rounded up to a multiple of 100, at least 100."""
    return max(100, -(-price // 2000) * 100)


def min_next_bid(start_price: int, price: int | None) -> int:
    """The least the next bid may be: the start price, then ``price`` + the increment."""
    return start_price if price is None else price + increment(price)


# -- reads -----------------------------------------------------------------------------

Artist, Winner = User.alias("artist_user"), User.alias("winner_user")


def _with_people(query: peewee.Select) -> peewee.Select:
    return (query.select_extend(Artist.username, Winner.username)
            .join(Artist, on=(Artwork.artist == Artist.id), attr="artist_user")
            .switch(Artwork)
            .join(Winner, peewee.JOIN.LEFT_OUTER, on=(Artwork.winner == Winner.id),
                  attr="winner_user"))


def _person(user_id: int | None, username: str | None) -> dict | None:
    return None if user_id is None else {"id": user_id, "username": username}


def artwork_view(a: Artwork) -> dict:
    """An artwork as the API shows it (``a`` selected through :func:`_with_people`)."""
    winner = getattr(a, "winner_user", None)
    return {
        "id": a.id,
        "title": a.title,
        "genre": a.genre,
        "description": a.description,
        "artist": _person(a.artist_id, a.artist_user.username),
        "start_price": a.start_price,
        "instant_price": a.instant_price,
        "price": a.price,
        "bid_count": a.bid_count,
        "min_next_bid": min_next_bid(a.start_price, a.price),
        "ends_at": iso(a.ends_at),
        "original_ends_at": iso(a.original_ends_at),
        "status": a.status,
        "winner": _person(a.winner_id, winner.username if winner else None),
        "created_at": iso(a.created_at),
    }


def create_artwork(artist_id: int, title: str, genre: str, description: str | None,
                   start_price: int, instant_price: int | None, ends_at: datetime,
                   now: datetime) -> dict:
    """List an artwork (the caller checked that the user is an artist)."""
    artwork = Artwork.create(artist=artist_id, title=title, genre=genre,
                             description=description, start_price=start_price,
                             instant_price=instant_price, ends_at=ends_at,
                             original_ends_at=ends_at, created_at=now)
    return get_artwork(artwork.id)


def is_artist(user_id: int) -> bool:
    """Whether the user signed up as an artist."""
    return User.select().where((User.id == user_id) & User.is_artist).exists()


def get_artwork(artwork_id: int) -> dict:
    """One artwork; ``ARTWORK_NOT_FOUND`` if there is none."""
    found = _with_people(Artwork.select()).where(Artwork.id == artwork_id).first()
    if found is None:
        raise DomainError("ARTWORK_NOT_FOUND", "no such artwork")
    return artwork_view(found)


def require_artwork(artwork_id: int) -> None:
    """``ARTWORK_NOT_FOUND`` unless the artwork exists."""
    if not Artwork.select().where(Artwork.id == artwork_id).exists():
        raise DomainError("ARTWORK_NOT_FOUND", "no such artwork")


def list_artworks(genre: str | None, status: str | None, artist_id: int | None, limit: int,
                  cursor: str | None) -> dict:
    """Artworks, newest first, filtered by genre, status and artist."""
    query = _with_people(Artwork.select())
    if genre is not None:
        query = query.where(Artwork.genre == genre)
    if status is not None:
        query = query.where(Artwork.status == status)
    if artist_id is not None:
        query = query.where(Artwork.artist == artist_id)
    rows, next_cursor = id_page(query, Artwork.id, limit, cursor, newest_first=True)
    return {"items": [artwork_view(a) for a in rows], "next_cursor": next_cursor}


def bid_history(artwork_id: int, limit: int, cursor: str | None) -> dict:
    """The visible bids of an artwork, newest first."""
    require_artwork(artwork_id)
    query = (Bid.select(Bid, User.username)
             .join(User, on=(Bid.bidder == User.id), attr="bidder_user")
             .where(Bid.artwork == artwork_id))
    rows, next_cursor = id_page(query, Bid.id, limit, cursor, newest_first=True)
    return {"items": [{"amount": b.amount,
                       "bidder": _person(b.bidder_id, b.bidder_user.username),
                       "automatic": b.automatic, "created_at": iso(b.created_at)}
                      for b in rows],
            "next_cursor": next_cursor}


def my_bids(user_id: int, limit: int, cursor: str | None) -> dict:
    """The artworks the user bid on, most recently joined first, with their maximum."""
    query = Bidder.select().where(Bidder.user == user_id)
    rows, next_cursor = id_page(query, Bidder.id, limit, cursor, newest_first=True)
    works = {a.id: a for a in _with_people(Artwork.select())
             .where(Artwork.id.in_([b.artwork_id for b in rows]))}
    items = []
    for b in rows:
        a = works[b.artwork_id]
        leading = a.leader_id == user_id if a.status == OPEN else a.winner_id == user_id
        items.append({"artwork": artwork_view(a), "my_max_amount": b.max_amount,
                      "leading": leading, "status": a.status})
    return {"items": items, "next_cursor": next_cursor}


def events_since(artwork_id: int, after: int | None) -> list[Event]:
    """The artwork's events with a version above ``after``, oldest first (for replay);
    with no ``after`` (a new subscriber), the latest event: where the auction stands."""
    query = ArtworkEvent.select().where(ArtworkEvent.artwork == artwork_id)
    if after is None:
        rows = list(query.order_by(ArtworkEvent.version.desc()).limit(1))
    else:
        rows = list(query.where(ArtworkEvent.version > after)
                    .order_by(ArtworkEvent.version).limit(REPLAY_LIMIT))
    return [Event(f"auction.{e.type}", e.data, str(artwork_id), e.version) for e in rows]


# -- changes (inside the job's transaction) --------------------------------------------


def _lock(artwork_id: int) -> Artwork:
    artwork = for_update(Artwork.select().where(Artwork.id == artwork_id)).first()
    if artwork is None:
        raise DomainError("ARTWORK_NOT_FOUND", "no such artwork")
    return artwork


def _require_open(artwork: Artwork, now: datetime) -> None:
    if artwork.status != OPEN or now >= artwork.ends_at:
        raise DomainError("AUCTION_CLOSED", "the auction has ended")


Move = tuple[int, Callable[[int, int, str, datetime], int], int, str]


def _apply(moves: list[Move], now: datetime) -> None:
    """Move points in ascending user order (the order every auction locks wallets in);
    one user's moves keep their order (a release before the spend it pays for)."""
    for user_id, move, amount, ref in sorted(moves, key=lambda m: m[0]):
        move(user_id, amount, ref, now)


def _usernames(ids: set[int]) -> dict[int, str]:
    return dict(User.select(User.id, User.username).where(User.id.in_(list(ids))).tuples())


def _record(ctx: Context, artwork: Artwork, kind: str, data: dict) -> None:
    """The artwork's next event: a row now, a live event after commit."""
    ArtworkEvent.create(artwork=artwork.id, version=artwork.version, type=kind, data=data,
                        created_at=ctx.now)
    ctx.emit(f"auction.{kind}", data, key=artwork.id, id=artwork.version)


def _save(artwork: Artwork, *fields: peewee.Field) -> None:
    artwork.version += 1
    artwork.save(only=[*fields, Artwork.version])


def place_bid(ctx: Context, artwork_id: int, amount: int, max_amount: int | None,
              settings: AuctionSettings) -> dict:
    """Accept a bid under the artwork's lock, or refuse it with nothing changed."""
    now, user_id = ctx.now, ctx.user_id
    a = _lock(artwork_id)
    _require_open(a, now)
    if a.artist_id == user_id:
        raise DomainError("OWN_ARTWORK", "artists cannot bid on their own artwork")
    maximum = amount if max_amount is None else max_amount
    ref = f"artwork:{a.id}"
    visible: list[tuple[int, int, bool]] = []  # (bidder, amount, automatic)
    if a.leader_id == user_id:  # the leader raises their own maximum; the price stays
        if maximum <= a.leader_max:
            raise DomainError("BID_TOO_LOW", f"your maximum is already {a.leader_max}")
        points.hold(user_id, maximum - a.leader_max, ref, now)
        a.leader_max = maximum
    else:
        floor = min_next_bid(a.start_price, a.price)
        if amount < floor:
            raise DomainError("BID_TOO_LOW", f"the next bid must be at least {floor}")
        if a.leader_id is None:  # the first bid
            points.hold(user_id, maximum, ref, now)
            a.leader, a.leader_max, a.price = user_id, maximum, amount
            visible.append((user_id, amount, False))
        elif maximum > a.leader_max:  # a new leader: the old one is released
            old, old_max = a.leader_id, a.leader_max
            _apply([(old, points.release, old_max, ref), (user_id, points.hold, maximum, ref)],
                   now)
            if old_max > a.price:
                visible.append((old, old_max, True))
            a.price = max(a.price, min(maximum, old_max + increment(old_max)))
            a.leader, a.leader_max, a.second_max = user_id, maximum, old_max
            visible.append((user_id, a.price, False))
        else:  # the leader's maximum covers it (the earlier maximum wins a tie)
            if points.spendable(user_id) < maximum:
                raise DomainError("INSUFFICIENT_POINTS", f"{maximum} points are needed")
            a.price = max(a.price, min(a.leader_max, maximum + increment(maximum)))
            a.second_max = max(a.second_max or 0, maximum)
            visible += [(user_id, maximum, False), (a.leader_id, a.price, True)]
    _extend(a, now, settings)
    a.bid_count += len(visible)
    _save(a, Artwork.leader, Artwork.leader_max, Artwork.second_max, Artwork.price,
          Artwork.bid_count, Artwork.ends_at)
    if visible:
        Bid.insert_many([{"artwork": a.id, "bidder": b, "amount": v, "automatic": auto,
                          "created_at": now} for b, v, auto in visible]).execute()
    (Bidder.insert(artwork=a.id, user=user_id, max_amount=maximum, updated_at=now)
     .on_conflict(conflict_target=[Bidder.artwork, Bidder.user],
                  update={Bidder.max_amount: maximum, Bidder.updated_at: now}).execute())
    names = _usernames({a.leader_id})
    _record(ctx, a, "bid", {
        "artwork_id": a.id, "price": a.price, "bid_count": a.bid_count,
        "min_next_bid": min_next_bid(a.start_price, a.price), "ends_at": iso(a.ends_at),
        "leader": _person(a.leader_id, names.get(a.leader_id))})
    return {"artwork_id": a.id, "price": a.price, "leading": a.leader_id == user_id,
            "max_amount": maximum, "ends_at": iso(a.ends_at)}


def _extend(a: Artwork, now: datetime, settings: AuctionSettings) -> None:
    """Soft close: a bid near the end moves it later, never earlier, never past the cap."""
    window = timedelta(seconds=settings.auction_soft_close)
    if a.ends_at - now < window:
        cap = a.original_ends_at + timedelta(seconds=settings.auction_max_extension)
        a.ends_at = max(a.ends_at, min(now + window, cap))


def buy_now(ctx: Context, artwork_id: int) -> dict:
    """Buy at the server's instant price while the bidding is below it; closes at once."""
    now, user_id = ctx.now, ctx.user_id
    a = _lock(artwork_id)
    _require_open(a, now)
    if a.artist_id == user_id:
        raise DomainError("OWN_ARTWORK", "artists cannot buy their own artwork")
    if a.instant_price is None:
        raise DomainError("NO_INSTANT_PRICE", "this artwork has no instant price")
    if a.price is not None and a.price >= a.instant_price:
        raise DomainError("NO_INSTANT_PRICE", "the bidding has reached the instant price")
    ref = f"artwork:{a.id}"
    moves: list[Move] = []
    if a.leader_id is not None:
        moves.append((a.leader_id, points.release, a.leader_max, ref))
    moves += [(user_id, points.spend, a.instant_price, ref),
              (a.artist_id, points.credit, a.instant_price, ref)]
    _apply(moves, now)
    _close(ctx, a, SOLD, user_id, a.instant_price)
    return {"artwork_id": a.id, "status": SOLD, "price": a.instant_price}


def close_due(ctx: Context, limit: int = CLOSE_BATCH) -> dict:
    """Close the auctions whose (possibly extended) end has passed, each exactly once.

    ``FOR UPDATE SKIP LOCKED`` leaves an artwork a bid is holding to the next sweep, and
    PostgreSQL re-checks ``ends_at`` on the row it locks, so an end a bid has just moved
    is not closed early. Every wallet move of the batch is applied in one ascending pass.
    """
    query = (Artwork.select().where((Artwork.status == OPEN) & (Artwork.ends_at <= ctx.now))
             .order_by(Artwork.ends_at).limit(limit))
    due = list(for_update(query, skip_locked=True))
    moves: list[Move] = []
    for a in due:
        if a.leader_id is not None:  # the hold becomes the payment; the artist is paid
            ref = f"artwork:{a.id}"
            moves += [(a.leader_id, points.release, a.leader_max, ref),
                      (a.leader_id, points.spend, a.price, ref),
                      (a.artist_id, points.credit, a.price, ref)]
    _apply(moves, ctx.now)
    sold = 0
    for a in due:
        if a.leader_id is None:
            _close(ctx, a, UNSOLD, None, a.price)
        else:
            _close(ctx, a, SOLD, a.leader_id, a.price)
            sold += 1
    return {"closed": len(due), "sold": sold} if due else {}


def _close(ctx: Context, a: Artwork, status: str, winner: int | None, price: int | None) -> None:
    a.status, a.winner, a.price, a.closed_at = status, winner, price, ctx.now
    a.leader, a.leader_max = None, None
    _save(a, Artwork.status, Artwork.winner, Artwork.price, Artwork.closed_at, Artwork.leader,
          Artwork.leader_max)
    names = _usernames({winner}) if winner is not None else {}
    _record(ctx, a, "closed", {"artwork_id": a.id, "status": status, "price": price,
                               "winner": _person(winner, names.get(winner))})


# -- commands --------------------------------------------------------------------------

Points = Annotated[int, msgspec.Meta(ge=1, le=MAX_POINTS)]


class PlaceBid(msgspec.Struct, forbid_unknown_fields=True):
    """``auction.bid``: a bid and, optionally, the hidden maximum to bid up to."""

    artwork_id: Annotated[int, msgspec.Meta(ge=1)]
    amount: Points
    max_amount: Points | None = None

    def __post_init__(self) -> None:
        if self.max_amount is not None and self.max_amount < self.amount:
            raise InvalidRequest({"max_amount": "must be at least amount"})


class BuyNow(msgspec.Struct, forbid_unknown_fields=True):
    """``auction.buy_now``: the artwork (the price is the server's)."""

    artwork_id: Annotated[int, msgspec.Meta(ge=1)]


class BidResult(msgspec.Struct):
    """Where the bid left the auction."""

    artwork_id: int
    price: int
    leading: bool
    max_amount: int
    ends_at: str


class Bought(msgspec.Struct):
    """An artwork bought at its instant price."""

    artwork_id: int
    status: str
    price: int


def bid(ctx: Context, cmd: PlaceBid) -> dict:
    """``auction.bid``."""
    return place_bid(ctx, cmd.artwork_id, cmd.amount, cmd.max_amount,
                     ctx.services.config["auction"])


def buy(ctx: Context, cmd: BuyNow) -> dict:
    """``auction.buy_now``."""
    return buy_now(ctx, cmd.artwork_id)


def close_auctions(ctx: Context) -> dict:
    """Every second: close the auctions that are due."""
    return close_due(ctx)


DOMAIN = Domain(
    name="auction",
    commands=(
        Command("auction.bid", PlaceBid, bid, "POST", "/artworks/{artwork_id}/bids",
                "Bid on an artwork (optionally with a hidden maximum)", result=BidResult,
                not_found="ARTWORK_NOT_FOUND",
                errors=("BID_TOO_LOW", "AUCTION_CLOSED", "OWN_ARTWORK", "INSUFFICIENT_POINTS",
                        "ARTWORK_NOT_FOUND")),
        Command("auction.buy_now", BuyNow, buy, "POST", "/artworks/{artwork_id}/buy-now",
                "Buy an artwork at its instant price; the auction closes", result=Bought,
                not_found="ARTWORK_NOT_FOUND",
                errors=("AUCTION_CLOSED", "NO_INSTANT_PRICE", "OWN_ARTWORK",
                        "INSUFFICIENT_POINTS", "ARTWORK_NOT_FOUND")),
    ),
    periodic=(Periodic("auction.close", close_auctions, every="auction_close_interval"),),
    live_topics=frozenset({LIVE_BID, LIVE_CLOSED}),
    models=(Artwork, Bidder, Bid, ArtworkEvent),
    settings=AuctionSettings,
)
