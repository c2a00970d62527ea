"""Concerts: dates and seats, 5-minute holds, payment with points, the hold-expiry sweep.

"One seat, one holder" is the partial UNIQUE index on live reservations: a second hold
on a seat fails to insert, whatever the code around it does. Payment and hold expiry
race on one conditional update of the reservation (``... WHERE status = 'HELD'``).
A user holds at most ``HOLD_LIMIT`` live (HELD, unexpired) seats per concert, counted
under a lock on the user's row so that their concurrent reservations count one by one.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated

import msgspec
import peewee

from db.connection import database, is_postgres
from db.models import Concert, ConcertDate, ConcertPayment, Reservation, User
from db.models.concerts import SEATS_PER_DATE
from jobs import points
from jobs.clock import iso
from jobs.errors import DomainError
from jobs.fields import Count, Positive
from jobs.pagination import id_page
from jobs.platform import Command, Context, Domain, Event, Periodic

HOLD_TTL = timedelta(minutes=5)
HOLD_LIMIT = 4  # live holds per user per concert (the HOLD_LIMIT setting)
HELD, CONFIRMED, EXPIRED = "HELD", "CONFIRMED", "EXPIRED"
LIVE = (HELD, CONFIRMED)


def create_concert(title: str, dates: list[tuple[date, int]], now: datetime) -> dict:
    """A concert with its dates (50 seats each)."""
    with database.atomic():
        concert = Concert.create(title=title, created_at=now)
        ConcertDate.insert_many([{"concert": concert.id, "date": d, "seat_price": price}
                                 for d, price in dates]).execute()
    return {"id": concert.id, "title": title,
            "dates": [{"date": d.isoformat(), "seat_price": p, "seats": SEATS_PER_DATE}
                      for d, p in sorted(dates)]}


def list_concerts(limit: int, cursor: str | None) -> dict:
    """Concerts, one page."""
    items, next_cursor = id_page(Concert.select(), Concert.id, limit, cursor)
    return {"items": [{"id": c.id, "title": c.title} for c in items], "next_cursor": next_cursor}


def require_concert(concert_id: int) -> None:
    """``CONCERT_NOT_FOUND`` unless the concert exists."""
    if not Concert.select().where(Concert.id == concert_id).exists():
        raise DomainError("CONCERT_NOT_FOUND", "no such concert")


def _live_seat_counts(date_ids: list[int], now: datetime) -> dict[int, int]:
    live = (Reservation.select(Reservation.concert_date, peewee.fn.COUNT(Reservation.id))
            .where(Reservation.concert_date.in_(date_ids) & _is_live(now))
            .group_by(Reservation.concert_date).tuples())
    return dict(live)


def _is_live(now: datetime):
    """A reservation holds its seat: sold, or held and not past its deadline."""
    return (Reservation.status == CONFIRMED) | (
        (Reservation.status == HELD) & (Reservation.expires_at > now))


def available_dates(concert_id: int, now: datetime) -> dict:
    """The concert's dates that still have a seat."""
    require_concert(concert_id)
    dates = list(ConcertDate.select().where(ConcertDate.concert == concert_id)
                 .order_by(ConcertDate.date))
    taken = _live_seat_counts([d.id for d in dates], now)
    items = [{"date": d.date.isoformat(), "seat_price": d.seat_price,
              "available_seats": SEATS_PER_DATE - taken.get(d.id, 0)} for d in dates]
    return {"items": [i for i in items if i["available_seats"] > 0]}


def _find_date(concert_id: int, day: date) -> ConcertDate:
    found = ConcertDate.get_or_none((ConcertDate.concert == concert_id) & (ConcertDate.date == day))
    if found is None:
        raise DomainError("SCHEDULE_NOT_FOUND", "the concert has no such date")
    return found


def seats(concert_id: int, day: date, now: datetime) -> dict:
    """Seats 1..50 of a date: AVAILABLE, HELD or SOLD."""
    require_concert(concert_id)
    when = _find_date(concert_id, day)
    status = {r.seat_no: ("SOLD" if r.status == CONFIRMED else "HELD")
              for r in Reservation.select(Reservation.seat_no, Reservation.status)
              .where((Reservation.concert_date == when.id) & _is_live(now))}
    return {"items": [{"seat_no": n, "price": when.seat_price,
                       "status": status.get(n, "AVAILABLE")}
                      for n in range(1, SEATS_PER_DATE + 1)]}


