"""Concerts: dates with 50 seats each, reservations (holds and sales), payments."""

from __future__ import annotations

import peewee

from db.models.base import BaseModel
from db.models.users import User

SEATS_PER_DATE = 50


class Concert(BaseModel):
    """A concert; its dates carry the seats."""

    id = peewee.BigAutoField()
    title = peewee.CharField(max_length=200)
    created_at = peewee.DateTimeField()

    class Meta:
        table_name = "concerts"


class ConcertDate(BaseModel):
    """One performance: 50 seats at ``seat_price`` points each."""

    id = peewee.BigAutoField()
    concert = peewee.ForeignKeyField(Concert, on_delete="CASCADE", backref="dates")
    date = peewee.DateField()
    seat_price = peewee.BigIntegerField(constraints=[peewee.Check("seat_price >= 0")])

    class Meta:
        table_name = "concert_dates"
        indexes = ((("concert", "date"), True),)


class Reservation(BaseModel):
    """A seat held (HELD, 5 minutes) or sold (CONFIRMED); EXPIRED frees it.

    A partial UNIQUE index on (date, seat) over HELD and CONFIRMED rows makes "one seat,
    one holder" a rule of the database.
    """

    id = peewee.BigAutoField()
    user = peewee.ForeignKeyField(User, on_delete="CASCADE")
    concert_date = peewee.ForeignKeyField(ConcertDate, on_delete="CASCADE")
    seat_no = peewee.IntegerField(constraints=[peewee.Check("seat_no BETWEEN 1 AND 50")])
    status = peewee.CharField(max_length=10)
    price = peewee.BigIntegerField()
    created_at = peewee.DateTimeField()
    expires_at = peewee.DateTimeField()
    paid_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "reservations"
        indexes = ((("status", "expires_at"), False), (("user", "id"), False))


class ConcertPayment(BaseModel):
    """The record of a seat paid with points (one per reservation)."""

    id = peewee.BigAutoField()
    reservation = peewee.ForeignKeyField(Reservation, unique=True, on_delete="CASCADE")
    user = peewee.ForeignKeyField(User, on_delete="CASCADE")
    amount = peewee.BigIntegerField()
    created_at = peewee.DateTimeField()

    class Meta:
        table_name = "concert_payments"
