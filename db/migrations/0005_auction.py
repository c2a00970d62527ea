"""The art auction: escrow on wallets, artworks, bidders' maximums, visible bids, events.

The models below are a frozen copy of the schema at this migration.
"""

from peewee import (
    BigAutoField,
    BigIntegerField,
    BooleanField,
    CharField,
    Check,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
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

    class Artwork(Base):
        id = BigAutoField()
        artist = ForeignKeyField(User, on_delete="CASCADE")
        title = CharField(max_length=200)
        genre = CharField(max_length=12)
        description = TextField(null=True)
        start_price = BigIntegerField(constraints=[Check("start_price >= 100")])
        instant_price = BigIntegerField(null=True)
        price = BigIntegerField(null=True)
        bid_count = IntegerField(default=0)
        leader = ForeignKeyField(User, null=True, on_delete="SET NULL")
        leader_max = BigIntegerField(null=True)
        second_max = BigIntegerField(null=True)
        ends_at = DateTimeField()
        original_ends_at = DateTimeField()
        status = CharField(max_length=8, default="OPEN")
        winner = ForeignKeyField(User, null=True, on_delete="SET NULL")
        version = BigIntegerField(default=0)
        created_at = DateTimeField()
        closed_at = DateTimeField(null=True)

        class Meta:
            table_name = "artworks"
            constraints = [
                Check("instant_price IS NULL OR instant_price > start_price"),
                Check("status IN ('OPEN', 'SOLD', 'UNSOLD')"),
                Check("ends_at >= original_ends_at"),
                Check("price IS NULL OR price >= start_price"),
            ]
            indexes = ((("status", "ends_at"), False), (("artist", "id"), False),
                       (("genre", "id"), False))

    class Bidder(Base):
        id = BigAutoField()
        artwork = ForeignKeyField(Artwork, on_delete="CASCADE")
        user = ForeignKeyField(User, on_delete="CASCADE")
        max_amount = BigIntegerField()
        updated_at = DateTimeField()

        class Meta:
            table_name = "artwork_bidders"
            indexes = ((("artwork", "user"), True), (("user", "id"), False))

    class Bid(Base):
        id = BigAutoField()
        artwork = ForeignKeyField(Artwork, on_delete="CASCADE")
        bidder = ForeignKeyField(User, on_delete="CASCADE")
        amount = BigIntegerField()
        automatic = BooleanField(default=False)
        created_at = DateTimeField()

        class Meta:
            table_name = "artwork_bids"
            indexes = ((("artwork", "id"), False),)

    class ArtworkEvent(Base):
        id = BigAutoField()
        artwork = ForeignKeyField(Artwork, on_delete="CASCADE")
        version = BigIntegerField()
        type = CharField(max_length=8)
        data = TextField()
        created_at = DateTimeField()

        class Meta:
            table_name = "artwork_events"
            indexes = ((("artwork", "version"), True),)

    db.execute_sql("ALTER TABLE point_wallets ADD COLUMN held BIGINT NOT NULL DEFAULT 0"
                   " CHECK (held >= 0)")
    db.create_tables([Artwork, Bidder, Bid, ArtworkEvent])


def down(migrator, db):
    db.execute_sql("DROP TABLE IF EXISTS artwork_events, artwork_bids, artwork_bidders, artworks")
    db.execute_sql("ALTER TABLE point_wallets DROP COLUMN held")
