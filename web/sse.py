"""Server-sent event streams fed by the live hub, with ``Last-Event-ID`` replay.

A stream subscribes to the hub first, then replays what the client missed (from the
caller's ``replay`` function: the database), then forwards live events, dropping any
id it already sent. After a hub gap (Redis reconnected) or a listener overflow it
replays again from the highest id sent.

A stream whose ids are ``contiguous`` (an artwork's versions: 1, 2, 3, ...) is also
sent strictly in order: workers publish after their own commits, so version 6 can
reach the hub before version 5. An event that arrives early waits (at most
``REORDER_SECONDS``) for the ones before it; if they do not come, the database fills in.

A ``: ping`` comment goes out every 15 s (so proxies and idle timeouts keep the
connection), a client that leaves ends the handler cleanly, and the app's shutdown
closes every open stream.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
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
REORDER_SECONDS = 0.2
_ID = re.compile(r"[0-9]{1,18}")
Replay = Callable[[int | None], Awaitable[list[Event]]]
"""What the client missed after an event id (None: it gave no ``Last-Event-ID``)."""
_encode = msgspec.json.Encoder().encode


class Streams:
    """The open streams of one web process, closed together on shutdown."""

    def __init__(self) -> None:
        self.open: set[asyncio.Event] = set()

    async def close_all(self, app: web.Application | None = None) -> None:
        """Ask every open stream to end (``on_shutdown``)."""
        for closing in list(self.open):
            closing.set()


def last_event_id(request: web.Request) -> int | None:
    """The client's ``Last-Event-ID`` (None when absent); 400 when it is not one of ours."""
    raw = request.headers.get("Last-Event-ID", "").strip()
    if not raw:
        return None
    if not _ID.fullmatch(raw):
        raise InvalidRequest({"Last-Event-ID": "must be an event id this stream gave out"})
    return int(raw)


async def stream(
    request: web.Request,
    hub: LiveHub,
    streams: Streams,
    topics: str | tuple[str, ...],
    key: str,
    replay: Replay,
    event_name: Callable[[Event], str] = lambda e: e.topic,
    contiguous: bool = False,
    origin: Callable[[], Awaitable[int]] | None = None,
) -> web.StreamResponse:
    """Serve the events of ``topics`` for ``key`` from the hub as ``text/event-stream``.

    ``origin``, if given, reads the id of the stream's latest event: a client with no
    ``Last-Event-ID`` starts after it (only new events), and one beyond it (a forged or
    stale id) is taken back to it, so it cannot silence the stream's next events.
    """
    after = last_event_id(request)
    inbox: asyncio.Queue[Event | None] = asyncio.Queue()
    closing = asyncio.Event()

    def deliver(event: Event | None) -> None:
        if inbox.qsize() >= QUEUE_LIMIT:  # a slow client: drop, then replay from the DB
            event = None
        inbox.put_nowait(event)

    # subscribe before replaying, so nothing committed meanwhile falls between the two
    unlisten = [hub.listen(topic, key, deliver)
                for topic in ((topics,) if isinstance(topics, str) else topics)]
    streams.open.add(closing)
    out = _Sender(contiguous)
    response: web.StreamResponse = web.Response(status=204)
    try:
        if origin is not None:  # read after subscribing: nothing falls between the two
            latest = await origin()
            after = latest if after is None else min(after, latest)
        async with sse_response(request, ping_interval=PING_SECONDS,
                                headers={"X-Accel-Buffering": "no",
                                         "Cache-Control": "no-store"}) as response:

            async def send(events: list[Event]) -> None:
                for event in events:
                    await _write(response, _frame(event, event_name))

            await send(out.replayed(await replay(after), after))
            while response.is_connected() and not closing.is_set():
                try:  # (asyncio.timeout: a timer, where wait_for would add a task per event)
                    async with asyncio.timeout(out.wait()):
                        event = await inbox.get()
                except TimeoutError:
                    event = out.NOTHING
                if event is None or out.overdue():
                    await send(out.replayed(await replay(out.highest), out.highest))
                if event is not None and event is not out.NOTHING:
                    await send(out.live(event))
    except ConnectionResetError:  # the client left mid-write
        log.debug("event stream closed by the client", extra={"topic": topics})
    finally:
        for stop in unlisten:
            stop()
        streams.open.discard(closing)
    return response


