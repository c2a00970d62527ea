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

    @classmethod
    def loaded(cls, **values: Any) -> peewee.Model:
        """An instance holding ``values`` (by field name, already in Python form: as read
        back from its row), its defaults under them, nothing dirty: what the constructor
        makes of them without passing each through its field's setter (a job's two
        instances per delivery: 14 -> 3 microseconds).

        Leans on peewee's instance layout (``__data__``, ``_dirty``, ``__rel__``);
        ``tests/test_records.py`` checks it against the constructor."""
        instance = cls.__new__(cls)
        instance.__data__ = {**cls._meta.get_default_dict(), **values}
        instance._dirty = set()
        instance.__rel__ = {}
        return instance
