"""Server-sent event streams fed by the live hub, with ``Last-Event-ID`` replay.

A stream subscribes to the hub first, then replays what the client missed (from the
caller's ``replay`` function: the database), then forwards live events, dropping any
id it already sent. After a hub gap (Redis reconnected) or a listener overflow it
replays again from the highest id sent. A ``: ping`` comment goes out every 15 s (so
proxies and idle timeouts keep the connection), a client that leaves ends the handler
cleanly, and the app's shutdown closes every open stream.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web
from aiohttp_sse import sse_response

from jobs.errors import InvalidRequest
from jobs.platform import Event
from web.hub import LiveHub

log = logging.getLogger(__name__)
PING_SECONDS = 15
QUEUE_LIMIT = 10_000
_ID = re.compile(r"[0-9]{1,18}")
Replay = Callable[[int], Awaitable[list[Event]]]
_encode = msgspec.json.Encoder().encode


class Streams:
    """The open streams of one web process, closed together on shutdown."""

    def __init__(self) -> None:
        self.open: set[asyncio.Event] = set()

    async def close_all(self, app: web.Application | None = None) -> None:
        """Ask every open stream to end (``on_shutdown``)."""
        for closing in list(self.open):
            closing.set()


def last_event_id(request: web.Request) -> int:
    """The client's ``Last-Event-ID`` (0 when absent); 400 when it is not one of ours."""
    raw = request.headers.get("Last-Event-ID", "").strip()
    if not raw:
        return 0
    if not _ID.fullmatch(raw):
        raise InvalidRequest({"Last-Event-ID": "must be an event id this stream gave out"})
    return int(raw)


async def stream(
    request: web.Request,
    hub: LiveHub,
    streams: Streams,
    topic: str,
    key: str,
    replay: Replay,
    event_name: Callable[[Event], str] = lambda e: e.topic,
) -> web.StreamResponse:
    """Serve the ``(topic, key)`` events of the hub as ``text/event-stream``."""
    after = last_event_id(request)
    inbox: asyncio.Queue[Event | None] = asyncio.Queue()
    closing = asyncio.Event()

    def deliver(event: Event | None) -> None:
        if inbox.qsize() >= QUEUE_LIMIT:  # a slow client: drop, then replay from the DB
            event = None
        inbox.put_nowait(event)

    unlisten = hub.listen(topic, key, deliver)  # subscribe before replaying
    streams.open.add(closing)
    sent: set[int] = set()
    highest = after
    response: web.StreamResponse = web.Response(status=204)
    try:
        async with sse_response(request, ping_interval=PING_SECONDS,
                                headers={"X-Accel-Buffering": "no",
                                         "Cache-Control": "no-store"}) as response:

            async def send(event: Event) -> None:
                nonlocal highest
                if event.id is not None:
                    if event.id in sent:
                        return
                    sent.add(event.id)
                    highest = max(highest, event.id)
                await response.send(_encode(event.data).decode(), id=_text_id(event),
                                    event=event_name(event))

            for event in await replay(after):
                await send(event)
            while response.is_connected() and not closing.is_set():
                try:
                    event = await asyncio.wait_for(inbox.get(), timeout=1.0)
                except TimeoutError:
                    continue
                if event is None:
                    for missed in await replay(highest):
                        await send(missed)
                else:
                    await send(event)
                if len(sent) > 2 * QUEUE_LIMIT:
                    sent = {i for i in sent if i > highest - QUEUE_LIMIT}
    except ConnectionResetError:  # the client left mid-write
        log.debug("event stream closed by the client", extra={"topic": topic})
    finally:
        unlisten()
        streams.open.discard(closing)
    return response


def _text_id(event: Event) -> str | None:
    return None if event.id is None else str(event.id)
