"""Accounts: passwords, sign-up, admin creation, phone verification."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

import peewee

from db.connection import database, execute, is_postgres
from db.models import PointWallet, RevokedSession, SpentRefreshToken, User
from jobs.errors import DomainError
from jobs.platform import Context, Domain, Periodic

_SCRYPT_R, _SCRYPT_P = 8, 1


def hash_password(password: str, n: int = 2**14) -> str:
    """A slow salted scrypt hash: ``scrypt$n$r$p$salt$hash`` (cost travels with the hash)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=_SCRYPT_R, p=_SCRYPT_P, maxmem=128 * n * 8 * 2
    )
    return f"scrypt${n}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Check a password against :func:`hash_password` output in constant time."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(
        password.encode(),
        salt=bytes.fromhex(salt),
        n=int(n),
        r=int(r),
        p=int(p),
        maxmem=128 * int(n) * int(r) * 2,
    )
    return hmac.compare_digest(candidate.hex(), digest)


def user_view(user: User) -> dict:
    """The public fields of a user."""
    return {
        "id": user.id,
        "username": user.username,
        "is_artist": user.is_artist,
        "phone_verified": user.phone_verified,
    }


def create_user(
    username: str,
    password_hash: str,
    now: datetime,
    *,
    phone: str | None = None,
    is_artist: bool = False,
    is_admin: bool = False,
) -> User:
    """Create a user and an empty point wallet; ``DUPLICATED_USER_NAME`` if taken."""
    try:
        with database.atomic():
            user = User.create(
                username=username,
                password_hash=password_hash,
                phone=phone,
                is_artist=is_artist,
                is_admin=is_admin,
                created_at=now,
            )
            PointWallet.create(user=user.id, balance=0, updated_at=now)
    except peewee.IntegrityError:
        raise DomainError("DUPLICATED_USER_NAME", "this username is taken") from None
    return user


def make_admin(username: str, password_hash: str, now: datetime) -> tuple[User, bool]:
    """Create an admin, or promote an existing user (keeping its password); ``(user, created)``."""
    try:
        return create_user(username, password_hash, now, is_admin=True), True
    except DomainError:
        User.update(is_admin=True).where(User.username == username).execute()
        return User.get(User.username == username), False


def find_user(username: str) -> User:
    """The user of that name, or ``USER_NOT_FOUND``."""
    user = User.get_or_none(User.username == username)
    if user is None:
        raise DomainError("USER_NOT_FOUND", "no user with this username")
    return user


def get_user(user_id: int) -> User:
    """The user with that id, or ``USER_NOT_FOUND``."""
    user = User.get_or_none(User.id == user_id)
    if user is None:
        raise DomainError("USER_NOT_FOUND", "no such user")
    return user


def set_verified_phone(user_id: int, phone: str) -> None:
    """Record a phone number whose code the user proved they received."""
    User.update(phone=phone, phone_verified=True).where(User.id == user_id).execute()


# -- logged-out sessions and spent refresh tokens (the truth; see web.auth.Tokens) ------


def revoke_session(sid: str, until: datetime) -> None:
    """Refuse session ``sid``'s tokens until ``until`` (a later logout only extends it)."""
    later = "GREATEST" if is_postgres() else "MAX"  # (SQLite's two-argument MAX)
    execute("INSERT INTO revoked_sessions (sid, until) VALUES (%s, %s) ON CONFLICT (sid)"
            f" DO UPDATE SET until = {later}(revoked_sessions.until, EXCLUDED.until)",
            (sid, until))


def revoked_sessions(now: datetime) -> dict[str, datetime]:
    """Every session still revoked at ``now``: ``{sid: until}``."""
    rows = RevokedSession.select().where(RevokedSession.until > now).tuples()
    return dict(rows)


def is_revoked(sid: str, now: datetime) -> bool:
    """True if session ``sid`` is revoked at ``now``."""
    return RevokedSession.select().where(
        (RevokedSession.sid == sid) & (RevokedSession.until > now)).exists()


def spend_refresh_token(jti: str, until: datetime) -> bool:
    """Mark refresh token ``jti`` used; False if it already was (atomically: of two
    requests presenting it at once, one wins)."""
    return execute("INSERT INTO spent_refresh_tokens (jti, until) VALUES (%s, %s)"
                   " ON CONFLICT (jti) DO NOTHING RETURNING jti", (jti, until)).fetchone() \
        is not None


def forget_expired_tokens(ctx: Context) -> dict:
    """Drop revocations and spent refresh tokens whose tokens have all expired."""
    with database.atomic():
        sessions = RevokedSession.delete().where(RevokedSession.until <= ctx.now).execute()
        spent = SpentRefreshToken.delete().where(SpentRefreshToken.until <= ctx.now).execute()
    return {"sessions": sessions, "refresh_tokens": spent}


DOMAIN = Domain(
    name="users",
    models=(User, RevokedSession, SpentRefreshToken),
    periodic=(Periodic("tokens.forget_expired", forget_expired_tokens, cron="41 * * * *"),),
)
