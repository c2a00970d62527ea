"""JWT access and refresh tokens, rotation, and logout by revoking the session.

Every token carries ``sid``, the login session it belongs to. Logout revokes the
session in Redis for as long as any of its tokens could still be valid, so both the
access and the refresh token are refused. Refreshing marks the presented refresh
token's ``jti`` as used (atomically), so an old refresh token is refused.
"""

from __future__ import annotations

import re
import time
import uuid

import jwt
import redis.asyncio as aioredis
from aiohttp import web

from jobs.errors import DomainError

ALGORITHM = "HS256"
_DIGITS = re.compile(r"[0-9]{1,18}")


class Tokens:
    """Issues and checks tokens; remembers revoked sessions and used refresh tokens."""

    def __init__(
        self,
        secret: str,
        access_ttl: int,
        refresh_ttl: int,
        client: aioredis.Redis,
        prefix: str,
    ) -> None:
        self.secret = secret
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.redis = client
        self.prefix = prefix

    def issue(self, user_id: int, sid: str | None = None) -> dict:
        """A new access + refresh pair for ``user_id`` in session ``sid`` (new if None)."""
        sid = sid or uuid.uuid4().hex
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
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + ttl,
        }
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def decode(self, token: str, typ: str) -> dict:
        """Verified claims of a ``typ`` token; 401 ``TOKEN_EXPIRED`` or ``INVALID_TOKEN``."""
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
        return claims

    def issue_queue_token(self, user_id: int, concert_id: int, ttl: int = 86_400) -> str:
        """A signed waiting-room token, bound to one user and one concert."""
        now = int(time.time())
        claims = {"sub": str(user_id), "cid": concert_id, "sid": uuid.uuid4().hex,
                  "typ": "queue", "jti": uuid.uuid4().hex, "iat": now, "exp": now + ttl}
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def _revoked_key(self, sid: str) -> str:
        return f"{self.prefix}:auth:revoked:{sid}"

    async def check_session(self, claims: dict) -> None:
        """Refuse tokens of a logged-out session."""
        if await self.redis.exists(self._revoked_key(claims["sid"])):
            raise DomainError("INVALID_TOKEN", "the session has ended")

    async def revoke_session(self, sid: str) -> None:
        """End a session: every token of it is refused until the longest could expire."""
        await self.redis.set(self._revoked_key(sid), 1, ex=self.refresh_ttl + 60)

    async def use_refresh_token(self, claims: dict) -> None:
        """Spend a refresh token once; a second use is ``INVALID_TOKEN``."""
        ttl = max(1, int(claims["exp"]) - int(time.time()) + 1)
        key = f"{self.prefix}:auth:used:{claims['jti']}"
        if not await self.redis.set(key, 1, nx=True, ex=ttl):
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
    scheme, _, token = header.partition(" ")
    if not header and allow_query and request.query.get("access_token"):
        scheme, token = "bearer", request.query["access_token"]
    elif not header:
        raise DomainError("UNAUTHORIZED", "an Authorization: Bearer token is required")
    if scheme.lower() != "bearer" or not token.strip():
        raise DomainError("INVALID_TOKEN", "the Authorization header must be 'Bearer <token>'")
    tokens = request.app[TOKENS]
    claims = tokens.decode(token.strip(), "access")
    await tokens.check_session(claims)
    request[_CLAIMS] = claims
    return claims


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
