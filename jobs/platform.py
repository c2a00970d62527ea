"""The platform contract: how a domain plugs in.

A domain declares, in its own module, one :class:`Domain` value:

- its **commands** (:class:`Command`): job type, payload schema (a msgspec ``Struct``),
  handler, and where the door takes it (method and path). The door decodes requests
  with the schema, the worker decodes stored payloads with it, the OpenAPI describes it.
- its **periodic tasks** (:class:`Periodic`): id, interval (or cron), handler;
- its **reactions**: what runs after a transaction that emitted a topic has committed;
- which of its topics go to the **outbox** (the data platform) and which are **live**
  (published to every web process's hub);
- its **models**, so tests and tools can reset them;
- its **settings**: a msgspec ``Struct`` with defaults, each field read from the
  environment variable of the same name upper-cased (``QUEUE_ACTIVE_LIMIT``).

Handlers get a :class:`Context` and never open, commit or roll back a transaction: the
lifecycle (``workers.lifecycle``) owns it. ``ctx.emit(topic, data)`` records an event:
an outbox topic is written as an outbox row at once (inside the transaction, so it
vanishes with a rollback); everything else is held and handed out only after commit.

Nothing here imports aiohttp or dramatiq.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from jobs import outbox

DOMAINS = ("system", "users", "points", "shop", "concerts", "auction", "feed")
"""The one list of domains: ``jobs.<name>`` declares ``DOMAIN``; routes, actors, the
schedule, the test reset and the OpenAPI all iterate it."""


@dataclass(frozen=True)
class Event:
    """Something that happened inside a transaction, handed out after it commits.

    ``key`` routes a live event to its listeners (a user id, an artwork id); ``id`` is
    the stream's event id when the event is also a database row (for replay).
    """

    topic: str
    data: dict[str, Any]
    key: str | None = None
    id: int | None = None


@dataclass
class Context:
    """What a handler gets: its job (if any), owner, ``now``, services, and ``emit``."""

    now: datetime
    services: Any = None
    job: Any = None
    user_id: int | None = None
    events: list[Event] = field(default_factory=list)
    # With ``defer_outbox``, outbox events wait here, and the job's finish writes them
    # (same transaction, same round trip); otherwise each is written when emitted.
    defer_outbox: bool = False
    outbox: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def emit(self, topic: str, data: dict[str, Any], *, key: Any = None,
             id: int | None = None) -> None:
        """Record an event; it leaves only if the transaction commits."""
        if topic in REGISTRY.outbox_topics:
            if self.defer_outbox:
                self.outbox.append((topic, data))
            else:
                outbox.add_event(topic, data, self.now)  # written in this transaction
        else:
            self.events.append(Event(topic, data, None if key is None else str(key), id))


Handler = Callable[[Context, Any], dict]
PeriodicHandler = Callable[[Context], dict]
Reaction = Callable[[Context, Event], dict | None]
Hook = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class Command:
    """A command, declared once.

    ``schema`` is the payload. ``path`` fields (``{order_id}``) are taken from the URL
    (an id that is not one is the ``not_found`` code); ``door_fields`` are filled in by
    the door's check (from a header, say); the rest come from the JSON body.
    ``gate`` runs in the worker before the transaction and may refuse; ``give_up`` runs
    once after the job's failure has committed, with its reason code, to undo the gate.
    """

    type: str
    schema: type[msgspec.Struct]
    handler: Handler
    method: str
    path: str
    summary: str
    result: type | None = None
    errors: tuple[str, ...] = ()
    not_found: str = "NOT_FOUND"
    door_fields: tuple[str, ...] = ()
    gate: Hook | None = None
    give_up: Hook | None = None

    @property
    def path_fields(self) -> tuple[str, ...]:
        """The payload fields that come from the URL."""
        return tuple(part[1:-1] for part in self.path.split("/") if part.startswith("{"))

    @property
    def body_fields(self) -> tuple[str, ...]:
        """The payload fields that come from the JSON body."""
        taken = set(self.path_fields) | set(self.door_fields)
        return tuple(f for f in self.schema.__struct_fields__ if f not in taken)

    def decode(self, payload: dict[str, Any]) -> msgspec.Struct:
        """A stored payload as the schema's value (the worker side)."""
        return msgspec.convert(payload, self.schema)


