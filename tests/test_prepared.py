"""Prepared hot statements: prepared once per connection, right after a rollback or a
reconnect, and off when ``DATABASE_URL`` says so. Transactions whose first statement
carries BEGIN and whose last may carry COMMIT."""

from __future__ import annotations

import peewee
import psycopg2
import pytest

from db import connection
from db.connection import database, execute, make_database
from tests.conftest import PG_HOST, PG_USER

SQL = "SELECT %s::int + %s::int, '100%%'"


def server_statements(db) -> list[str]:
    """The names this session's connection holds prepared on the server."""
    return [name for (name,) in db.execute_sql("SELECT name FROM pg_prepared_statements")]


def test_prepared_once_per_connection_and_answers_like_plain_sql(database) -> None:
    database.close_all()
    with database.connection_context():
        plain = execute(SQL, (2, 3)).fetchone()
        first = execute(SQL, (2, 3), prepare=True).fetchone()
        again = execute(SQL, (40, 2), prepare=True).fetchone()
        names = server_statements(database)
    assert plain == first == (5, "100%")
    assert again == (42, "100%")
    assert len(names) == 1


def test_a_statement_prepared_in_a_rolled_back_transaction_stays_usable(database) -> None:
    database.close()  # a fresh connection: nothing prepared yet
    with database.connection_context():
        with pytest.raises(ZeroDivisionError), database.atomic():
            assert execute(SQL, (1, 1), prepare=True).fetchone()[0] == 2
            raise ZeroDivisionError  # the transaction rolls back; the statement stays
        with database.atomic():
            assert execute(SQL, (5, 5), prepare=True).fetchone()[0] == 10


def test_a_failed_transaction_does_not_record_a_statement_it_could_not_prepare(database):
    database.close()
    with database.connection_context():
        with pytest.raises(peewee.DatabaseError), database.atomic():
            database.execute_sql("SELECT 1 / 0")
        # the PREPARE ran inside the aborted transaction and failed: not recorded...
        with pytest.raises(peewee.DatabaseError), database.atomic():
            database.execute_sql("SELECT 1 / 0")
            execute(SQL, (1, 2), prepare=True)
        # ...so the next transaction prepares it for real
        with database.atomic():
            assert execute(SQL, (1, 2), prepare=True).fetchone()[0] == 3


def test_a_new_connection_prepares_again(database) -> None:
    database.close_all()
    with database.connection_context():
        execute(SQL, (1, 1), prepare=True)
        pid = database.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
    admin = psycopg2.connect(host=PG_HOST, user=PG_USER, dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute("SELECT pg_terminate_backend(%s)", (pid,))
    admin.close()
    # the pool hands out the dead connection once
    with database.connection_context(), pytest.raises(peewee.OperationalError):
        execute(SQL, (3, 4), prepare=True)
    with database.connection_context():  # a new one, which prepares the statement again
        assert execute(SQL, (3, 4), prepare=True).fetchone()[0] == 7
        assert any(n.startswith("bz_") for n in server_statements(database))


def test_prepared_statements_can_be_turned_off(database_url: str) -> None:
    db = make_database(f"{database_url}?prepared_statements=false")
    assert db.prepare is False
    saved = database.obj
    database.initialize(db)
    try:
        with db.connection_context():
            assert execute(SQL, (1, 2), prepare=True).fetchone()[0] == 3
            assert server_statements(db) == []
    finally:
        database.initialize(saved)
        db.close_all()
    with pytest.raises(ValueError, match="prepared_statements"):
        make_database(f"{database_url}?prepared_statements=maybe")


def test_a_connection_holds_a_bounded_number_of_statements(database, monkeypatch) -> None:
    monkeypatch.setattr(connection, "_MAX_PREPARED", 3)
    database.close()
    with database.connection_context():
        for n in range(5):
            assert execute(f"SELECT %s::int + {n}", (1,), prepare=True).fetchone()[0] == 1 + n
        assert len([n for n in server_statements(database) if n.startswith("bz_")]) == 3


# -- the transaction's first statement carries BEGIN, its last may carry COMMIT --------------


SCRATCH = "DROP TABLE IF EXISTS t; CREATE TEMP TABLE t (n int)"  # (per pooled connection)


def round_trips(database, monkeypatch) -> list[str]:
    """Every SQL string sent to the server from now on (one per round trip)."""
    sent: list[str] = []
    cursor_class = psycopg2.extensions.cursor

    class Counting(cursor_class):
        def execute(self, sql, params=None):
            sent.append(sql)
            return super().execute(sql, params)

    monkeypatch.setattr(type(database), "cursor",
                        lambda self, *a, **k: self.connection().cursor(cursor_factory=Counting))
    return sent


def test_a_transaction_of_two_statements_takes_two_round_trips(database, clean_db,
                                                                monkeypatch) -> None:
    with database.connection_context():
        database.execute_sql(SCRATCH)
        sent = round_trips(database, monkeypatch)
        with database.atomic():
            database.execute_sql("INSERT INTO t VALUES (1)")
            cursor = database.commit_with("INSERT INTO t VALUES (2)", (),
                                          after="SELECT count(*) FROM t")
            assert cursor.fetchone() == (2,)
        assert sent == ["BEGIN; INSERT INTO t VALUES (1)",
                        "INSERT INTO t VALUES (2); COMMIT; SELECT count(*) FROM t"]
    with database.connection_context():
        assert database.execute_sql("SELECT count(*) FROM t").fetchone() == (2,)


def test_a_failing_last_statement_commits_nothing(database, clean_db) -> None:
    with database.connection_context():
        database.execute_sql(SCRATCH)
        with pytest.raises(peewee.DataError), database.atomic():
            database.execute_sql("INSERT INTO t VALUES (1)")
            database.commit_with("SELECT 1 / 0", (), after="SELECT 1")
        assert database.execute_sql("SELECT count(*) FROM t").fetchone() == (0,)
        with database.atomic():  # the connection is clean again
            database.execute_sql("INSERT INTO t VALUES (2)")
        assert database.execute_sql("SELECT count(*) FROM t").fetchone() == (1,)


def test_only_the_outermost_transaction_commits_with_a_statement(database, clean_db) -> None:
    with (database.connection_context(), pytest.raises(RuntimeError), database.atomic(),
          database.atomic()):
        database.commit_with("SELECT 1", ())


def test_inside_a_savepoint_the_transaction_is_not_the_outermost(database, clean_db) -> None:
    with database.connection_context(), database.atomic():
        assert database.in_outermost_transaction()
        with database.atomic():
            assert not database.in_outermost_transaction()
        assert database.in_outermost_transaction()
        with pytest.raises(ZeroDivisionError), database.atomic():
            raise ZeroDivisionError
        assert database.in_outermost_transaction()
