"""Process settings, read once from environment variables at start-up.

Every process (web, worker, scheduler, CLI) calls :func:`Settings.from_env` once and
passes the result down; nothing else reads ``os.environ``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEV_DATABASE_URL = "sqlite:///var/bazaar.sqlite3"


class SettingsError(RuntimeError):
    """A required setting is missing or malformed."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _scrypt_cost(env: Mapping[str, str], default: int) -> int:
    """``SCRYPT_N``: a power of two from 16 to 2**20 (scrypt refuses any other, and below 16
    the memory it needs is past the cap the hash sets), so that a wrong value stops the
    process at start-up instead of failing every sign-up."""
    n = _int(env, "SCRYPT_N", default)
    if not 16 <= n <= 2**20 or n & (n - 1):
        raise SettingsError(f"SCRYPT_N must be a power of two from 16 to 1048576, got {n}")
    return n


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not 0 < value < float("inf"):
        raise SettingsError(f"{name} must be a positive number, got {raw!r}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be a boolean, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    """All tunables of a Bazaar process."""

    database_url: str = DEV_DATABASE_URL
    redis_url: str | None = None  # None means the embedded in-process stand-in
    redis_prefix: str = "bazaar"
    production: bool = False
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    access_token_ttl: int = 15 * 60
    refresh_token_ttl: int = 14 * 24 * 3600
    secure_cookies: bool = True
    scrypt_n: int = 2**14
    db_pool_size: int = 16
    worker_processes: int = 2  # ``bazaar worker``
    worker_threads: int = 8  # per worker process (``bazaar worker``)
    max_body_bytes: int = 64 * 1024
    client_timeout: int = 10  # seconds to send complete headers, or between body chunks
    port: int = 8000
    host: str = "0.0.0.0"
    sms_sender: str = "web.sms:LogSender"
    phone_code_ttl: int = 180
    phone_code_max_tries: int = 5
    phone_code_rate: int = 3  # codes per user per rate window
    phone_code_number_rate: int = 3  # codes per phone number per rate window
    phone_code_rate_window: int = 600
    login_fail_limit_user: int = 10  # failed logins per username per window
    login_fail_limit_address: int = 50  # failed logins per client address per window
    login_fail_window: int = 600
    trusted_proxy_hops: int = 0  # proxies in front whose X-Forwarded-For entries are trusted
    job_max_retries: int = 3
    job_max_deliveries: int = 6
    broker_heartbeat_timeout_ms: int = 15_000
    broker_maintenance_interval: float = 1.0  # seconds between two maintenance runs of a queue
    scheduler_tick: float = 1.0
    heartbeat_interval: float = 2.0  # seconds between two beats of a worker process
    stall_seconds: float = 30.0  # oldest ready message this old, no job finished: stalled
    log_level: str = "INFO"
    # The environment as read at start-up: each domain reads its own settings from it
    # (``jobs.platform.Registry.settings``), so adding a domain adds no field here.
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def embedded(self) -> bool:
        """True when no Redis is configured: run on in-process stand-ins."""
        return self.redis_url is None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the environment, failing clearly on bad or missing values."""
        env = os.environ if env is None else env
        production = _bool(env, "BAZAAR_PRODUCTION", False)
        secret = env.get("JWT_SECRET")
        if production and len(secret or "") < 32:
            raise SettingsError("BAZAAR_PRODUCTION needs a JWT_SECRET of 32+ characters")
        if production and not env.get("DATABASE_URL"):
            raise SettingsError("DATABASE_URL is required when BAZAAR_PRODUCTION is set")
        d = cls()
        return cls(
            database_url=env.get("DATABASE_URL") or DEV_DATABASE_URL,
            redis_url=env.get("REDIS_URL") or None,
            redis_prefix=env.get("REDIS_PREFIX") or d.redis_prefix,
            production=production,
            jwt_secret=secret or d.jwt_secret,
            access_token_ttl=_int(env, "ACCESS_TOKEN_TTL", d.access_token_ttl),
            refresh_token_ttl=_int(env, "REFRESH_TOKEN_TTL", d.refresh_token_ttl),
            secure_cookies=_bool(env, "SECURE_COOKIES", d.secure_cookies),
            scrypt_n=_scrypt_cost(env, d.scrypt_n),
            db_pool_size=_int(env, "DB_POOL_SIZE", d.db_pool_size),
            worker_processes=_int(env, "WORKER_PROCESSES", d.worker_processes),
            worker_threads=_int(env, "WORKER_THREADS", d.worker_threads),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", d.max_body_bytes),
            client_timeout=_int(env, "CLIENT_TIMEOUT", d.client_timeout),
            port=_int(env, "PORT", d.port, minimum=0),
            host=env.get("HOST") or d.host,
            sms_sender=env.get("SMS_SENDER") or d.sms_sender,
            phone_code_rate=_int(env, "PHONE_CODE_RATE", d.phone_code_rate),
            phone_code_number_rate=_int(env, "PHONE_CODE_NUMBER_RATE", d.phone_code_number_rate),
            phone_code_rate_window=_int(env, "PHONE_CODE_RATE_WINDOW", d.phone_code_rate_window),
            login_fail_limit_user=_int(env, "LOGIN_FAIL_LIMIT_USER", d.login_fail_limit_user),
            login_fail_limit_address=_int(
                env, "LOGIN_FAIL_LIMIT_ADDRESS", d.login_fail_limit_address
            ),
            login_fail_window=_int(env, "LOGIN_FAIL_WINDOW", d.login_fail_window),
            trusted_proxy_hops=_int(env, "TRUSTED_PROXY_HOPS", d.trusted_proxy_hops, minimum=0),
            job_max_retries=_int(env, "JOB_MAX_RETRIES", d.job_max_retries, minimum=0),
            job_max_deliveries=_int(env, "JOB_MAX_DELIVERIES", d.job_max_deliveries),
            broker_heartbeat_timeout_ms=_int(
                env, "BROKER_HEARTBEAT_TIMEOUT_MS", d.broker_heartbeat_timeout_ms
            ),
            broker_maintenance_interval=_float(
                env, "BROKER_MAINTENANCE_INTERVAL", d.broker_maintenance_interval
            ),
            heartbeat_interval=_float(env, "HEARTBEAT_INTERVAL", d.heartbeat_interval),
            stall_seconds=_float(env, "STALL_SECONDS", d.stall_seconds),
            log_level=env.get("LOG_LEVEL") or d.log_level,
            env=dict(env),
        )

    def sqlite_path(self) -> Path | None:
        """The SQLite file of a ``sqlite:///`` URL, else None."""
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url.removeprefix("sqlite:///"))
        return None
