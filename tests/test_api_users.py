"""Contract tests for /users: signup, login, refresh, logout, me and phone verification.

Binding contract: /work/shared/API.md, sections "Conventions" and "Users and auth".
"""

from __future__ import annotations

import json
import time
import uuid
import warnings

import jwt
import pytest
import redis

from web.auth import sign as server_sign

PASSWORD = "password123"
PHONE = "+821012345678"


def new_name(prefix: str = "u") -> str:
    """A username no other test uses."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def claims_for(user_id: int, typ: str = "access", *, exp_offset: int = 600) -> dict:
    """Token claims in the server's shape, expiring ``exp_offset`` seconds from now."""
    now = int(time.time())
    return {
        "sub": str(user_id),
        "sid": uuid.uuid4().hex,
        "typ": typ,
        "jti": uuid.uuid4().hex,
        "iat": now - 3600,
        "exp": now + exp_offset,
    }


def sign(claims: dict, secret: str | None, algorithm: str = "HS256") -> str:
    """A JWT of ``claims`` (short test secrets are fine here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return jwt.encode(claims, secret, algorithm=algorithm)


def new_phone() -> str:
    """A phone number no other test sends codes to (each number has a budget of its own)."""
    return f"+8210{uuid.uuid4().int % 10**8:08d}"


def other_code(code: str) -> str:
    """A six-digit code that is certainly not ``code``."""
    return f"{(int(code) + 1) % 10**6:06d}"


@pytest.fixture
def api(stack):
    return stack.api


@pytest.fixture
def rds(settings):
    client = redis.Redis.from_url(settings.redis_url)
    yield client
    client.close()


@pytest.fixture
def user(api):
    """A signed-up, logged-in user: name, id, access and refresh tokens."""
    name = new_name()
    signup = api.post("/users/signup", {"username": name, "password": PASSWORD})
    assert signup.status == 201, signup
    pair = api.login(name)
    return {"name": name, "id": signup.body["id"], "phone": new_phone(), **pair}


def code_key(settings, user_id: int) -> str:
    return f"{settings.redis_prefix}:phone:code:{user_id}"


def request_code(api, rds, settings, user, phone: str | None = None) -> str:
    """Ask for a phone code (for the user's own number unless told) and read it back."""
    reply = api.post("/users/me/phone/code", {"phone": phone or user["phone"]},
                     token=user["access_token"])
    assert reply.status == 202, reply
    code = rds.hget(code_key(settings, user["id"]), "code")
    assert code is not None
    return code.decode()


# -- signup ----------------------------------------------------------------------------


def test_signup_returns_201_with_the_new_user(api):
    # Given an unused username
    name = new_name()
    # When signing up
    reply = api.post("/users/signup", {"username": name, "password": PASSWORD})
    # Then the user is created and only its public fields come back
    assert reply.status == 201, reply
    assert set(reply.body) == {"id", "username", "is_artist"}
    assert isinstance(reply.body["id"], int)
    assert reply.body["username"] == name
    assert reply.body["is_artist"] is False


def test_signup_as_artist_with_phone_is_kept(api):
    # Given an artist signing up with a phone number
    name = new_name()
    reply = api.post(
        "/users/signup",
        {"username": name, "password": PASSWORD, "phone": PHONE, "is_artist": True},
    )
    # When they look at themselves
    assert reply.status == 201, reply
    me = api.get("/users/me", token=api.login(name)["access_token"])
    # Then they are an artist whose phone is not verified yet
    assert reply.body["is_artist"] is True
    assert me.body["is_artist"] is True
    assert me.body["phone_verified"] is False


def test_signup_with_a_taken_username_is_409(api):
    # Given an existing user
    name = new_name()
    assert api.post("/users/signup", {"username": name, "password": PASSWORD}).status == 201
    # When someone signs up with the same name
    reply = api.post("/users/signup", {"username": name, "password": "another-pass"})
    # Then it is a conflict
    assert reply.status == 409, reply
    assert reply.code == "DUPLICATED_USER_NAME"


@pytest.mark.parametrize("length", [3, 32])
def test_signup_accepts_usernames_at_the_length_bounds(api, length):
    # Given a username of exactly the minimum or maximum length
    name = ("x" + uuid.uuid4().hex)[:length]
    # When signing up
    reply = api.post("/users/signup", {"username": name, "password": PASSWORD})
    # Then it is accepted
    assert reply.status == 201, reply
    assert reply.body["username"] == name


@pytest.mark.parametrize("length", [8, 72])
def test_signup_accepts_passwords_at_the_length_bounds(api, length):
    # Given a password of exactly the minimum or maximum length
    name = new_name()
    password = "p" * length
    # When signing up
    reply = api.post("/users/signup", {"username": name, "password": password})
    # Then it is accepted and the password logs in
    assert reply.status == 201, reply
    assert api.post("/users/login", {"username": name, "password": password}).status == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "ab", "password": PASSWORD}, "username"),
        ({"username": "a" * 33, "password": PASSWORD}, "username"),
        ({"username": "bad-name", "password": PASSWORD}, "username"),
        ({"username": "bad name", "password": PASSWORD}, "username"),
        ({"username": "ünïcode_", "password": PASSWORD}, "username"),
        ({"username": 12345, "password": PASSWORD}, "username"),
        ({"password": PASSWORD}, "username"),
        ({"username": "valid_name", "password": "short7!"}, "password"),
        ({"username": "valid_name", "password": "p" * 73}, "password"),
        ({"username": "valid_name"}, "password"),
        ({"username": "valid_name", "password": PASSWORD, "is_artist": "yes"}, "is_artist"),
        ({"username": "valid_name", "password": PASSWORD, "phone": "call-me"}, "phone"),
        ({"username": "valid_name", "password": PASSWORD, "role": "admin"}, "role"),
    ],
    ids=[
        "username-too-short", "username-too-long", "username-dash", "username-space",
        "username-non-ascii", "username-not-string", "username-missing", "password-too-short",
        "password-too-long", "password-missing", "is_artist-not-bool", "phone-bad-format",
        "unknown-field",
    ],
)
def test_signup_with_an_invalid_field_is_400_naming_it(api, body, field):
    # Given a signup body with one offending field
    # When signing up
    reply = api.post("/users/signup", body)
    # Then it is refused and the field is named
    assert reply.status == 400, reply
    assert reply.code == "INVALID_REQUEST"
    assert field in reply.body["error"]["fields"]


