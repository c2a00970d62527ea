"""Hostile input, class by class, on every endpoint it can reach: always a 4xx with a
reason code, never a 5xx, never an ERROR log.

Binding contract: /work/shared/API.md, "Conventions" and "Limits" (bad input of any kind
is a 4xx with a reason code). The endpoints come from the app's own route declarations,
so a new endpoint is covered without editing this file.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import time
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import jwt
import msgspec
import pytest

from tests.inprocess import InProcessStack
from tests.support import Api, admin_token
from web.app import app_routes

ROUTES = app_routes()
BODY_ROUTES = [r for r in ROUTES if r.body is not None]
LIST_ROUTES = [r for r in ROUTES if any(q.name == "cursor" for q in r.query)]
QUERY_ROUTES = [r for r in ROUTES if r.query]
AUTH_ROUTES = [r for r in ROUTES if r.auth in ("user", "admin")]


def concrete(url: str) -> str:
    """A route's path with every ``{param}`` filled with 1 (a date for ``{date}``)."""
    return re.sub(r"\{(\w+)\}", lambda m: "2030-01-01" if m[1] == "date" else "1", url)


def ids(routes) -> list[str]:
    return [f"{r.method} {r.url}" for r in routes]


@pytest.fixture(scope="module")
def api(stack) -> Api:
    return stack.api


@pytest.fixture(scope="module")
def admin(stack, database) -> str:
    """The access token of a user holding the admin role."""
    return admin_token(stack.api, database)