class _Sender:
    """Which events go out, and when: never an id twice; in order when ``contiguous``."""

    NOTHING = Event("", {})

    def __init__(self, contiguous: bool) -> None:
        self.contiguous = contiguous
        self.highest: int | None = None
        self.sent: set[int] = set()
        self.early: dict[int, Event] = {}  # contiguous: ids that came before their turn
        self.early_since = 0.0

    def replayed(self, events: list[Event], after: int | None) -> list[Event]:
        """From the database: everything after ``after``, in order."""
        if self.highest is None:  # a contiguous stream counts from 0
            self.highest = after if after is not None or not self.contiguous else 0
        out = [e for e in events if self._take(e)]
        if self.contiguous:
            out += self._flush()
        return out

    def live(self, event: Event) -> list[Event]:
        """From the hub: what can go out now."""
        if event.id is None:
            return [event]
        if not self.contiguous or self.highest is None or event.id == self.highest + 1:
            return [event, *self._flush()] if self._take(event) else []
        if event.id > self.highest + 1 and event.id not in self.early:
            if not self.early:
                self.early_since = asyncio.get_running_loop().time()
            self.early[event.id] = event
        return []

    def wait(self) -> float:
        """How long to wait for the next live event."""
        return REORDER_SECONDS if self.early else 1.0

    def overdue(self) -> bool:
        """An early event has waited too long for those before it: read the database."""
        late = asyncio.get_running_loop().time() - self.early_since
        return bool(self.early) and late >= REORDER_SECONDS

    def _take(self, event: Event) -> bool:
        if event.id is None:
            return True
        if event.id in self.sent or (self.contiguous and self.highest is not None
                                     and event.id <= self.highest):
            return False
        self.sent.add(event.id)
        self.highest = event.id if self.highest is None else max(self.highest, event.id)
        if len(self.sent) > 2 * QUEUE_LIMIT:
            self.sent = {i for i in self.sent if i > self.highest - QUEUE_LIMIT}
        return True

    def _flush(self) -> list[Event]:
        out = []
        for stale in [i for i in self.early if self.highest is not None and i <= self.highest]:
            del self.early[stale]
        while self.highest is not None and self.highest + 1 in self.early:
            event = self.early.pop(self.highest + 1)
            self._take(event)
            out.append(event)
        if self.early:
            self.early_since = asyncio.get_running_loop().time()
        return out


_FRAMES: OrderedDict[int, tuple[Event, bytes]] = OrderedDict()
FRAME_CACHE = 256


def _frame(event: Event, event_name: Callable[[Event], str]) -> bytes:
    """The event as ``text/event-stream`` bytes, encoded once for all its subscribers.

    The hub hands the same ``Event`` object to every stream of the process; the cache
    holds the object itself, so its ``id()`` cannot be reused while it is cached.
    """
    cached = _FRAMES.get(id(event))
    if cached is not None and cached[0] is event:
        return cached[1]
    head = "" if event.id is None else f"id: {event.id}\n"
    frame = f"{head}event: {event_name(event)}\ndata: ".encode() + _encode(event.data) + b"\n\n"
    _FRAMES[id(event)] = (event, frame)
    if len(_FRAMES) > FRAME_CACHE:
        _FRAMES.popitem(last=False)
    return frame


async def _write(response: web.StreamResponse, frame: bytes) -> None:
    """Write one frame. A client that stops reading is dropped by the kernel:
    aiohttp-sse sets ``TCP_USER_TIMEOUT`` (120 s) on the socket, and the write fails."""
    await response.write(frame)
