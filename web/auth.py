"""JWT access and refresh tokens, rotation, and logout by revoking the session.

Every token carries ``sid``, the login session it belongs to. Logout revokes the
session for as long as any of its tokens could still be valid, so both the access and
the refresh token are refused. Refreshing marks the presented refresh token's ``jti``
as used (atomically), so an old refresh token is refused.

Revoked sessions and spent refresh tokens live in the database (the truth: a Redis
that restarts empty forgets nothing of them), and revoked sessions also in the memory of
every web process, so checking a token costs no round trip: a revocation is published
on the live hub and reaches every process. A process reads the whole set at start-up
and again after any gap in its hub connection; until then, and while the hub is
disconnected, it asks the database on each request.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import msgspec
import redis.asyncio as aioredis
import redis.exceptions
from aiohttp import web

from jobs import users
from jobs.clock import from_unix, unix, utcnow
from jobs.errors import DomainError
from jobs.platform import Event
from web.hub import LiveHub
from workers.events import encode_event, live_channel

log = logging.getLogger(__name__)
ALGORITHM = "HS256"
VERIFIED_CACHE = 100_000  # tokens whose signature was checked, per process
CACHED = frozenset({"access", "queue"})  # (a refresh token is used once)
SESSION_TOPIC = "session.revoked"
_DIGITS = re.compile(r"[0-9]{1,18}")
_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=") + b"."
_JSON = msgspec.json.Encoder()


def sign(claims: dict, key: bytes) -> str:
    """``claims`` as a compact HS256 JWT (RFC 7519), as ``jwt.encode`` makes it.

    Signing is the part of issuing a token that runs on every waiting-room join; PyJWT
    spends 17 us on it (it re-checks the key and algorithm each time), this 2.5 us.
    Verifying stays with PyJWT.
    """
    signing = _HEADER + base64.urlsafe_b64encode(_JSON.encode(claims)).rstrip(b"=")
    mac = base64.urlsafe_b64encode(hmac.digest(key, signing, "sha256")).rstrip(b"=")
    return (signing + b"." + mac).decode()


def new_id() -> str:
    """A random 128-bit id, as hex (what ``uuid4().hex`` gives, at a fifth of its cost)."""
    return os.urandom(16).hex()


class Tokens:
    """Issues and checks tokens; remembers revoked sessions and used refresh tokens."""

    def __init__(
        self,
        secret: str,
        access_ttl: int,
        refresh_ttl: int,
        client: aioredis.Redis,
        prefix: str,
        db: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        self.secret = secret
        self._key = secret.encode()
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.redis = client
        self.prefix = prefix
        self.db = db  # ``await db(fn, *args)``: the database (web.db.DbExecutor)
        self._revoked: dict[str, float] = {}  # sid -> when its last token expires
        self._hub: LiveHub | None = None
        self._synced = False  # the memory holds every revocation (else: ask Redis)
        self._loading: asyncio.Task | None = None
        self._verified: dict[str, dict] = {}  # access token -> its claims

    def issue(self, user_id: int, sid: str | None = None) -> dict:
        """A new access + refresh pair for ``user_id`` in session ``sid`` (new if None)."""
        sid = sid or new_id()
        now = int(time.time())
        access = self._encode(user_id, sid, "access", now, self.access_ttl)
        refresh = self._encode(user_id, sid, "refresh", now, self.refresh_ttl)
        return {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": self.access_ttl,
        }

    def _encode(self, user_id: int, sid: str, typ: str, now: int, ttl: int) -> str:
        claims = {
            "sub": str(user_id),
            "sid": sid,
            "typ": typ,
            "jti": new_id(),
            "iat": now,
            "exp": now + ttl,
        }
        return sign(claims, self._key)

    def decode(self, token: str, typ: str) -> dict:
        """Verified claims of a ``typ`` token; 401 ``TOKEN_EXPIRED`` or ``INVALID_TOKEN``.

        An access or queue token's signature is checked once per process: a client sends
        the same token for its lifetime, and the same string always verifies the same way
        (its expiry is checked on every use).
        """
        known = self._verified.get(token)
        if known is not None and known["typ"] == typ and time.time() < known["exp"]:
            return known
        if not token.isascii():  # (a header's non-UTF-8 bytes arrive as surrogates)
            raise DomainError("INVALID_TOKEN", "the token is not valid")
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[ALGORITHM],
                options={"require": ["sub", "sid", "typ", "jti", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise DomainError("TOKEN_EXPIRED", "the token has expired") from None
        except jwt.InvalidTokenError:
            raise DomainError("INVALID_TOKEN", "the token is not valid") from None
        sub = claims.get("sub")
        if claims.get("typ") != typ or not (isinstance(sub, str) and _DIGITS.fullmatch(sub)):
            raise DomainError("INVALID_TOKEN", f"an {typ} token is required")
        if typ in CACHED and isinstance(claims["exp"], int | float):
            if len(self._verified) >= VERIFIED_CACHE:
                self._verified.clear()
            self._verified[token] = claims
        return claims

    def issue_queue_token(self, user_id: int, concert_id: int, ttl: int = 86_400) -> str:
        """A signed waiting-room token, bound to one user and one concert."""
        now = int(time.time())
        claims = {"sub": str(user_id), "cid": concert_id, "sid": new_id(),
                  "typ": "queue", "jti": new_id(), "iat": now, "exp": now + ttl}
        return sign(claims, self._key)

    async def follow(self, hub: LiveHub) -> None:
        """Hold revocations in memory: read them all, then follow the hub (re-reading
        after each gap). Without this, every check asks Redis."""
        self._hub = hub
        hub.listen(SESSION_TOPIC, "", self._on_event)

        async def load_once_subscribed() -> None:  # (nothing published can slip between)
            await hub.connected.wait()
            await self._load()

        self._loading = asyncio.get_running_loop().create_task(load_once_subscribed())

    def _on_event(self, event: Event | None) -> None:
        if event is None:  # the hub was away: what was published meanwhile is missed
            self._synced = False
            if self._loading is None or self._loading.done():
                self._loading = asyncio.get_running_loop().create_task(self._load())
            return
        self._revoked[event.data["sid"]] = event.data["until"]

    async def _load(self) -> None:
        try:
            rows = await self.db(users.revoked_sessions, utcnow())
        except Exception as e:  # the database is away: checks keep asking it, as before
            log.warning("could not read revoked sessions", extra={"reason": repr(e)})
            return
        now = time.time()  # merged: an event may have overtaken this answer
        held = {sid: until for sid, until in self._revoked.items() if until > now}
        held.update((sid, unix(until)) for sid, until in rows.items())
        self._revoked = held
        self._synced = True

    async def check_session(self, claims: dict) -> None:
        """Refuse tokens of a logged-out session."""
        sid = claims["sid"]
        if self._synced and self._hub is not None and self._hub.connected.is_set():
            revoked = sid in self._revoked
        else:
            revoked = await self.db(users.is_revoked, sid, utcnow())
        if revoked:
            raise DomainError("INVALID_TOKEN", "the session has ended")

    async def revoke_session(self, sid: str) -> None:
        """End a session: every token of it is refused until the longest could expire.

        Recorded in the database first (the truth), then published to every web process
        (one that misses it reads the database again when its hub reconnects)."""
        until = time.time() + self.refresh_ttl + 60
        await self.db(users.revoke_session, sid, from_unix(until))
        self._revoked[sid] = until
        event = Event(SESSION_TOPIC, {"sid": sid, "until": until}, key="")
        try:
            await self.redis.publish(live_channel(self.prefix, SESSION_TOPIC),
                                     encode_event(event))
        except redis.exceptions.RedisError as e:
            log.warning("could not publish a revoked session", extra={"reason": repr(e)})

    async def use_refresh_token(self, claims: dict) -> None:
        """Spend a refresh token once; a second use is ``INVALID_TOKEN``."""
        until = from_unix(float(claims["exp"]) + 1)
        if not await self.db(users.spend_refresh_token, str(claims["jti"])[:64], until):
            raise DomainError("INVALID_TOKEN", "this refresh token was already used")


TOKENS = web.AppKey("tokens", Tokens)
_CLAIMS = web.RequestKey("claims", dict)
_ADMIN = web.RequestKey("admin", int)


async def access_claims(request: web.Request, *, allow_query: bool = False) -> dict:
    """The verified access-token claims of the request; 401 without a valid Bearer token.

    With ``allow_query`` (event streams: browsers' EventSource cannot send headers), an
    ``?access_token=`` stands in for the header. No log ever records query strings.
    Checked once per request: a route that authenticates before decoding its body and a
    handler that asks again share the answer.
    """
    cached = request.get(_CLAIMS)
    if cached is not None:
        return cached
    header = request.headers.get("Authorization", "")
    if not header and allow_query and request.query.get("access_token"):
        header = f"Bearer {request.query['access_token']}"
    claims = await bearer_claims(request.app[TOKENS], header)
    request[_CLAIMS] = claims
    return claims


async def bearer_claims(tokens: Tokens, header: str) -> dict:
    """The verified claims of an ``Authorization`` header's access token (``""``: none
    was sent): 401 ``UNAUTHORIZED`` without one, ``INVALID_TOKEN`` for a bad one."""
    if not header:
        raise DomainError("UNAUTHORIZED", "an Authorization: Bearer token is required")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise DomainError("INVALID_TOKEN", "the Authorization header must be 'Bearer <token>'")
    claims = tokens.decode(token.strip(), "access")
    await tokens.check_session(claims)
    return claims


async def bearer_user(tokens: Tokens, header: str) -> int:
    """The user of an ``Authorization`` header (``bearer_claims``)."""
    return int((await bearer_claims(tokens, header))["sub"])


async def require_stream_user(request: web.Request) -> int:
    """The user of an event stream: Bearer header or ``?access_token=``."""
    return int((await access_claims(request, allow_query=True))["sub"])


async def require_user(request: web.Request) -> int:
    """The id of the authenticated user."""
    return int((await access_claims(request))["sub"])


async def optional_user(request: web.Request) -> int | None:
    """The authenticated user, or None for a request with no ``Authorization`` header
    (a public read); a token that is sent must be valid."""
    if "Authorization" not in request.headers:
        return None
    return await require_user(request)


async def require_admin(request: web.Request) -> int:
    """The id of the authenticated user, who must hold the admin role (else 403)."""
    from jobs.users import get_user
    from web.commands import DB

    user_id = await require_user(request)
    if request.get(_ADMIN) == user_id:
        return user_id
    user = await request.app[DB](get_user, user_id)
    if not user.is_admin:
        raise DomainError("INVALID_PERMISSION", "this needs the admin role")
    request[_ADMIN] = user_id
    return user_id
