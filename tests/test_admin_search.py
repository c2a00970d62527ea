"""The console's text search matches what was typed: ``%`` and ``_`` are literal
characters, on PostgreSQL and on the embedded SQLite database alike."""

from __future__ import annotations

import pytest

from db.connection import connect_database, database
from db.migrate import migrate
from jobs import admin, records, users

PAYLOADS = ({"note": "100% cotton"}, {"note": "1000 cotton"}, {"note": "a_b"},
            {"note": "axb"})


def search(text: str) -> list[str]:
    items = admin.list_jobs(None, None, None, text, 50, None)["items"]
    return sorted(job["payload"]["note"] for job in items)


def seed(clock) -> None:
    uid = users.create_user("owner", "x", clock.now()).id
    for payload in PAYLOADS:
        records.record_job(uid, "points.charge", payload, None, clock.now())


def check_searches() -> None:
    assert search("100%") == ["100% cotton"]
    assert search("a_b") == ["a_b"]
    assert search("COTTON") == ["100% cotton", "1000 cotton"]


def test_postgresql_search_is_literal(clean_db, clock) -> None:
    seed(clock)
    check_searches()


@pytest.fixture
def embedded(tmp_path):
    """The models bound to a fresh SQLite database for the test, then back."""
    outer = database.obj
    db = connect_database(f"sqlite:///{tmp_path}/search.sqlite3")
    migrate(db)
    try:
        yield db
    finally:
        db.close()
        database.initialize(outer)


def test_embedded_search_is_literal(embedded, clock) -> None:
    with embedded.connection_context():
        seed(clock)
        check_searches()
