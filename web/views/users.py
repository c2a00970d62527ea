"""``/users``: signup, login, refresh, logout, me, phone verification."""

from __future__ import annotations

import asyncio

from aiohttp import web

from db.settings import Settings
from jobs import users
from jobs.clock import utcnow
from jobs.errors import DomainError
from web.auth import TOKENS, access_claims, require_user
from web.commands import DB
from web.phone import PHONE_CODES
from web.responses import json_response
from web.validation import Bool, Str, read_json

SETTINGS = web.AppKey("settings", Settings)
REFRESH_COOKIE = "refresh_token"
PHONE = Str(8, 16, r"\+?[0-9]{8,15}", "must be 8..15 digits, optionally after +")

SIGNUP = {
    "username": Str(3, 32, r"[a-zA-Z0-9_]+", "may use letters, digits and _"),
    "password": Str(8, 72),
    "phone": Str(8, 16, r"\+?[0-9]{8,15}", "must be 8..15 digits", required=False),
    "is_artist": Bool(required=False),
}
LOGIN = {"username": Str(1, 32), "password": Str(1, 72)}
REFRESH = {"refresh_token": Str(1, 4096, required=False)}
PHONE_CODE = {"phone": PHONE}
PHONE_VERIFY = {"phone": PHONE, "code": Str(6, 6, r"[0-9]{6}", "must be 6 digits")}


async def signup(request: web.Request) -> web.Response:
    """``POST /users/signup``: 201 with the new user."""
    body = await read_json(request, SIGNUP)
    settings = request.app[SETTINGS]
    digest = await asyncio.to_thread(users.hash_password, body["password"], settings.scrypt_n)
    user = await request.app[DB](
        users.create_user,
        body["username"],
        digest,
        utcnow(),
        phone=body.get("phone"),
        is_artist=body.get("is_artist", False),
    )
    return json_response({"id": user.id, "username": user.username,
                          "is_artist": user.is_artist}, 201)


async def login(request: web.Request) -> web.Response:
    """``POST /users/login``: a token pair; the refresh token also as an HttpOnly cookie."""
    body = await read_json(request, LOGIN)
    user = await request.app[DB](users.find_user, body["username"])
    if not await asyncio.to_thread(users.verify_password, body["password"], user.password_hash):
        raise DomainError("INVALID_PASSWORD", "the password is wrong")
    return _token_response(request, request.app[TOKENS].issue(user.id))


async def refresh(request: web.Request) -> web.Response:
    """``POST /users/refresh``: rotate the pair; the presented refresh token stops working."""
    body = await read_json(request, REFRESH)
    token = body.get("refresh_token") or request.cookies.get(REFRESH_COOKIE)
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


async def phone_code(request: web.Request) -> web.Response:
    """``POST /users/me/phone/code``: 202; a code goes out through the SMS sender."""
    user_id = await require_user(request)
    body = await read_json(request, PHONE_CODE)
    codes = request.app[PHONE_CODES]
    await codes.send(user_id, body["phone"])
    return json_response({"phone": body["phone"], "expires_in": codes.ttl}, 202)


async def phone_verify(request: web.Request) -> web.Response:
    """``POST /users/me/phone/verify``: 200 and the phone is verified, or 400."""
    user_id = await require_user(request)
    body = await read_json(request, PHONE_VERIFY)
    await request.app[PHONE_CODES].check(user_id, body["phone"], body["code"])
    await request.app[DB](users.set_verified_phone, user_id, body["phone"])
    user = await request.app[DB](users.get_user, user_id)
    return json_response(users.user_view(user))
