"""Pluggable SMS senders; ``SMS_SENDER=module:Class`` picks one (default: log the message)."""

from __future__ import annotations

import importlib
import logging
from typing import Protocol

log = logging.getLogger("bazaar.sms")


class SmsSender(Protocol):
    """Anything that can deliver a text message (called off the event loop)."""

    def send(self, phone: str, text: str) -> None:
        """Deliver ``text`` to ``phone``."""


class LogSender:
    """Development sender: writes the message to the log instead of sending it."""

    def send(self, phone: str, text: str) -> None:
        """Log the message."""
        log.info("sms", extra={"phone": phone, "text": text})


class MemorySender:
    """Keeps messages in memory (tests, demos)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, phone: str, text: str) -> None:
        """Remember the message."""
        self.sent.append((phone, text))


def load_sender(path: str) -> SmsSender:
    """Instantiate the sender class named ``module:Class``."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)()