def test_signup_names_every_offending_field(api):
    # Given a body where both username and password are wrong
    body = {"username": "a", "password": "x"}
    # When signing up
    reply = api.post("/users/signup", body)
    # Then both fields are named
    assert reply.status == 400, reply
    assert {"username", "password"} <= set(reply.body["error"]["fields"])


@pytest.mark.parametrize(
    "raw", [b'{"username": "abc", ', b"[]", b'"text"', b"null"],
    ids=["malformed", "list", "string", "null"],
)
def test_signup_with_a_non_object_body_is_400(api, raw):
    # Given a body that is not a JSON object
    # When signing up
    reply = api.post("/users/signup", raw=raw)
    # Then it is refused with INVALID_REQUEST naming the body
    assert reply.status == 400, reply
    assert reply.code == "INVALID_REQUEST"
    assert reply.body["error"]["fields"]


def test_signup_with_a_body_over_64_kib_is_413(api):
    # Given a body one byte over 64 KiB
    prefix = b'{"username": "big_body", "password": "'
    raw = prefix + b"p" * (64 * 1024 + 1 - len(prefix) - 2) + b'"}'
    assert len(raw) == 64 * 1024 + 1
    # When signing up
    reply = api.post("/users/signup", raw=raw)
    # Then it is refused as too large
    assert reply.status == 413, reply
    assert reply.code == "PAYLOAD_TOO_LARGE"


# -- login -----------------------------------------------------------------------------


def test_login_returns_a_bearer_token_pair(api, user):
    # Given a user
    # When logging in
    reply = api.post("/users/login", {"username": user["name"], "password": PASSWORD})
    # Then a token pair comes back and the access token identifies the user
    assert reply.status == 200, reply
    assert set(reply.body) >= {"access_token", "refresh_token", "token_type", "expires_in"}
    assert reply.body["token_type"] == "Bearer"
    assert isinstance(reply.body["expires_in"], int) and reply.body["expires_in"] > 0
    me = api.get("/users/me", token=reply.body["access_token"])
    assert me.status == 200 and me.body["id"] == user["id"]