def _require_hold_room(user_id: int, concert_id: int, now: datetime, hold_limit: int) -> None:
    """``HOLD_LIMIT_REACHED`` if the user already has ``hold_limit`` live holds on the concert.

    The user's row is locked first (``FOR NO KEY UPDATE``, which leaves alone the key-share
    locks of rows merely referencing the user), so of two reservations by one user the
    second counts only after the first has committed or rolled back. SQLite's immediate
    transactions serialise anyway.
    """
    me = User.select(User.id).where(User.id == user_id)
    (me.for_update("FOR NO KEY UPDATE") if is_postgres() else me).first()
    held = (Reservation.select().join(ConcertDate)
            .where((Reservation.user == user_id) & (ConcertDate.concert == concert_id)
                   & (Reservation.status == HELD) & (Reservation.expires_at > now)).count())
    if held >= hold_limit:
        raise DomainError("HOLD_LIMIT_REACHED",
                          f"at most {hold_limit} seats of a concert can be held at once")


def reserve_seat(user_id: int, concert_id: int, day: date, seat_no: int, now: datetime,
                 hold_limit: int = HOLD_LIMIT) -> dict:
    """Inside a transaction: hold a seat for 5 minutes; ``SEAT_NOT_AVAILABLE`` if it is live,
    ``HOLD_LIMIT_REACHED`` if the user already holds ``hold_limit`` seats of the concert."""
    when = _find_date(concert_id, day)
    _require_hold_room(user_id, concert_id, now, hold_limit)
    # A hold past its deadline no longer holds the seat, even before the sweep runs.
    (Reservation.update(status=EXPIRED)
     .where((Reservation.concert_date == when.id) & (Reservation.seat_no == seat_no)
            & (Reservation.status == HELD) & (Reservation.expires_at <= now)).execute())
    try:
        with database.atomic():  # a savepoint: the unique index refuses a second holder
            held = Reservation.create(user=user_id, concert_date=when.id, seat_no=seat_no,
                                      status=HELD, price=when.seat_price, created_at=now,
                                      expires_at=now + HOLD_TTL)
    except peewee.IntegrityError:
        raise DomainError("SEAT_NOT_AVAILABLE", f"seat {seat_no} is taken") from None
    return {"reservation_id": held.id, "status": HELD, "expires_at": iso(held.expires_at)}


def reservation_concert(user_id: int, reservation_id: int) -> int | None:
    """The concert of one of the user's reservations, or None."""
    row = (Reservation.select(ConcertDate.concert).join(ConcertDate)
           .where((Reservation.id == reservation_id) & (Reservation.user == user_id))
           .tuples().first())
    return row[0] if row else None


def pay_reservation(user_id: int, reservation_id: int, now: datetime) -> dict:
    """Inside a transaction: spend the seat's price, confirm the seat, record the payment."""
    won = list(Reservation.update(status=CONFIRMED, paid_at=now)
               .where((Reservation.id == reservation_id) & (Reservation.user == user_id)
                      & (Reservation.status == HELD) & (Reservation.expires_at > now))
               .returning(Reservation.price).execute())
    if not won:
        held = Reservation.get_or_none((Reservation.id == reservation_id)
                                       & (Reservation.user == user_id))
        if held is None:
            raise DomainError("RESERVATION_NOT_FOUND", "no such reservation")
        if held.status == CONFIRMED:
            raise DomainError("RESERVATION_ALREADY_PAID", "this seat is already paid")
        raise DomainError("RESERVATION_EXPIRED", "the hold expired before payment")
    price = won[0].price
    balance = (points.spend(user_id, price, f"reservation:{reservation_id}", now) if price
               else points.balance(user_id)["balance"])
    ConcertPayment.create(reservation=reservation_id, user=user_id, amount=price, created_at=now)
    return {"reservation_id": reservation_id, "status": "CONFIRMED", "balance": balance}


def expire_holds(now: datetime, limit: int = 1000) -> int:
    """Release holds past their 5 minutes; each exactly once."""
    due = (Reservation.select(Reservation.id)
           .where((Reservation.status == HELD) & (Reservation.expires_at <= now))
           .order_by(Reservation.id).limit(limit))
    return (Reservation.update(status=EXPIRED)
            .where(Reservation.id.in_(due) & (Reservation.status == HELD)).execute())


