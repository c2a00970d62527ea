"""Reason codes and the errors that carry them.

::

    Exception
     └── DomainError(code, message, status, fields)   a refusal with a stable reason code
          └── InvalidRequest                          400 INVALID_REQUEST with ``fields``

A refusal ends a job as ``failed`` at once (no retry). Transient faults are not
DomainErrors: they are the database driver's own errors (see ``db.connection.TRANSIENT_ERRORS``).
"""

from __future__ import annotations

# HTTP status of each reason code when it is answered synchronously.
STATUS_OF = {
    "INVALID_REQUEST": 400,
    "INVALID_VERIFICATION_CODE": 400,
    "UNAUTHORIZED": 401,
    "INVALID_TOKEN": 401,
    "TOKEN_EXPIRED": 401,
    "INVALID_PASSWORD": 401,
    "INVALID_PERMISSION": 403,
    "QUEUE_TOKEN_INVALID": 401,
    "QUEUE_TOKEN_NOT_ACTIVE": 403,
    "QUEUE_TOKEN_EXPIRED": 410,
    "METHOD_NOT_ALLOWED": 405,
    "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "IDEMPOTENCY_KEY_REUSED": 422,
    "RATE_LIMITED": 429,
    "INTERNAL_ERROR": 500,
    "UNAVAILABLE": 503,
}

MESSAGES = {
    "MAX_BALANCE_EXCEEDED": "the balance would exceed the cap",
    "INSUFFICIENT_POINTS": "not enough points",
    "INTERNAL_ERROR": "internal error",
}


def status_of(code: str) -> int:
    """The HTTP status for a reason code: 404 for ``*_NOT_FOUND``, 409 for other conflicts."""
    if code in STATUS_OF:
        return STATUS_OF[code]
    return 404 if code.endswith("_NOT_FOUND") else 409


class DomainError(Exception):
    """A refusal with a stable, UPPER_SNAKE reason code."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        status: int | None = None,
        fields: dict[str, str] | None = None,
    ) -> None:
        self.code = code
        self.message = message or MESSAGES.get(code) or code.replace("_", " ").lower()
        self.status = status or status_of(code)
        self.fields = fields
        super().__init__(f"{code}: {self.message}")

    def as_dict(self) -> dict:
        """The ``error`` object of the API."""
        out: dict = {"code": self.code, "message": self.message}
        if self.fields:
            out["fields"] = self.fields
        return out


class InvalidRequest(DomainError):
    """Bad input: ``fields`` maps each offending field to what is wrong with it."""

    def __init__(self, fields: dict[str, str], message: str = "invalid request") -> None:
        super().__init__("INVALID_REQUEST", message, fields=fields)