def test_login_sets_the_refresh_token_as_an_httponly_cookie(api, user):
    # Given a user
    # When logging in
    reply = api.post("/users/login", {"username": user["name"], "password": PASSWORD})
    # Then the refresh token is also set as an HttpOnly cookie
    cookie = reply.headers.get("set-cookie", "")
    assert f"refresh_token={reply.body['refresh_token']}" in cookie
    assert "httponly" in cookie.lower()


def test_login_of_an_unknown_user_is_404(api):
    # Given a username nobody has
    # When logging in with it
    reply = api.post("/users/login", {"username": new_name(), "password": PASSWORD})
    # Then the user is not found
    assert reply.status == 404, reply
    assert reply.code == "USER_NOT_FOUND"


def test_login_with_a_wrong_password_is_401(api, user):
    # Given a user
    # When logging in with a wrong password
    reply = api.post("/users/login", {"username": user["name"], "password": "wrong-password"})
    # Then it is refused without tokens
    assert reply.status == 401, reply
    assert reply.code == "INVALID_PASSWORD"
    assert "access_token" not in reply.body


def test_login_without_a_password_is_400(api, user):
    # Given a login body missing the password
    # When logging in
    reply = api.post("/users/login", {"username": user["name"]})
    # Then the request is invalid, naming the field
    assert reply.status == 400, reply
    assert reply.code == "INVALID_REQUEST"
    assert "password" in reply.body["error"]["fields"]


# -- refresh ---------------------------------------------------------------------------


def test_refresh_with_the_body_returns_a_new_working_pair(api, user):
    # Given a logged-in user
    # When refreshing with the refresh token in the body
    reply = api.post("/users/refresh", {"refresh_token": user["refresh_token"]})
    # Then a new pair comes back and its access token works
    assert reply.status == 200, reply
    assert reply.body["token_type"] == "Bearer"
    assert reply.body["refresh_token"] != user["refresh_token"]
    assert reply.body["access_token"] != user["access_token"]
    me = api.get("/users/me", token=reply.body["access_token"])
    assert me.status == 200 and me.body["id"] == user["id"]


def test_refresh_with_the_cookie_returns_a_new_pair(api, user):
    # Given a logged-in user holding the refresh cookie
    cookie = {"Cookie": f"refresh_token={user['refresh_token']}"}
    # When refreshing with only the cookie
    reply = api.post("/users/refresh", headers=cookie)
    # Then a new pair comes back
    assert reply.status == 200, reply
    assert reply.body["refresh_token"] != user["refresh_token"]
    assert api.get("/users/me", token=reply.body["access_token"]).status == 200


def test_a_refresh_token_works_only_once(api, user):
    # Given a refresh token that was already used
    first = api.post("/users/refresh", {"refresh_token": user["refresh_token"]})
    assert first.status == 200, first
    # When it is used again
    reply = api.post("/users/refresh", {"refresh_token": user["refresh_token"]})
    # Then it is refused
    assert reply.status == 401, reply
    assert reply.code == "INVALID_TOKEN"


def test_the_rotated_refresh_token_works(api, user):
    # Given a pair obtained by refreshing
    second = api.post("/users/refresh", {"refresh_token": user["refresh_token"]}).body
    # When refreshing with the new refresh token
    reply = api.post("/users/refresh", {"refresh_token": second["refresh_token"]})
    # Then it is accepted
    assert reply.status == 200, reply


def test_refresh_with_an_access_token_is_401(api, user):
    # Given an access token
    # When presenting it as a refresh token
    reply = api.post("/users/refresh", {"refresh_token": user["access_token"]})
    # Then it is refused
    assert reply.status == 401, reply
    assert reply.code == "INVALID_TOKEN"


def test_refresh_without_any_token_is_401(api):
    # Given no refresh token in body or cookie
    # When refreshing
    reply = api.post("/users/refresh", {})
    # Then it is refused
    assert reply.status == 401, reply
    assert reply.code == "INVALID_TOKEN"


@pytest.mark.parametrize("kind", ["garbage", "forged"])
def test_refresh_with_a_bad_token_is_401(api, user, kind):
    # Given a token that is garbage or signed with another secret
    token = (
        "not.a.jwt" if kind == "garbage"
        else sign(claims_for(user["id"], "refresh"), "wrong-secret")
    )
    # When refreshing with it
    reply = api.post("/users/refresh", {"refresh_token": token})
    # Then it is refused
    assert reply.status == 401, reply
    assert reply.code == "INVALID_TOKEN"


