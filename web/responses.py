"""JSON responses and the error middleware that turns every failure into the API's shape."""

from __future__ import annotations

import json
import logging
from typing import Any

import redis.exceptions
from aiohttp import web

from db.connection import TRANSIENT_ERRORS
from jobs.errors import DomainError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def dumps(data: Any) -> str:
    """Compact JSON."""
    return json.dumps(data, separators=(",", ":"))


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    """A JSON response."""
    return web.json_response(data, status=status, headers=headers, dumps=dumps)


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
    """Domain errors, HTTP errors and faults become JSON errors; never a stack trace."""
    try:
        return await handler(request)
    except DomainError as e:
        headers = {"Retry-After": str(e.retry_after)} if getattr(e, "retry_after", None) else None
        return error_response(e.status, e.code, e.message, fields=e.fields, headers=headers)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = _HTTP_CODES.get(e.status, "INVALID_REQUEST" if e.status < 500 else "INTERNAL_ERROR")
        allow = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
        return error_response(e.status, code, e.reason, headers=allow)
    except (*TRANSIENT_ERRORS, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        log.warning("dependency unavailable", exc_info=True, extra={"path": request.path})
        return error_response(503, "UNAVAILABLE", "a dependency is unavailable; retry later",
                              headers={"Retry-After": "1"})
    except Exception:
        log.exception("request failed", extra={"path": request.path})
        return error_response(500, "INTERNAL_ERROR", "internal error")
