"""Concerts: dates, reservations with one live holder per seat, payments.

The models below are a frozen copy of the schema at this migration.
"""

from peewee import (
    BigAutoField,
    BigIntegerField,
    CharField,
    Check,
    DateField,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
)


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class User(Base):
        id = BigAutoField()

        class Meta:
            table_name = "users"


    class Concert(Base):
        """A concert; its dates carry the seats."""

        id = BigAutoField()
        title = CharField(max_length=200)
        created_at = DateTimeField()

        class Meta:
            table_name = "concerts"


    class ConcertDate(Base):
        """One performance: 50 seats at ``seat_price`` points each."""

        id = BigAutoField()
        concert = ForeignKeyField(Concert, on_delete="CASCADE", backref="dates")
        date = DateField()
        seat_price = BigIntegerField(constraints=[Check("seat_price >= 0")])

        class Meta:
            table_name = "concert_dates"
            indexes = ((("concert", "date"), True),)


    class Reservation(Base):
        """A seat held (HELD, 5 minutes) or sold (CONFIRMED); EXPIRED frees it.

        A partial UNIQUE index on (date, seat) over HELD and CONFIRMED rows makes "one seat,
        one holder" a rule of the database.
        """

        id = BigAutoField()
        user = ForeignKeyField(User, on_delete="CASCADE")
        concert_date = ForeignKeyField(ConcertDate, on_delete="CASCADE")
        seat_no = IntegerField(constraints=[Check("seat_no BETWEEN 1 AND 50")])
        status = CharField(max_length=10)
        price = BigIntegerField()
        created_at = DateTimeField()
        expires_at = DateTimeField()
        paid_at = DateTimeField(null=True)

        class Meta:
            table_name = "reservations"
            indexes = ((("status", "expires_at"), False), (("user", "id"), False))


    class ConcertPayment(Base):
        """The record of a seat paid with points (one per reservation)."""

        id = BigAutoField()
        reservation = ForeignKeyField(Reservation, unique=True, on_delete="CASCADE")
        user = ForeignKeyField(User, on_delete="CASCADE")
        amount = BigIntegerField()
        created_at = DateTimeField()

        class Meta:
            table_name = "concert_payments"

    db.create_tables([Concert, ConcertDate, Reservation, ConcertPayment])
    # One seat, one holder: at most one live (HELD or CONFIRMED) reservation per seat.
    db.execute_sql(
        "CREATE UNIQUE INDEX reservations_live_seat ON reservations (concert_date_id, seat_no)"
        " WHERE status IN ('HELD', 'CONFIRMED')"
    )