# -- logout ----------------------------------------------------------------------------


def test_logout_is_204(api, user):
    # Given a logged-in user
    # When logging out
    reply = api.post("/users/logout", token=user["access_token"])
    # Then the answer is 204 with no body
    assert reply.status == 204, reply
    assert reply.body is None


def test_after_logout_the_access_token_is_refused(api, user):
    # Given a user who logged out
    assert api.post("/users/logout", token=user["access_token"]).status == 204
    # When using the access token again
    reply = api.get("/users/me", token=user["access_token"])
    # Then it is refused
    assert reply.status == 401, reply
    assert reply.code == "INVALID_TOKEN"


def test_after_logout_the_refresh_token_is_refused(api, user):
    # Given a user who logged out
    assert api.post("/users/logout", token=user["access_token"]).status == 204
    # When refreshing with the session's refresh token
    reply = api.post("/users/refresh", {"refresh_token": user["refresh_token"]})
    # Then it is refused
    assert reply.status == 401, reply
    assert reply.code == "INVALID_TOKEN"


def test_logout_leaves_other_sessions_alone(api, user):
    # Given the same user logged in a second time
    other = api.login(user["name"])
    # When the first session logs out
    assert api.post("/users/logout", token=user["access_token"]).status == 204
    # Then the second session still works
    assert api.get("/users/me", token=other["access_token"]).status == 200


def test_logout_without_a_token_is_401(api):
    # Given no Authorization header
    # When logging out
    reply = api.post("/users/logout")
    # Then it is unauthorized
    assert reply.status == 401, reply
    assert reply.code == "UNAUTHORIZED"


def test_logout_with_a_refresh_token_is_401(api, user):
    # Given a refresh token in the Authorization header
    # When logging out with it
    reply = api.post("/users/logout", token=user["refresh_token"])
    # Then it is refused and the session still works
    assert reply.status == 401, reply
    assert reply.code == "INVALID_TOKEN"
    assert api.get("/users/me", token=user["access_token"]).status == 200


# -- me and token checks ---------------------------------------------------------------


def test_me_returns_the_caller(api, user):
    # Given a logged-in user
    # When asking who they are
    reply = api.get("/users/me", token=user["access_token"])
    # Then their public profile comes back
    assert reply.status == 200, reply
    assert reply.body == {
        "id": user["id"], "username": user["name"], "is_artist": False, "phone_verified": False,
    }


def test_me_without_a_token_is_401_unauthorized(api):
    # Given no Authorization header
    # When calling /users/me
    reply = api.get("/users/me")
    # Then it is unauthorized
    assert reply.status == 401, reply
    assert reply.code == "UNAUTHORIZED"


def test_an_expired_access_token_is_401_token_expired(api, settings, user):
    # Given an access token correctly signed but expired
    token = sign(claims_for(user["id"], exp_offset=-60), settings.jwt_secret)
    # When using it
    reply = api.get("/users/me", token=token)
    # Then it is refused as expired
    assert reply.status == 401, reply
    assert reply.code == "TOKEN_EXPIRED"


@pytest.mark.parametrize("kind", ["garbage", "wrong-secret", "alg-none", "refresh-token"])
def test_an_invalid_access_token_is_401_invalid_token(api, user, kind):
    # Given a token that is not a valid access token
    token = {
        "garbage": "garbage",
        "wrong-secret": sign(claims_for(user["id"]), "wrong-secret"),
        "alg-none": sign(claims_for(user["id"]), None, "none"),
        "refresh-token": user["refresh_token"],
    }[kind]
    # When using it
    reply = api.get("/users/me", token=token)
    # Then it is refused as invalid
    assert reply.status == 401, reply
    assert reply.code == "INVALID_TOKEN"


def test_a_non_bearer_authorization_is_401(api, user):
    # Given an Authorization header with another scheme
    headers = {"Authorization": f"Basic {user['access_token']}"}
    # When using it
    reply = api.get("/users/me", headers=headers)
    # Then it is refused
    assert reply.status == 401, reply
    assert reply.code == "INVALID_TOKEN"


# -- phone verification ----------------------------------------------------------------


