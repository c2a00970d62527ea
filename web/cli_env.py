"""What each ``bazaar`` command reads from the environment: the closing part of its ``--help``.

The names come from where they are read (``Settings.from_env`` and each domain's settings
struct), so a new setting is listed without anyone remembering to; the ones a newcomer
needs first also get a sentence here.
"""

from __future__ import annotations

import inspect
import re
import textwrap

import msgspec

from db.settings import DEV_DATABASE_URL, Settings
from jobs.platform import load_domains

ADMIN_PASSWORD = "BAZAAR_ADMIN_PASSWORD"

MEANINGS = {
    "DATABASE_URL": f"the database (default {DEV_DATABASE_URL}; in production "
                    "postgresql://user@host:5432/db)",
    "REDIS_URL": "Redis, e.g. redis://127.0.0.1:6379/0 (unset: bazaar dev embeds an "
                 "in-process one; the other servers refuse to start)",
    "REDIS_PREFIX": "prefix of every Redis key, broker queues included (default bazaar)",
    "BAZAAR_PRODUCTION": "when on, JWT_SECRET (32+ characters) and DATABASE_URL are required",
    "JWT_SECRET": "HS256 key of the access tokens (default: random per process, so tokens "
                  "die with it)",
    "HOST": "address to listen on (default 0.0.0.0)",
    "PORT": "port to listen on (default 8000)",
    "SCRYPT_N": "password hashing cost: a power of two, 16 to 1048576 (default 16384)",
    "DB_POOL_SIZE": "database connections per process (default 16)",
    "LOG_LEVEL": "DEBUG, INFO (default), WARNING or ERROR; logs are JSON lines on stderr",
    "WORKER_PROCESSES": "worker processes (default 2)",
    "WORKER_THREADS": "threads per worker process (default 8)",
    "WORKER_POLL_MS": "longest sleep of an idle worker between polls, ms (default 100)",
    "HOLD_LIMIT": "live seat holds a user may have per concert (default 4)",
    ADMIN_PASSWORD: "the new admin's password, when neither PASSWORD nor "
                    "--password-stdin is given",
}

# The settings each command uses, the most useful first.
READS = {
    "migrate": ("DATABASE_URL",),
    "create-admin": ("DATABASE_URL", ADMIN_PASSWORD, "SCRYPT_N"),
    "demo-data": ("DATABASE_URL", "SCRYPT_N"),
    "outbox-replay": ("DATABASE_URL",),
    "check": ("DATABASE_URL", "HOLD_LIMIT"),
    "jobs": ("DATABASE_URL", "REDIS_URL", "REDIS_PREFIX"),
    "jobs failed": ("DATABASE_URL",),
    "jobs replay": ("DATABASE_URL", "REDIS_URL", "REDIS_PREFIX"),
    "web": ("DATABASE_URL", "REDIS_URL", "HOST", "PORT", "JWT_SECRET", "BAZAAR_PRODUCTION",
            "REDIS_PREFIX", "DB_POOL_SIZE", "SCRYPT_N"),
    "worker": ("DATABASE_URL", "REDIS_URL", "WORKER_PROCESSES", "WORKER_THREADS",
               "WORKER_POLL_MS", "REDIS_PREFIX", "DB_POOL_SIZE"),
    "scheduler": ("REDIS_URL", "REDIS_PREFIX", "DATABASE_URL"),
    "dev": ("PORT", "DATABASE_URL", "REDIS_URL", "JWT_SECRET", "SCRYPT_N"),
}
# Commands that run the whole platform, so every setting can matter to them (but `dev`
# always listens on 127.0.0.1).
SERVERS = {"web": (), "worker": (), "scheduler": (), "dev": ("HOST",)}
_NAME = re.compile(r'"([A-Z][A-Z0-9_]+)"')


def platform_names() -> list[str]:
    """Every variable ``Settings.from_env`` reads, in its order."""
    return list(dict.fromkeys(_NAME.findall(inspect.getsource(Settings.from_env))))


def domain_names() -> list[str]:
    """Every variable a domain's settings struct reads (its field names, upper-cased)."""
    return [field.name.upper() for domain in load_domains().domains.values()
            if domain.settings is not None
            for field in msgspec.structs.fields(domain.settings)]


def environment_help(command: str) -> str:
    """The ``environment:`` section of a command's help."""
    named = READS.get(command, ("DATABASE_URL",))
    lines = ["environment (read once at start-up):"]
    for name in (*named, "LOG_LEVEL"):
        lines += textwrap.wrap(MEANINGS.get(name, "-"), 80, initial_indent=f"  {name:<23}",
                               subsequent_indent=" " * 25)
    if command in SERVERS:
        skip = {*named, "LOG_LEVEL", *SERVERS[command]}
        rest = [n for n in platform_names() if n not in skip]
        lines += textwrap.wrap("also: " + ", ".join(rest), 78, initial_indent="  ",
                               subsequent_indent="    ")
        lines += textwrap.wrap("domains: " + ", ".join(domain_names()), 78,
                               initial_indent="  ", subsequent_indent="    ")
        lines.append("  (README.md says what each one means, and its default)")
    return "\n".join(lines)
