"""Numbered schema migrations (``db/migrations/NNNN_name.py``), safe to run twice or at once."""

from __future__ import annotations

import logging
from pathlib import Path

import peewee
from playhouse.migrations import Runner

from db.connection import is_postgres

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_LOCK_ID = 0x42A2AA2  # any constant: serialises concurrent `bazaar migrate` runs

log = logging.getLogger(__name__)


def migrate(db: peewee.Database) -> list[str]:
    """Apply every pending migration in order; return the names applied."""
    with db.connection_context():
        if is_postgres(db):
            db.execute_sql("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            applied = Runner(db, str(MIGRATIONS_DIR)).up()
        finally:
            if is_postgres(db):
                db.execute_sql("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    for name in applied:
        log.info("migration applied", extra={"migration": name})
    return applied