def test_phone_code_is_202_and_stores_a_six_digit_code_for_three_minutes(
    api, rds, settings, user
):
    # Given a logged-in user
    # When asking for a phone code
    reply = api.post("/users/me/phone/code", {"phone": user["phone"]}, token=user["access_token"])
    # Then it is accepted and a 6-digit code is pending for at most 180 s
    assert reply.status == 202, reply
    key = code_key(settings, user["id"])
    code = rds.hget(key, "code").decode()
    assert len(code) == 6 and code.isdigit()
    assert 0 < rds.ttl(key) <= 180


def test_phone_verify_with_the_right_code_verifies_the_phone(api, rds, settings, user):
    # Given a pending code
    code = request_code(api, rds, settings, user)
    # When verifying it
    reply = api.post("/users/me/phone/verify", {"phone": user["phone"], "code": code},
                     token=user["access_token"])
    # Then the phone is verified
    assert reply.status == 200, reply
    me = api.get("/users/me", token=user["access_token"])
    assert me.body["phone_verified"] is True


def test_a_used_code_is_deleted_and_refused_again(api, rds, settings, user):
    # Given a code that was just used successfully
    code = request_code(api, rds, settings, user)
    body = {"phone": user["phone"], "code": code}
    assert api.post("/users/me/phone/verify", body, token=user["access_token"]).status == 200
    # When using it again
    reply = api.post("/users/me/phone/verify", body, token=user["access_token"])
    # Then it is gone and refused
    assert not rds.exists(code_key(settings, user["id"]))
    assert reply.status == 400, reply
    assert reply.code == "INVALID_VERIFICATION_CODE"


def test_phone_verify_with_a_wrong_code_is_400(api, rds, settings, user):
    # Given a pending code
    code = request_code(api, rds, settings, user)
    # When verifying another code
    reply = api.post("/users/me/phone/verify", {"phone": user["phone"], "code": other_code(code)},
                     token=user["access_token"])
    # Then it is refused and the phone stays unverified
    assert reply.status == 400, reply
    assert reply.code == "INVALID_VERIFICATION_CODE"
    assert api.get("/users/me", token=user["access_token"]).body["phone_verified"] is False


def test_phone_verify_for_another_phone_is_400(api, rds, settings, user):
    # Given a code sent to one phone
    code = request_code(api, rds, settings, user)
    # When verifying it for a different phone
    reply = api.post("/users/me/phone/verify", {"phone": "+821099999999", "code": code},
                     token=user["access_token"])
    # Then it is refused
    assert reply.status == 400, reply
    assert reply.code == "INVALID_VERIFICATION_CODE"


def test_phone_verify_without_a_pending_code_is_400(api, user):
    # Given no code was ever requested
    # When verifying some code
    reply = api.post("/users/me/phone/verify", {"phone": user["phone"], "code": "123456"},
                     token=user["access_token"])
    # Then it is refused
    assert reply.status == 400, reply
    assert reply.code == "INVALID_VERIFICATION_CODE"


def test_the_right_code_still_works_after_four_wrong_tries(api, rds, settings, user):
    # Given a pending code and four wrong tries
    code = request_code(api, rds, settings, user)
    for _ in range(4):
        wrong = api.post("/users/me/phone/verify",
                         {"phone": user["phone"], "code": other_code(code)},
                         token=user["access_token"])
        assert wrong.code == "INVALID_VERIFICATION_CODE"
    # When the right code comes fifth
    reply = api.post("/users/me/phone/verify", {"phone": user["phone"], "code": code},
                     token=user["access_token"])
    # Then it is accepted
    assert reply.status == 200, reply


def test_five_wrong_tries_void_the_code(api, rds, settings, user):
    # Given a pending code and five wrong tries
    code = request_code(api, rds, settings, user)
    for _ in range(5):
        wrong = api.post("/users/me/phone/verify",
                         {"phone": user["phone"], "code": other_code(code)},
                         token=user["access_token"])
        assert wrong.code == "INVALID_VERIFICATION_CODE"
    # When the right code comes sixth
    reply = api.post("/users/me/phone/verify", {"phone": user["phone"], "code": code},
                     token=user["access_token"])
    # Then it is refused: the code is void
    assert reply.status == 400, reply
    assert reply.code == "INVALID_VERIFICATION_CODE"
    assert api.get("/users/me", token=user["access_token"]).body["phone_verified"] is False