@pytest.fixture(autouse=True)
def no_error_logs(caplog) -> Iterator[None]:
    """Whatever a test sends, the server logs nothing at ERROR (no tracebacks)."""
    with caplog.at_level(logging.WARNING):
        yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def raw(port: int, request: bytes, *, half_close: bool = False,
        head_only: bool = False) -> tuple[int, bytes]:
    """Send bytes as they are; the status and body of the answer (0 if none came).
    ``head_only``: stop at a 200's headers (an event stream stays open)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
            if head_only and data.startswith(b"HTTP/1.1 200") and b"\r\n\r\n" in data:
                break
    head, _, body = data.partition(b"\r\n\r\n")
    return (int(head.split()[1]) if head else 0), body


def http(method: str, path: str, *headers: bytes, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: t", *headers,
             b"Content-Type: application/json", f"Content-Length: {len(body)}".encode(),
             b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def assert_4xx(status: int, body: bytes, what: str) -> str:
    assert 400 <= status < 500, (what, status, body[:300])
    error = json.loads(body)["error"]
    assert re.fullmatch(r"[A-Z][A-Z_]+", error["code"]) and error["message"], (what, error)
    return error["code"]


# -- bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize("route", BODY_ROUTES, ids=ids(BODY_ROUTES))
def test_every_body_refuses_deep_nesting_and_broken_text(stack, admin, route):
    auth = f"Authorization: Bearer {admin}".encode()
    fields = list(msgspec.structs.fields(route.body)) if hasattr(
        route.body, "__struct_fields__") else []
    bodies = {
        "nested 20,000 deep": b"[" * 20_000 + b"]" * 20_000,
        "nested object": b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
        "not UTF-8": b'{"x": "\xff\xfe"}',
        "truncated": b'{"',
        "a number past any bound": b'{"x": 1' + b"0" * 5_000 + b"}",
    }
    for field in fields:
        bodies[f"{field.encode_name}: NUL"] = json.dumps({field.encode_name: "a\u0000b"}).encode()
        bodies[f"{field.encode_name}: lone surrogate"] = (
            b'{"' + field.encode_name.encode() + b'": "a\\ud800b"}')
        bodies[f"{field.encode_name}: huge number"] = (
            b'{"' + field.encode_name.encode() + b'": 1' + b"0" * 400 + b"}")
    for what, body in bodies.items():
        status, answer = raw(stack.port, http(route.method, concrete(route.url), auth,
                                              body=body))
        code = assert_4xx(status, answer, f"{route.url} {what}")
        assert code in ("INVALID_REQUEST", "PAYLOAD_TOO_LARGE") or code.endswith(
            "_NOT_FOUND"), (route.url, what, code)


@pytest.mark.parametrize("route", [r for r in BODY_ROUTES if r.auth == "user"][:4],
                         ids=ids([r for r in BODY_ROUTES if r.auth == "user"][:4]))
def test_a_caller_without_credentials_learns_nothing_of_the_body(stack, route):
    status, answer = raw(stack.port, http(route.method, concrete(route.url), body=b"{bad"))
    assert (status, json.loads(answer)["error"]["code"]) == (401, "UNAUTHORIZED")


def test_a_client_that_leaves_mid_body_is_neither_a_500_nor_an_error_log(stack, api, admin):
    request = http("POST", "/api/v1/points/charge", f"Authorization: Bearer {admin}".encode(),
                   body=b'{"amo').replace(b"Content-Length: 5", b"Content-Length: 500")
    for _ in range(3):
        assert raw(stack.port, request, half_close=True)[0] in (0, 400)
    time.sleep(0.2)
    metrics = api.get(f"{api.base}/metrics").body
    assert 'status="500"' not in metrics, [m for m in metrics.splitlines() if "500" in m]


# -- headers ------------------------------------------------------------------------------


@pytest.mark.parametrize("route", AUTH_ROUTES, ids=ids(AUTH_ROUTES))
def test_bytes_that_are_not_utf8_in_authorization_are_401(stack, route):
    for value in (b"Bearer \xff\xfe\xfd", b"\xc3\x28", b"Bearer \xed\xa0\x80"):
        status, answer = raw(stack.port, http(route.method, concrete(route.url),
                                              b"Authorization: " + value, body=b"{}"))
        assert status == 401, (route.url, value, status, answer)
        assert json.loads(answer)["error"]["code"] == "INVALID_TOKEN"


def test_other_headers_with_bytes_that_are_not_utf8(stack, admin):
    auth = f"Authorization: Bearer {admin}".encode()
    for header, path, expected in (
            (b"Queue-Token: \xff\xfe", "/api/v1/queue/tokens/me", {401}),
            (b"Queue-Token: \xff\xfe", "/api/v1/concerts/1/dates", {401, 404}),
            (b"Idempotency-Key: \xff\xfe", "/api/v1/points/charge", {400}),
            (b"Last-Event-ID: \xff", "/api/v1/jobs/events", {400}),
            (b"Prefer: wait=\xff", "/api/v1/points/charge", {202})):
        method = "GET" if "events" in path or path.endswith(("/me", "/dates")) else "POST"
        body = b'{"amount": 1}' if path.endswith("charge") else b""
        status, answer = raw(stack.port, http(method, path, auth, header, body=body))
        assert status in expected, (header, path, status, answer)


def test_prefer_wait_and_long_polls_past_any_number(api, admin):
    for prefer in ("wait=99999999999999999999999999999", "wait=" + "9" * 5000, "wait=-1",
                   "wait=1e9", "wait=\u0661"):
        reply = api.post("/points/charge", {"amount": 1}, token=admin,
                         headers={"Prefer": prefer.encode().decode("latin-1")})
        assert reply.status in (200, 202), (prefer, reply)
    for wait in ("9" * 5000, "-1", "1.5", "\u0661", "nan"):
        reply = api.get(f"/jobs/{uuid.uuid4()}?wait={quote(wait)}", token=admin)
        assert (reply.status, reply.code) == (400, "INVALID_REQUEST"), (wait, reply)


def test_a_token_whose_subject_is_not_ascii_digits_is_refused(api, settings):
    now = int(time.time())
    for sub in ("\u0661\u0662", "1 ", "+1", "1e3", "0x1", "9" * 40):
        token = jwt.encode({"sub": sub, "sid": uuid.uuid4().hex, "typ": "access",
                            "jti": uuid.uuid4().hex, "iat": now, "exp": now + 60},
                           settings.jwt_secret, algorithm="HS256")
        reply = api.get("/users/me", token=token)
        assert (reply.status, reply.code) == (401, "INVALID_TOKEN"), (sub, reply)


# -- queries and cursors ------------------------------------------------------------------


@pytest.mark.parametrize("route", QUERY_ROUTES, ids=ids(QUERY_ROUTES))
def test_every_query_parameter_refuses_nul_and_invalid_escapes(stack, admin, route):
    auth = f"Authorization: Bearer {admin}".encode()
    for query in route.query:
        for value in ("%00", "a%00b", "%ED%A0%80", "%C3%28", "%FF"):
            path = f"{concrete(route.url)}?{query.name}={value}"
            status, answer = raw(stack.port, http(route.method, path, auth), head_only=True)
            if "00" in value:  # NUL: refused, whatever the parameter
                assert (status, json.loads(answer)["error"]["code"]) == (
                    400, "INVALID_REQUEST"), (path, answer)
            elif status >= 400:  # an invalid escape stays literal text: refused or no match
                code = assert_4xx(status, answer, path)
                assert code == "INVALID_REQUEST" or code.endswith("_NOT_FOUND"), (path, code)
            else:
                assert status == 200, (path, status)


def cursor(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


BAD_CURSORS = ["x", "%%%", "====", cursor(None), cursor({}), cursor([]), cursor("a"),
               cursor([True]), cursor([-1]), cursor([2**64]), cursor([1.5]),
               cursor(["9999-99-99T00:00:00", 1]), cursor(["0001-01-01T00:00:00+23:59", 1]),
               cursor([[1]]), cursor([1, 2, 3]), "W" * 5_000,
               base64.urlsafe_b64encode(b"[" * 3_000 + b"]" * 3_000).decode()]


@pytest.mark.parametrize("route", LIST_ROUTES, ids=ids(LIST_ROUTES))
def test_every_list_refuses_every_cursor_it_did_not_give_out(api, admin, route):
    for bad in BAD_CURSORS:
        reply = api.get(f"{concrete(route.url).removeprefix('/api/v1')}?cursor={bad}",
                        token=admin)
        assert 400 <= reply.status < 500, (route.url, bad[:40], reply)
        assert reply.code == "INVALID_REQUEST" or reply.code.endswith("NOT_FOUND"), reply


# -- dates at the calendar's edges --------------------------------------------------------


EDGES = ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00Z",
         "9999-12-31T23:59:59.999999Z", "10000-01-01T00:00:00Z", "2030-02-30T00:00:00Z"]


def test_times_at_the_calendars_edges_are_4xx(api, admin):
    for edge in EDGES:
        coupon = {"name": "edge", "discount_type": "FIXED", "discount_value": 1, "stock": 1,
                  "starts_at": edge, "ends_at": "9999-12-31T23:59:59Z"}
        reply = api.post("/admin/coupons", coupon, token=admin)
        assert reply.status in (201, 400), (edge, reply)
        reply = api.post("/admin/coupons", coupon | {"starts_at": "2030-01-01T00:00:00Z",
                                                     "ends_at": edge}, token=admin)
        assert reply.status in (201, 400), (edge, reply)
        reply = api.post("/artworks", {"title": "t", "genre": "OTHER", "start_price": 100,
                                       "ends_at": edge}, token=admin)
        assert reply.status in (400, 403), (edge, reply)
    for day in ("0000-01-01", "10000-01-01", "9999-12-32", "2030-02-30", "1-1-1"):
        reply = api.post("/admin/concerts", {"title": "t", "dates": [
            {"date": day, "seat_price": 1000}]}, token=admin)
        assert (reply.status, reply.code) == (400, "INVALID_REQUEST"), (day, reply)


# -- slow clients ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def impatient(process_env) -> Iterator[InProcessStack]:
    """A web app that gives clients 1 s to send their headers or the next body chunk."""
    s = InProcessStack(process_env | {"CLIENT_TIMEOUT": "1"})
    s.start_web()
    yield s
    s.stop()


def test_a_client_that_never_finishes_its_headers_is_cut_off(impatient):
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        started = time.monotonic()
        assert s.recv(1024) == b""  # closed, nothing answered
        assert 0.5 < time.monotonic() - started < 5


def test_a_body_that_stalls_is_408_and_the_connection_closes(impatient, database):
    token = impatient.api.signup_login(f"slow_{uuid.uuid4().hex[:8]}")
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=10) as s:
        s.sendall(http("POST", "/api/v1/points/charge", f"Authorization: Bearer {token}"
                       .encode(), body=b'{"amo').replace(b"Content-Length: 5",
                                                          b"Content-Length: 13"))
        started = time.monotonic()
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 408"), data[:200]
        assert b'"REQUEST_TIMEOUT"' in data
        assert 0.5 < time.monotonic() - started < 5


# -- what the HTTP parser itself refuses ---------------------------------------------------


@pytest.mark.parametrize("request_bytes", [
    http("GET", "/api/v1/artworks?cursor=" + "x" * 9000),  # (over aiohttp's 8,190 bytes)
    http("GET", "/api/v1/products", b"X-Long: " + b"y" * 9000),
    http("GET", "/api/v1/products", b"Bad Header Without Colon"),
    b"GET /api/v1/products HTTP/9.9\r\nHost: t\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not HTTP at all\r\n\r\n",
], ids=["long request line", "long header", "header syntax", "bad version", "not HTTP"])
def test_what_the_http_parser_refuses_is_a_json_4xx_naming_no_client_bytes(
        stack, request_bytes, caplog):
    status, answer = raw(stack.port, request_bytes)
    assert_4xx(status, answer, request_bytes[:40])
    assert b"xxxx" not in answer and b"yyyy" not in answer
    assert not any("xxxx" in r.getMessage() for r in caplog.records)  # (nor its log)