@dataclass(frozen=True)
class Periodic:
    """Periodic work: every ``every`` seconds (a number, or the name of a domain setting)
    or on a UTC ``cron`` line."""

    id: str
    handler: PeriodicHandler
    every: int | str | None = None
    cron: str | None = None


@dataclass(frozen=True)
class Domain:
    """Everything one domain adds to the platform."""

    name: str
    commands: tuple[Command, ...] = ()
    periodic: tuple[Periodic, ...] = ()
    reactions: dict[str, Reaction] = field(default_factory=dict)
    outbox_topics: frozenset[str] = frozenset()
    live_topics: frozenset[str] = frozenset()
    models: tuple[Any, ...] = ()
    settings: type[msgspec.Struct] | None = None


class Registry:
    """Every registered domain, and indexes over them."""

    def __init__(self) -> None:
        self.domains: dict[str, Domain] = {}
        self.commands: dict[str, Command] = {}
        self.periodic: dict[str, Periodic] = {}
        self.owner: dict[str, str] = {}
        self.reactions: dict[str, list[Reaction]] = {}
        self.outbox_topics: set[str] = set()
        self.live_topics: set[str] = set()

    def register(self, domain: Domain) -> Domain:
        """Add a domain (again: replaced); its names must not collide with another's."""
        self.domains[domain.name] = domain
        self._index()
        return domain

    def unregister(self, name: str) -> None:
        """Remove a domain (tests that add one of their own)."""
        self.domains.pop(name, None)
        self._index()

    def _index(self) -> None:
        self.commands, self.periodic, self.reactions, self.owner = {}, {}, {}, {}
        self.outbox_topics, self.live_topics = set(), set()
        for domain in self.domains.values():
            for command in domain.commands:
                if command.type in self.commands:
                    raise ValueError(f"command {command.type} declared twice")
                self.commands[command.type] = command
            for task in domain.periodic:
                if task.id in self.periodic:
                    raise ValueError(f"periodic task {task.id} declared twice")
                self.periodic[task.id] = task
                self.owner[task.id] = domain.name
            for topic, reaction in domain.reactions.items():
                self.reactions.setdefault(topic, []).append(reaction)
            self.outbox_topics |= domain.outbox_topics
            self.live_topics |= domain.live_topics

    def settings(self, settings: Any) -> dict[str, Any]:
        """Each domain's settings, from the environment captured in ``settings.env``."""
        out = {}
        for domain in self.domains.values():
            if domain.settings is None:
                continue
            fields = msgspec.structs.fields(domain.settings)
            raw = {f.name: settings.env[f.name.upper()] for f in fields
                   if settings.env.get(f.name.upper())}
            try:
                out[domain.name] = msgspec.convert(raw, domain.settings, strict=False)
            except msgspec.ValidationError as e:
                raise ValueError(f"settings of {domain.name}: {e}") from None
        return out

    def interval(self, task: Periodic, settings: Any) -> int | None:
        """A task's interval in seconds (``every`` may name its domain's setting)."""
        if not isinstance(task.every, str):
            return task.every
        return getattr(self.settings(settings)[self.owner[task.id]], task.every)

    def models(self) -> list[Any]:
        """Every domain's models, in declaration order."""
        return [model for domain in self.domains.values() for model in domain.models]


REGISTRY = Registry()


def load_domains(names: Iterable[str] = DOMAINS) -> Registry:
    """Import each domain's module and register its ``DOMAIN`` (idempotent)."""
    for name in names:
        if name not in REGISTRY.domains:
            REGISTRY.register(importlib.import_module(f"jobs.{name}").DOMAIN)
    return REGISTRY
