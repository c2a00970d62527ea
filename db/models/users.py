"""Accounts."""

from __future__ import annotations

import peewee

from db.models.base import BaseModel


class User(BaseModel):
    """A person who can log in; ``is_admin`` grants catalog set-up."""

    id = peewee.BigAutoField()
    username = peewee.CharField(max_length=32, unique=True)
    password_hash = peewee.CharField(max_length=255)
    phone = peewee.CharField(max_length=20, null=True)
    phone_verified = peewee.BooleanField(default=False)
    is_artist = peewee.BooleanField(default=False)
    is_admin = peewee.BooleanField(default=False)
    created_at = peewee.DateTimeField()

    class Meta:
        table_name = "users"


class RevokedSession(BaseModel):
    """A logged-out session: its tokens are refused until ``until`` (the truth; the web
    processes hold a copy in memory, kept current through the live hub)."""

    sid = peewee.CharField(max_length=64, primary_key=True)
    until = peewee.DateTimeField()

    class Meta:
        table_name = "revoked_sessions"


class SpentRefreshToken(BaseModel):
    """A refresh token already exchanged (``jti``): a second use is refused until it
    would have expired anyway."""

    jti = peewee.CharField(max_length=64, primary_key=True)
    until = peewee.DateTimeField()

    class Meta:
        table_name = "spent_refresh_tokens"
