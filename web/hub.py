"""The live hub: one Redis pub/sub connection per web process, fanned out in-process.

Workers publish committed events on ``{prefix}:live:{topic}`` (one event, or a JSON
array of the events of one topic that left together); the hub holds one
pattern subscription to them all and calls the listeners registered for the event's
``(topic, key)``, then those registered for ``(topic, "*")`` (every key of the topic).
redis-py's asyncio pub/sub does not recover from a dropped connection by itself, so
the hub reconnects with backoff, and after every gap it calls each listener with
``None``: "you may have missed events; re-read from the database".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable

import msgspec
import redis.asyncio as aioredis

from jobs.platform import Event
from workers.events import live_pattern

log = logging.getLogger(__name__)
Listener = Callable[[Event | None], None]
ANY_KEY = "*"


class _Wire(msgspec.Struct):
    key: str | None
    id: int | None
    data: dict


class LiveHub:
    """Fans out live events to in-process listeners; reconnects by itself."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.pattern = live_pattern(prefix)
        self._topic_at = len(prefix) + len(":live:")
        self._listeners: dict[tuple[str, str], set[Listener]] = defaultdict(set)
        self._decode = msgspec.json.Decoder(_Wire | list[_Wire]).decode
        self._task: asyncio.Task | None = None
        self.connected = asyncio.Event()
        self.reconnects = 0

    def listen(self, topic: str, key: str, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with each event of ``(topic, key)`` (``key`` ``"*"``: of the
        topic, whatever its key); returns the unsubscribe."""
        slot = (topic, key)
        self._listeners[slot].add(listener)

        def stop() -> None:
            listeners = self._listeners.get(slot)
            if listeners is not None:
                listeners.discard(listener)
                if not listeners:
                    del self._listeners[slot]

        return stop

    async def start(self) -> None:
        """Start listening (in the background)."""
        self._task = asyncio.create_task(self._run(), name="live-hub")

    async def stop(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.psubscribe(self.pattern)
                if self.reconnects:
                    self._gap()  # whatever was published while we were away is missed
                self.connected.set()
                backoff = 0.05
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                       timeout=None)
                    if message is not None:
                        self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.connected.clear()
                self.reconnects += 1
                log.warning("live hub lost Redis; reconnecting", extra={"reason": repr(e)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _dispatch(self, message: dict) -> None:
        if message.get("type") != "pmessage":
            return
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else channel
        try:
            wires = self._decode(message["data"])
        except msgspec.DecodeError:
            log.warning("live hub: undecodable event", extra={"channel": channel})
            return
        topic = channel[self._topic_at:]
        for wire in wires if isinstance(wires, list) else (wires,):
            event = Event(topic, wire.data, wire.key, wire.id)
            slots = dict.fromkeys([(topic, wire.key or ""), (topic, ANY_KEY)])
            for slot in slots:  # (an event keyed "*" itself reaches its listeners once)
                for listener in list(self._listeners.get(slot, ())):
                    listener(event)

    def _gap(self) -> None:
        for listeners in list(self._listeners.values()):
            for listener in list(listeners):
                listener(None)
