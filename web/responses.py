"""JSON responses and the error middleware that turns every failure into the API's shape."""

from __future__ import annotations

import json
import logging
from typing import Any

import msgspec
import redis.exceptions
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from db.connection import TRANSIENT_ERRORS
from jobs.errors import DomainError
from web.validation import refuse_unstorable

log = logging.getLogger(__name__)

_HTTP_CODES = {
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def dumps(data: Any) -> str:
    """Compact JSON."""
    return json.dumps(data, separators=(",", ":"))


_encode = msgspec.json.Encoder().encode


def encode_json(data: Any) -> bytes:
    """``data`` as UTF-8 JSON (a text msgspec cannot encode, such as a lone surrogate
    that came in with a header, is escaped by the standard library instead)."""
    try:
        return _encode(data)
    except (msgspec.EncodeError, UnicodeEncodeError, TypeError):
        return dumps(data).encode()


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    """A JSON response (``encode_json``)."""
    body = encode_json(data)
    return web.Response(body=body, status=status, headers=headers,
                        content_type="application/json", charset="utf-8")


def error_response(
    status: int, code: str, message: str, *, fields: dict | None = None, headers=None
) -> web.Response:
    """The API's error body ``{"error": {"code", "message", "fields"?}}``."""
    error: dict[str, Any] = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    return json_response({"error": error}, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Domain errors, HTTP errors and faults become JSON errors; never a stack trace.

    A query or path holding what no text may hold is refused before any handler runs; a
    client that leaves in the middle of its body is a 400 (it sent half a request), not
    an internal error.
    """
    try:
        refuse_unstorable(request)
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = _HTTP_CODES.get(e.status, "INVALID_REQUEST" if e.status < 500 else "INTERNAL_ERROR")
        allow = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
        response = error_response(e.status, code, e.reason, headers=allow)
        if e.status == 408:  # a stalled body: do not wait for the rest of it
            response.force_close()
        return response
    except ConnectionResetError:
        log.info("client left mid-request", extra={"path": request.path})
        return error_response(400, "INVALID_REQUEST", "the request ended early")
    except Exception as e:
        return failure_response(e, request.path)


def failure_response(error: Exception, path: str) -> web.Response:
    """The answer to a handler's exception: a domain error's own status and code, 503
    while a dependency is away, else 500 (logged with its stack; the client learns
    nothing of it)."""
    if isinstance(error, DomainError):
        retry_after = getattr(error, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        return error_response(error.status, error.code, error.message, fields=error.fields,
                              headers=headers)
    if isinstance(error, (*TRANSIENT_ERRORS, redis.exceptions.ConnectionError,
                          redis.exceptions.TimeoutError)):
        log.warning("dependency unavailable", exc_info=error, extra={"path": path})
        return error_response(503, "UNAVAILABLE", "a dependency is unavailable; retry later",
                              headers={"Retry-After": "1"})
    log.error("request failed", exc_info=error, extra={"path": path})
    return error_response(500, "INTERNAL_ERROR", "internal error")


def _failure(error: BaseException | None) -> str:
    """What was wrong with a request aiohttp could not parse, without its bytes (which
    may hold a URL's ``access_token``)."""
    if isinstance(error, LineTooLong):
        return "a request line or header is too long"
    if isinstance(error, HttpProcessingError):
        return f"malformed ({type(error).__name__})"
    return "malformed"


class ProtocolErrors(logging.Filter):
    """aiohttp answers a request it cannot parse (a bad request line, header bytes, an
    over-long line) with a plain 400 itself, and logs it at ERROR with a traceback: one
    WARNING line instead, since it is the client's fault, not ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Downgrade parse failures; pass everything else unchanged."""
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "malformed HTTP request refused: %s", (_failure(error),)
            record.exc_info = record.exc_text = None
        return True


def quiet_protocol_errors() -> None:
    """Install :class:`ProtocolErrors` on aiohttp's server logger, and answer a request
    aiohttp cannot parse in the API's JSON error shape (idempotent)."""
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ProtocolErrors) for f in server.filters):
        server.addFilter(ProtocolErrors())
    if not getattr(RequestHandler.handle_error, "answers_json", False):
        RequestHandler.handle_error = _json_protocol_error(RequestHandler.handle_error)


def _json_protocol_error(plain):
    """aiohttp's own answer to what it could not parse (a request line or header over its
    limits, bad syntax: text/plain), as ``{"error": {"code": "INVALID_REQUEST", ...}}``;
    its other answers (a handler's 500 or 504, which our middleware makes rare) too."""

    def handle_error(self, request, status=500, exc=None, message=None):
        plain(self, request, status, exc, message)  # (its log line, its checks)
        if status >= 500:
            response = error_response(status, "INTERNAL_ERROR", "internal error")
        else:
            response = error_response(status, _HTTP_CODES.get(status, "INVALID_REQUEST"),
                                      f"the request could not be read: {_failure(exc)}")
        response.force_close()  # (as aiohttp's own: the connection's state is unknown)
        return response

    handle_error.answers_json = True
    return handle_error
