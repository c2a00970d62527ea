"""Logged-out sessions and spent refresh tokens, kept in the database: a Redis that
restarts empty (it keeps nothing on disk) no longer forgets them.

The models below are a frozen copy of the schema at this migration.
"""

from peewee import CharField, DateTimeField, Model


def _models(db):
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class RevokedSession(Base):
        sid = CharField(max_length=64, primary_key=True)
        until = DateTimeField()

        class Meta:
            table_name = "revoked_sessions"

    class SpentRefreshToken(Base):
        jti = CharField(max_length=64, primary_key=True)
        until = DateTimeField()

        class Meta:
            table_name = "spent_refresh_tokens"

    return [RevokedSession, SpentRefreshToken]


def up(migrator, db):
    db.create_tables(_models(db), safe=True)


def down(migrator, db):
    db.drop_tables(_models(db), safe=True)
