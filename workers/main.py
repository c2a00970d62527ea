"""The module ``dramatiq`` loads in each worker process: ``dramatiq workers.main``."""

from __future__ import annotations

from db.logs import configure_logging
from db.settings import Settings
from workers import bootstrap
from workers.broker import thread_client

settings = Settings.from_env()
if settings.embedded:
    raise SystemExit("a separate worker process needs REDIS_URL; use `bazaar dev` for embedded")
configure_logging(settings.log_level)
runtime = bootstrap.start(settings, thread_client(settings.redis_url, settings.worker_threads))
runtime.publisher.start()  # after-commit notices leave in batches, from their own thread
# Each thread keeps its database connection between jobs, where the pool has one for
# every thread (otherwise a thread past the pool's size would wait for one forever).
runtime.keep_connections = settings.worker_threads <= settings.db_pool_size
bootstrap.calm_garbage_collector()
broker = runtime.broker
