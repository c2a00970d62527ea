"""The module ``dramatiq`` loads in each worker process: ``dramatiq workers.main``."""

from __future__ import annotations

import redis

from db.logs import configure_logging
from db.settings import Settings
from workers import bootstrap

settings = Settings.from_env()
if settings.embedded:
    raise SystemExit("a separate worker process needs REDIS_URL; use `bazaar dev` for embedded")
configure_logging(settings.log_level)
runtime = bootstrap.start(settings, redis.Redis.from_url(settings.redis_url))
runtime.publisher.start()  # after-commit notices leave in batches, from their own thread
bootstrap.calm_garbage_collector()
broker = runtime.broker
