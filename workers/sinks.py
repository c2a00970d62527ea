"""Where outbox events go: an HTTP endpoint of the data platform, or (by default) the log."""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Protocol

log = logging.getLogger("bazaar.data_platform")


class Sink(Protocol):
    """Delivers one event or raises."""

    def deliver(self, event_id: int, topic: str, payload: dict) -> None:
        """Deliver the event; any exception means it was not taken."""


class LogSink:
    """Development sink: logs each event."""

    def deliver(self, event_id: int, topic: str, payload: dict) -> None:
        """Log the event."""
        log.info("event", extra={"event_id": event_id, "topic": topic, "payload": payload})


class HttpSink:
    """POSTs each event as JSON; a non-2xx answer or a timeout is a failure."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout

    def deliver(self, event_id: int, topic: str, payload: dict) -> None:
        """POST ``{"id", "topic", "payload"}`` with an ``Idempotency-Key`` of the event id."""
        body = json.dumps({"id": event_id, "topic": topic, "payload": payload}).encode()
        request = urllib.request.Request(
            self.url, data=body, method="POST",
            headers={"Content-Type": "application/json", "Idempotency-Key": f"event-{event_id}"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            if not 200 <= response.status < 300:
                raise RuntimeError(f"data platform answered {response.status}")


def make_sink(url: str | None) -> Sink:
    """An HTTP sink for ``url``, else the log sink."""
    return HttpSink(url) if url else LogSink()
