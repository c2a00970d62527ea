"""Request bodies decoded and validated by their msgspec schema, in one pass.

The fast path is ``msgspec.json.decode(raw, type=Schema)``. Only when that fails does a
second, slower pass name every offending field (msgspec stops at the first), so a 400
lists all of them in ``error.fields``.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from jobs.errors import DomainError, InvalidRequest

T = TypeVar("T")
_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_FIELD = re.compile(r"^Object (?P<kind>missing required|contains unknown) field `(?P<name>[^`]*)`")


@dataclass(frozen=True)
class BodyRules:
    """How much a request body may hold, and how long it may stall between chunks."""

    max_bytes: int = 64 * 1024
    stall_seconds: float = 10.0


BODY_RULES = web.AppKey("body_rules", BodyRules)


async def read_body(request: web.Request) -> bytes:
    """The request's body, read chunk by chunk: 413 past ``max_bytes``, and 408 (the
    connection closed) when the client sends nothing for ``stall_seconds``."""
    rules = request.app.get(BODY_RULES) or BodyRules()
    if (request.content_length or 0) > rules.max_bytes:
        raise DomainError("PAYLOAD_TOO_LARGE", "the body is too large", status=413)
    chunks, size, content = [], 0, request.content
    while True:
        if content.is_eof():  # the rest has arrived (a small body, with its headers)
            chunk = content.read_nowait()
        else:
            try:
                async with asyncio.timeout(rules.stall_seconds):
                    chunk = await content.readany()
            except TimeoutError:
                raise web.HTTPRequestTimeout(reason="the request body stalled") from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > rules.max_bytes:
            raise DomainError("PAYLOAD_TOO_LARGE", "the body is too large", status=413)
        chunks.append(chunk)


def decode_body(raw: bytes, schema: type[T]) -> T:
    """The body as a ``schema`` value; an empty body counts as ``{}`` (whitespace alone is
    not JSON: a 400, like any other body the schema refuses)."""
    if not raw:
        raw = b"{}"
    try:
        return msgspec.json.decode(raw, type=schema)
    except msgspec.ValidationError as e:
        raise InvalidRequest(_explain(raw, schema, e)) from None
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        raise InvalidRequest({"body": "is not valid JSON"}, "malformed JSON") from None


def _explain(raw: bytes, schema: type, first: msgspec.ValidationError) -> dict[str, str]:
    """Every offending field of a body that failed validation."""
    try:
        data = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return {"body": "is not valid JSON"}
    if not isinstance(data, dict):
        return {"body": "must be a JSON object"}
    problems: dict[str, str] = {}
    fields = {f.encode_name: f for f in msgspec.structs.fields(schema)}
    for name in data:
        if name not in fields:
            problems[name] = "is not a known field"
    for name, field in fields.items():
        if name not in data:
            if field.required:
                problems[name] = "is required"
            continue
        try:
            msgspec.convert(data[name], field.type)
        except msgspec.ValidationError as e:
            problems |= describe(e, prefix=name)
    return problems or describe(first)


def describe(error: msgspec.ValidationError, prefix: str = "") -> dict[str, str]:
    """``{field path: problem}`` from one msgspec validation error."""
    match = _AT.match(str(error))
    what, path = match["what"], (match["path"] or "")
    path = prefix + path if not path.startswith("[") or prefix else path
    path = path.lstrip(".")
    named = _FIELD.match(what)
    if named:
        path = f"{path}.{named['name']}".lstrip(".")
        what = "is required" if named["kind"] == "missing required" else "is not a known field"
    return {path or "body": _humane(what)}


def _humane(what: str) -> str:
    """msgspec's wording, lightly adapted: ``Expected `int` >= 1`` -> ``expected int >= 1``."""
    return what.replace("`", "").replace("Expected", "expected")


def to_payload(value: msgspec.Struct) -> dict[str, Any]:
    """A payload as stored in the job record (JSON types, defaults left out)."""
    return msgspec.to_builtins(value)