def test_a_new_code_replaces_the_pending_one(api, rds, settings, user):
    # Given a code, then a second code requested
    first = request_code(api, rds, settings, user)
    second = request_code(api, rds, settings, user)
    if first == second:
        pytest.skip("both random codes happened to be equal")
    # When verifying the first one
    reply = api.post("/users/me/phone/verify", {"phone": user["phone"], "code": first},
                     token=user["access_token"])
    # Then only the latest code counts
    assert reply.status == 400, reply
    assert reply.code == "INVALID_VERIFICATION_CODE"


def test_a_fourth_code_within_ten_minutes_is_429(api, rds, settings, user):
    # Given three codes already sent
    for _ in range(3):
        request_code(api, rds, settings, user)
    # When asking for a fourth
    reply = api.post("/users/me/phone/code", {"phone": user["phone"]}, token=user["access_token"])
    # Then it is rate limited with a Retry-After within the window
    assert reply.status == 429, reply
    assert reply.code == "RATE_LIMITED"
    assert 1 <= int(reply.headers["retry-after"]) <= 600


def test_the_rate_limit_is_per_user(api, rds, settings, user):
    # Given one user who used up their codes
    for _ in range(3):
        request_code(api, rds, settings, user)
    other = api.signup_login(new_name())
    # When another user asks for a code (for another number: each number has its own budget)
    reply = api.post("/users/me/phone/code", {"phone": new_phone()}, token=other)
    # Then they are served
    assert reply.status == 202, reply


@pytest.mark.parametrize("phone", ["12345", "+82-10-1234", "phone-number", 821012345678])
def test_phone_code_with_an_invalid_phone_is_400(api, user, phone):
    # Given a malformed phone
    # When asking for a code
    reply = api.post("/users/me/phone/code", {"phone": phone}, token=user["access_token"])
    # Then it is refused naming the field
    assert reply.status == 400, reply
    assert reply.code == "INVALID_REQUEST"
    assert "phone" in reply.body["error"]["fields"]


@pytest.mark.parametrize("code", ["12345", "1234567", "abcdef", 123456])
def test_phone_verify_with_a_malformed_code_is_400_naming_it(api, user, code):
    # Given a code that is not six digits
    # When verifying it
    reply = api.post("/users/me/phone/verify", {"phone": PHONE, "code": code},
                     token=user["access_token"])
    # Then the request is invalid
    assert reply.status == 400, reply
    assert reply.code == "INVALID_REQUEST"
    assert "code" in reply.body["error"]["fields"]


@pytest.mark.parametrize(
    ("path", "body"),
    [("/users/me/phone/code", {"phone": PHONE}),
     ("/users/me/phone/verify", {"phone": PHONE, "code": "123456"})],
)
def test_phone_endpoints_require_a_token(api, path, body):
    # Given no Authorization header
    # When calling a phone endpoint
    reply = api.post(path, body)
    # Then it is unauthorized
    assert reply.status == 401, reply
    assert reply.code == "UNAUTHORIZED"


def test_user_errors_carry_no_stack_trace(api):
    # Given requests that fail in several ways
    replies = [
        api.post("/users/signup", raw=b"{not json"),
        api.post("/users/login", {"username": new_name(), "password": PASSWORD}),
        api.get("/users/me", token="garbage"),
    ]
    # When reading their bodies
    # Then each is a plain error object, without a traceback
    for reply in replies:
        assert set(reply.body) == {"error"}, reply
        assert {"code", "message"} <= set(reply.body["error"])
        assert "Traceback" not in json.dumps(reply.body)


@pytest.mark.parametrize("claims", [
    {"sub": "1", "sid": "a" * 32, "typ": "access", "jti": "b" * 32, "iat": 1, "exp": 2},
    {"sub": "42", "cid": 7, "sid": "c" * 32, "typ": "queue", "jti": "d", "iat": 10,
     "exp": 4_000_000_000},
    {"sub": "9", "name": "caf\u00e9 \u2603", "n": -1},
])
def test_tokens_are_signed_as_pyjwt_signs_them_and_verify(claims):
    key = "k" * 40
    token = server_sign(claims, key.encode())
    if all(str(v).isascii() for v in claims.values()):  # (PyJWT escapes the rest)
        assert token == jwt.encode(claims, key, algorithm="HS256")
    assert jwt.decode(token, key, algorithms=["HS256"],
                      options={"verify_exp": False}) == claims
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "x" * 40, algorithms=["HS256"], options={"verify_exp": False})
