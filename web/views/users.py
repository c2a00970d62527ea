"""``/users``: signup, login, refresh, logout, me, phone verification."""

from __future__ import annotations

import asyncio

import msgspec
from aiohttp import web

from db.settings import Settings
from jobs import users
from jobs.clock import utcnow
from jobs.errors import DomainError
from web.auth import TOKENS, access_claims, require_user
from web.commands import DB
from web.phone import PHONE_CODES
from web.responses import json_response
from web.routing import Route
from web.shapes import Text
from workers.limits import Limits

SETTINGS = web.AppKey("settings", Settings)
LIMITS = web.AppKey("limits", Limits)
REFRESH_COOKIE = "refresh_token"
Phone = Text(8, 16, r"\+?[0-9]{8,15}", "8..15 digits, optionally after +")


class Signup(msgspec.Struct, forbid_unknown_fields=True):
    """A new account."""

    username: Text(3, 32, "[a-zA-Z0-9_]+", "letters, digits and _")
    password: Text(8, 72)
    phone: Phone | None = None
    is_artist: bool = False


class Login(msgspec.Struct, forbid_unknown_fields=True):
    """Credentials."""

    username: Text(1, 32)
    password: Text(1, 72)


class Refresh(msgspec.Struct, forbid_unknown_fields=True):
    """A refresh token (or none: the cookie is used)."""

    refresh_token: Text(1, 4096) | None = None


class PhoneCode(msgspec.Struct, forbid_unknown_fields=True):
    """The phone number to send a code to."""

    phone: Phone


class PhoneVerify(msgspec.Struct, forbid_unknown_fields=True):
    """The code the phone received."""

    phone: Phone
    code: Text(6, 6, "[0-9]{6}", "6 digits")


class NewUser(msgspec.Struct):
    """A created account."""

    id: int
    username: str
    is_artist: bool


class Me(msgspec.Struct):
    """The caller's account."""

    id: int
    username: str
    is_artist: bool
    phone_verified: bool


class TokenPair(msgspec.Struct):
    """Access and refresh tokens."""

    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int


class CodeSent(msgspec.Struct):
    """Where the code went and how long it lives."""

    phone: str
    expires_in: int


async def signup(request: web.Request, body: Signup) -> web.Response:
    """``POST /users/signup``: 201 with the new user."""
    settings = request.app[SETTINGS]
    digest = await asyncio.to_thread(users.hash_password, body.password, settings.scrypt_n)
    user = await request.app[DB](users.create_user, body.username, digest, utcnow(),
                                 phone=body.phone, is_artist=body.is_artist)
    return json_response({"id": user.id, "username": user.username,
                          "is_artist": user.is_artist}, 201)


def client_address(request: web.Request, trusted_proxy_hops: int = 0) -> str:
    """The caller's address: the peer's, or behind ``trusted_proxy_hops`` proxies, the one
    the outermost of them saw (each appends its peer to ``X-Forwarded-For``; entries
    further left were written by the client and are not believed)."""
    if trusted_proxy_hops > 0:
        forwarded = [a.strip() for line in request.headers.getall("X-Forwarded-For", ())
                     for a in line.split(",") if a.strip()]
        if forwarded:
            return forwarded[-min(trusted_proxy_hops, len(forwarded))]
    return request.remote or "unknown"


async def login(request: web.Request, body: Login) -> web.Response:
    """``POST /users/login``: a token pair; the refresh token also as an HttpOnly cookie.

    429 once the username or the client address has too many recent failures, before any
    password is checked. Only a failure counts (an unknown user or a wrong password): a
    success, or a fault, is given back, and resets nothing.
    """
    limits = request.app[LIMITS]
    address = client_address(request, request.app[SETTINGS].trusted_proxy_hops)
    attempt = await limits.login_attempt(body.username, address)  # counted as failed
    try:
        user = await request.app[DB](users.find_user, body.username)
        right = await asyncio.to_thread(users.verify_password, body.password,
                                        user.password_hash)
    except DomainError:  # USER_NOT_FOUND: a failed login, it stays counted
        raise
    except Exception:  # a fault (the database is down, say) is no failed login
        await limits.give_back(attempt)
        raise
    if not right:
        raise DomainError("INVALID_PASSWORD", "the password is wrong")
    await limits.give_back(attempt)
    return _token_response(request, request.app[TOKENS].issue(user.id))


