"""``GET /console`` (the operator's page) and ``GET /admin/events`` (its live stream).

The stream listens to every job outcome the hub hears and stays cheap however many
arrive: an outcome costs a counter increment (and a failure a list append), never a
query. What it sends:

- ``failed``: at once, each failed job (its view, plus ``user_id``);
- ``jobs``: at most once a tick, ``{"changed": n}`` when n jobs reached an outcome;
- ``snapshot``: ``{"queues", "workers", "at"}`` (as ``/admin/queues`` and
  ``/admin/workers`` answer; ``at`` is the server's unix time), read from Redis each
  tick and sent only when something other than the passing of time changed it;
- ``resync``: the hub had a gap, or failures came faster than a tick may carry: the
  client refetches what it shows.

A ``: ping`` comment goes out every 15 s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
from aiohttp import web
from aiohttp_sse import sse_response
from redis.exceptions import RedisError

from jobs.platform import Event
from web.auth import access_claims, require_admin
from web.commands import HUB, STREAMS
from web.console_page import render_console
from web.hub import ANY_KEY
from web.routing import Query, Route
from web.sse import PING_SECONDS
from web.views.ops import fleet_queues, fleet_workers
from web.views.pages import CONSOLE

log = logging.getLogger(__name__)
TICK_SECONDS = 1.0
MAX_FAILED_PER_TICK = 50
_encode = msgspec.json.Encoder().encode


class Inbox:
    """What the hub said since the stream last looked: filled with no I/O at all."""

    def __init__(self) -> None:
        self.changed = 0
        self.failed: list[dict] = []
        self.resync = False
        self.urgent = asyncio.Event()  # a failure or a gap: send before the next tick

    def deliver(self, event: Event | None) -> None:
        """The hub's listener: count the outcome, keep a failure (None: a gap)."""
        if event is None:
            self.resync = True
        else:
            self.changed += 1
            if event.data.get("status") != "failed":
                return
            if len(self.failed) < MAX_FAILED_PER_TICK:
                owner = int(event.key) if (event.key or "").isdecimal() else None
                self.failed.append(event.data | {"user_id": owner})
            else:  # a flood: the client reads the list instead
                self.resync = True
        self.urgent.set()

    def take_urgent(self) -> list[bytes]:
        """The ``failed`` and ``resync`` frames to send now."""
        self.urgent.clear()
        frames = [_frame("failed", job) for job in self.failed]
        if self.resync:
            frames.append(_frame("resync", {}))
        self.failed, self.resync = [], False
        return frames

    def take_changed(self) -> list[bytes]:
        """The ``jobs`` frame, if any job reached an outcome since the last one."""
        changed, self.changed = self.changed, 0
        return [_frame("jobs", {"changed": changed})] if changed else []


def _frame(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: ".encode() + _encode(data) + b"\n\n"


async def read_snapshot(app: web.Application, now: float) -> dict:
    """The queues and the workers, as the admin endpoints read them (Redis only)."""
    queues, workers = await asyncio.gather(fleet_queues(app, now), fleet_workers(app, now))
    return {"queues": queues, "workers": workers, "at": round(now, 3)}


def snapshot_moments(snapshot: dict) -> tuple:
    """What a snapshot says, with every age turned into the moment it counts from (to
    the second): ages grow by themselves, the page counts them on its own."""
    at = snapshot["at"]
    queues = tuple((q["name"], q["depth"], q["delayed"], q["dead"],
                    round(at - q["oldest_age_seconds"]) if q["depth"] else None)
                   for q in snapshot["queues"])
    workers = tuple((w["id"], tuple(w["queues"]), round(at - w["heartbeat_age_seconds"]),
                     tuple((r["job_id"], round(at - r["seconds"])) for r in w["running"]))
                    for w in snapshot["workers"])
    return queues, workers


async def admin_events(request: web.Request) -> web.StreamResponse:
    """``GET /admin/events``: the console's live stream (see the module's notes)."""
    await access_claims(request, allow_query=True)  # EventSource: ?access_token=
    await require_admin(request)
    app, inbox, closing = request.app, Inbox(), asyncio.Event()
    unlisten = app[HUB].listen("job", ANY_KEY, inbox.deliver)
    app[STREAMS].open.add(closing)
    response: web.StreamResponse = web.Response(status=204)
    try:
        async with sse_response(request, ping_interval=PING_SECONDS,
                                headers={"X-Accel-Buffering": "no",
                                         "Cache-Control": "no-store"}) as response:
            await _serve(app, response, inbox, closing)
    except ConnectionResetError:  # the client left mid-write
        log.debug("console stream closed by the client")
    finally:
        unlisten()
        app[STREAMS].open.discard(closing)
    return response


async def _serve(app: web.Application, response: web.StreamResponse, inbox: Inbox,
                 closing: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    sent: tuple | None = None
    next_tick = loop.time()
    while response.is_connected() and not closing.is_set():
        frames = inbox.take_urgent()
        if loop.time() >= next_tick:
            next_tick = loop.time() + TICK_SECONDS
            frames += inbox.take_changed()
            try:
                snapshot = await read_snapshot(app, time.time())
            except RedisError as e:  # Redis away: the next tick tries again
                log.warning("console snapshot not read", extra={"reason": repr(e)})
            else:
                if (moments := snapshot_moments(snapshot)) != sent:
                    frames.append(_frame("snapshot", snapshot))
                    sent = moments
        for frame in frames:
            await response.write(frame)
        try:
            async with asyncio.timeout(max(0.0, next_tick - loop.time())):
                await inbox.urgent.wait()
        except TimeoutError:
            pass


async def console(request: web.Request) -> web.Response:
    """``GET /console``: the operator's page (it holds no data: it logs in and fetches)."""
    html, csp = render_console()
    return web.Response(text=html, content_type="text/html", charset="utf-8",
                        headers={"Content-Security-Policy": csp,
                                 "X-Content-Type-Options": "nosniff"})


ROUTES = [
    Route("GET", CONSOLE, console, "The operator console, for people (admins log in on it)",
          auth="none", content_type="text/html", root=True),
    Route("GET", "/admin/events", admin_events,
          "Live stream of the console: failed, jobs, snapshot and resync events",
          errors=("INVALID_PERMISSION",), auth="admin", content_type="text/event-stream",
          query=(Query("access_token", str, "for EventSource, instead of the header"),)),
]
