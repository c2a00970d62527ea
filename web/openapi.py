"""The OpenAPI 3.1 description, generated from the routes and the schemas they validate with.

Request bodies and responses are the msgspec types the server decodes with (JSON Schema
2020-12, which OpenAPI 3.1 uses as is); reason codes come from each route's
declaration, and a command's job failures from its registry entry.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import msgspec

from jobs.errors import status_of
from web.routing import Route
from web.shapes import Error, JobBody

_PARAM = re.compile(r"{([^}]+)}")
_REF = "#/components/schemas/{name}"
_HEADER_DOCS = {
    "Idempotency-Key": "1..64 visible ASCII characters; a repeat within 24 h returns the "
                       "original job",
    "Prefer": "wait=N: answer 200 with the terminal job if it finishes within N seconds",
    "Queue-Token": "the waiting-room token of the concert",
    "Last-Event-ID": "resume the stream after this event id",
}


def build(routes: list[Route], title: str = "Bazaar", version: str = "1") -> dict[str, Any]:
    """The OpenAPI document for ``routes``."""
    types: list[Any] = [Error, JobBody]
    for route in routes:
        types += [t for t in (route.body, route.response) if t is not None]
    refs, components = msgspec.json.schema_components(types, ref_template=_REF)
    ref_of = dict(zip(map(_key, types), refs, strict=True))
    paths: dict[str, dict] = defaultdict(dict)
    for route in routes:
        paths[route.url][route.method.lower()] = _operation(route, ref_of)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version,
                 "description": "Commands answer 202 with a job; poll /api/v1/jobs/{id} "
                                "or stream /api/v1/jobs/events for the outcome."},
        "paths": dict(paths),
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
        },
    }


def _key(t: Any) -> str:
    return repr(t)


def _operation(route: Route, ref_of: dict[str, dict]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": f"{route.method.lower()}_{_slug(route.url)}",
        "tags": [route.tag or route.url.removeprefix("/api/v1").split("/")[1] or "root"],
        "parameters": _parameters(route),
        "responses": _responses(route, ref_of),
    }
    if route.auth in ("user", "admin"):
        op["security"] = [{"bearer": []}]
    elif route.auth == "optional":
        op["security"] = [{}, {"bearer": []}]
    if route.body is not None:
        op["requestBody"] = {"required": False,
                             "content": {"application/json": {"schema": ref_of[_key(route.body)]}}}
    if route.job_type:
        op["x-job-type"] = route.job_type
    return op


def _slug(url: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "_", url).strip("_") or "root"


def _parameters(route: Route) -> list[dict]:
    params = [{"name": name, "in": "path", "required": True,
               "schema": {"type": "string"}} for name in _PARAM.findall(route.url)]
    for q in route.query:
        kind = "integer" if q.type is int else "string"
        params.append({"name": q.name, "in": "query", "required": False,
                       "schema": {"type": kind}, "description": q.description})
    for name in route.headers:
        params.append({"name": name, "in": "header", "required": False,
                       "schema": {"type": "string"}, "description": _HEADER_DOCS.get(name, "")})
    return params


def _responses(route: Route, ref_of: dict[str, dict]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if route.job_type:
        job = ref_of[_key(JobBody)]
        result = ref_of[_key(route.response)] if route.response is not None else {}
        terminal = {"allOf": [job, {"properties": {"result": {"anyOf": [result,
                                                                         {"type": "null"}]}}}]}
        out["202"] = {"description": "Accepted: the job, queued",
                      "content": {"application/json": {"schema": job}}}
        out["200"] = {"description": "The terminal job (Prefer: wait, or a replayed "
                                     "Idempotency-Key); a failed job's error.code is one of: "
                                     + ", ".join(route.errors),
                      "x-reason-codes": sorted(route.errors),
                      "content": {"application/json": {"schema": terminal}}}
    elif route.content_type != "application/json":
        out[str(route.status)] = {"description": "OK",
                                  "content": {route.content_type: {"schema": {"type": "string"}}}}
    elif route.response is not None:
        out[str(route.status)] = {"description": "OK", "content": {
            "application/json": {"schema": ref_of[_key(route.response)]}}}
    else:
        out[str(route.status)] = {"description": "OK"}
    codes: dict[int, set[str]] = defaultdict(set)
    sync_errors = route.door_errors if route.job_type else route.errors
    for code in sync_errors:
        codes[status_of(code)].add(code)
    if route.job_type:
        codes[422].add("IDEMPOTENCY_KEY_REUSED")
        codes[503].add("UNAVAILABLE")
    if route.body is not None or route.query or route.job_type:
        codes[400].add("INVALID_REQUEST")
    if route.body is not None:
        codes[413].add("PAYLOAD_TOO_LARGE")
    if route.auth in ("user", "admin"):
        codes[401] |= {"UNAUTHORIZED", "INVALID_TOKEN", "TOKEN_EXPIRED"}
    elif route.auth == "optional":
        codes[401] |= {"INVALID_TOKEN", "TOKEN_EXPIRED"}
    if route.auth == "admin":
        codes[403].add("INVALID_PERMISSION")
    codes[500].add("INTERNAL_ERROR")
    error = ref_of[_key(Error)]
    for status, names in sorted(codes.items()):
        out[str(status)] = {"description": "Reason codes: " + ", ".join(sorted(names)),
                            "x-reason-codes": sorted(names),
                            "content": {"application/json": {"schema": error}}}
    return out