class ConcertSettings(msgspec.Struct, frozen=True):
    """The waiting room: active users per concert, seconds an active token lasts, seconds
    a waiting token may go unpolled; the pace of promotion and hold expiry; and how many
    live holds a user may have per concert."""

    queue_active_limit: Count = 100
    queue_active_ttl: Positive = 600
    queue_idle_ttl: Positive = 120
    queue_promote_interval: Positive = 1
    hold_expiry_interval: Positive = 2
    hold_limit: Positive = HOLD_LIMIT


class Reserve(msgspec.Struct, forbid_unknown_fields=True):
    """``concert.reserve``: a seat of a concert date."""

    concert_id: Annotated[int, msgspec.Meta(ge=1, le=2**53)]
    date: date
    seat_no: Annotated[int, msgspec.Meta(ge=1, le=SEATS_PER_DATE)]


class PayReservation(msgspec.Struct, forbid_unknown_fields=True):
    """``concert.pay``: the reservation (from the URL) and its concert (from the queue token)."""

    reservation_id: Annotated[int, msgspec.Meta(ge=1)]
    concert_id: Annotated[int, msgspec.Meta(ge=1)]


class Held(msgspec.Struct):
    """A seat held for 5 minutes."""

    reservation_id: int
    status: str
    expires_at: str


class Confirmed(msgspec.Struct):
    """A paid seat and the balance left."""

    reservation_id: int
    status: str
    balance: int


def reserve(ctx: Context, cmd: Reserve) -> dict:
    """``concert.reserve``: hold a seat for 5 minutes."""
    return reserve_seat(ctx.user_id, cmd.concert_id, cmd.date, cmd.seat_no, ctx.now,
                        ctx.services.config["concerts"].hold_limit)


def pay(ctx: Context, cmd: PayReservation) -> dict:
    """``concert.pay``: spend points, confirm the seat; the queue token ends after commit."""
    result = pay_reservation(ctx.user_id, cmd.reservation_id, ctx.now)
    ctx.emit("concert.paid", {"concert_id": cmd.concert_id, "user_id": ctx.user_id})
    return result


def leave_line(ctx: Context, event: Event) -> None:
    """A user who paid leaves the concert's waiting room."""
    ctx.services.waiting_room.leave(event.data["concert_id"], event.data["user_id"])


def tick_lines(ctx: Context) -> dict:
    """Every second: the lines move once this slot has committed."""
    ctx.emit("queue.tick", {})
    return {}


def promote_lines(ctx: Context, event: Event) -> dict:
    """End expired actives, drop idle waiters and promote, in every concert's line."""
    return {"promoted": ctx.services.waiting_room.promote_all(ctx.now)}


def release_holds(ctx: Context) -> dict:
    """Release seat holds past their 5 minutes."""
    return {"released": expire_holds(ctx.now)}


DOMAIN = Domain(
    name="concerts",
    commands=(
        Command("concert.reserve", Reserve, reserve, "POST", "/reservations",
                "Hold a seat for 5 minutes (ACTIVE queue token)", result=Held,
                errors=("SEAT_NOT_AVAILABLE", "HOLD_LIMIT_REACHED", "SCHEDULE_NOT_FOUND",
                        "CONCERT_NOT_FOUND")),
        Command("concert.pay", PayReservation, pay, "POST",
                "/reservations/{reservation_id}/payment",
                "Pay a held seat (ACTIVE queue token); the token then ends", result=Confirmed,
                not_found="RESERVATION_NOT_FOUND", door_fields=("concert_id",),
                errors=("RESERVATION_NOT_FOUND", "RESERVATION_EXPIRED",
                        "RESERVATION_ALREADY_PAID", "INSUFFICIENT_POINTS")),
    ),
    periodic=(
        Periodic("queue.promote", tick_lines, every="queue_promote_interval"),
        Periodic("concerts.expire_holds", release_holds, every="hold_expiry_interval"),
    ),
    reactions={"concert.paid": leave_line, "queue.tick": promote_lines},
    models=(Concert, ConcertDate, Reservation, ConcertPayment),
    settings=ConcertSettings,
)