async def refresh(request: web.Request, body: Refresh) -> web.Response:
    """``POST /users/refresh``: rotate the pair; the presented refresh token stops working."""
    token = body.refresh_token or request.cookies.get(REFRESH_COOKIE)
    if not token:
        raise DomainError("INVALID_TOKEN", "a refresh token is required")
    tokens = request.app[TOKENS]
    claims = tokens.decode(token, "refresh")
    await tokens.check_session(claims)
    await tokens.use_refresh_token(claims)
    return _token_response(request, tokens.issue(int(claims["sub"]), claims["sid"]))


def _token_response(request: web.Request, pair: dict) -> web.Response:
    settings = request.app[SETTINGS]
    response = json_response(pair)
    response.set_cookie(
        REFRESH_COOKIE,
        pair["refresh_token"],
        max_age=settings.refresh_token_ttl,
        path="/api/v1/users",
        httponly=True,
        secure=settings.secure_cookies,
        samesite="Strict",
    )
    return response


async def logout(request: web.Request) -> web.Response:
    """``POST /users/logout``: 204; the session's access and refresh tokens are refused."""
    claims = await access_claims(request)
    await request.app[TOKENS].revoke_session(claims["sid"])
    response = web.Response(status=204)
    response.del_cookie(REFRESH_COOKIE, path="/api/v1/users")
    return response


async def me(request: web.Request) -> web.Response:
    """``GET /users/me``."""
    user_id = await require_user(request)
    user = await request.app[DB](users.get_user, user_id)
    return json_response(users.user_view(user))


async def phone_code(request: web.Request, body: PhoneCode) -> web.Response:
    """``POST /users/me/phone/code``: 202; a code goes out through the SMS sender."""
    user_id = await require_user(request)
    await request.app[LIMITS].phone_code(user_id, body.phone)
    codes = request.app[PHONE_CODES]
    await codes.send(user_id, body.phone)
    return json_response({"phone": body.phone, "expires_in": codes.ttl}, 202)


async def phone_verify(request: web.Request, body: PhoneVerify) -> web.Response:
    """``POST /users/me/phone/verify``: 200 and the phone is verified, or 400."""
    user_id = await require_user(request)
    await request.app[PHONE_CODES].check(user_id, body.phone, body.code)
    await request.app[DB](users.set_verified_phone, user_id, body.phone)
    user = await request.app[DB](users.get_user, user_id)
    return json_response(users.user_view(user))


ROUTES = [
    Route("POST", "/users/signup", signup, "Create an account", body=Signup, response=NewUser,
          status=201, errors=("DUPLICATED_USER_NAME",), auth="none"),
    Route("POST", "/users/login", login, "Log in", body=Login, response=TokenPair,
          errors=("USER_NOT_FOUND", "INVALID_PASSWORD", "RATE_LIMITED"), auth="none"),
    Route("POST", "/users/refresh", refresh, "Rotate the token pair", body=Refresh,
          response=TokenPair, errors=("INVALID_TOKEN", "TOKEN_EXPIRED"), auth="none"),
    Route("POST", "/users/logout", logout, "Log out (both tokens stop working)", status=204),
    Route("GET", "/users/me", me, "The caller's account", response=Me),
    Route("POST", "/users/me/phone/code", phone_code, "Send a 6-digit code to a phone",
          body=PhoneCode, response=CodeSent, status=202, errors=("RATE_LIMITED",)),
    Route("POST", "/users/me/phone/verify", phone_verify, "Verify a phone with its code",
          body=PhoneVerify, response=Me, errors=("INVALID_VERIFICATION_CODE",)),
]
