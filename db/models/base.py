"""The base model and shared field types."""

from __future__ import annotations

import json
from typing import Any

import peewee

from db.connection import database


class JSONField(peewee.TextField):
    """A JSON document stored as text (portable between PostgreSQL and SQLite)."""

    def db_value(self, value: Any) -> str | None:
        """Serialise to compact JSON."""
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def python_value(self, value: str | None) -> Any:
        """Parse stored JSON."""
        return None if value is None else json.loads(value)


class BaseModel(peewee.Model):
    """All models bind to the process's database proxy; times are naive UTC."""

    class Meta:
        database = database
        legacy_table_names = False
