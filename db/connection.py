"""The database connection, built from ``DATABASE_URL`` at start-up.

Models bind to :data:`database`, a proxy initialised once per process by
:func:`connect_database`. PostgreSQL uses a connection pool; SQLite (the embedded
development default) uses WAL and immediate write transactions.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import weakref
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import peewee
from playhouse.pool import PooledPostgresqlDatabase

database = peewee.DatabaseProxy()

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (peewee.OperationalError, peewee.InterfaceError)


class ImmediateSqliteDatabase(peewee.SqliteDatabase):
    """SQLite whose transactions take the write lock up front, avoiding upgrade deadlocks."""

    def atomic(self, *args, **kwargs):
        """Open a transaction (``BEGIN IMMEDIATE``) or a savepoint when nested."""
        kwargs.setdefault("lock_type", "IMMEDIATE")
        return super().atomic(*args, **kwargs)


class PostgresPool(PooledPostgresqlDatabase):
    """A connection pool that trusts psycopg2's own flag for broken connections.

    ``prepare`` (on unless ``DATABASE_URL`` says ``?prepared_statements=false``, as it
    must behind a pooler that hands one session's statements to another: PgBouncer in
    transaction mode) lets :func:`execute` keep hot statements prepared per connection.

    peewee's pool pings (``SELECT 1``) every connection it hands out: a round trip per
    unit of work. psycopg2 marks a connection ``closed`` as soon as an operation on it
    fails, so the check-out test is the local flag; the one call that meets a dead
    connection fails as a transient fault (503 at the door, a retry in a worker).
    """

    prepare = True

    def _is_closed(self, conn) -> bool:
        return bool(conn.closed)

    # BEGIN travels with the transaction's first statement ("BEGIN; UPDATE ..."): one
    # round trip less per transaction. A transaction that sends nothing sends neither
    # BEGIN nor COMMIT. A transaction whose last statement is known can send COMMIT
    # with it (``commit_with``): one more round trip less.

    def begin(self, isolation_level=None) -> None:
        """Start a transaction with its first statement."""
        self._state.committed_with = False
        if isolation_level is not None or self._isolation_level:
            super().begin(isolation_level)
            return
        if self.is_closed():  # (opening it later would reset the transaction stack)
            self.connect()
        self._state.deferred_begin = True

    def commit_with(self, sql: str, params: tuple, after: str = ""):
        """Run ``sql`` (the outermost transaction's last statement) and COMMIT in one
        round trip, then ``after`` (outside the transaction): the cursor holds the rows
        of the last statement sent. The ``atomic()`` block then ends without another
        round trip. If ``sql`` fails, the rest is not run, nothing is committed, and the
        block rolls back as usual."""
        if not self.in_outermost_transaction():
            raise RuntimeError("only the outermost transaction can be committed with a statement")
        cursor = self.execute_sql(f"{sql}; COMMIT" + (f"; {after}" if after else ""), params)
        self._state.committed_with = True
        return cursor

    def execute_sql(self, sql, params=None):
        """Run ``sql``, opening the deferred transaction first if one is pending."""
        state = self._state
        if getattr(state, "deferred_begin", False):
            state.deferred_begin = False
            sql = "BEGIN; " + sql
        return super().execute_sql(sql, params)

    def in_outermost_transaction(self) -> bool:
        """True inside a transaction, outside any savepoint."""
        return self.transaction_depth() == 1 and not getattr(self._state, "savepoints", 0)

    def savepoint(self, sid=None):
        """A savepoint (``atomic()`` inside a transaction), counted: peewee's transaction
        depth does not count them, and ``commit_with`` must not end a transaction from
        inside one."""
        return _CountedSavepoint(self, sid)

    def commit(self) -> None:
        """Commit (nothing to do if the transaction never sent a statement, or already
        sent its COMMIT)."""
        if not self._ended():
            super().commit()

    def rollback(self) -> None:
        """Roll back (nothing to do if the transaction never sent a statement; nothing
        can be once its COMMIT went with its last statement)."""
        if not self._ended():
            super().rollback()

    def _ended(self) -> bool:
        """True -- and forget it -- if the transaction was begun but never sent, or was
        committed with its last statement."""
        state = self._state
        if getattr(state, "deferred_begin", False) or getattr(state, "committed_with", False):
            state.deferred_begin = state.committed_with = False
            return True
        return False


class _CountedSavepoint(peewee._savepoint):
    """peewee's savepoint, counted in its thread's connection state while open."""

    def __enter__(self):
        entered = super().__enter__()
        self.db._state.savepoints = getattr(self.db._state, "savepoints", 0) + 1
        return entered

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.db._state.savepoints -= 1
        return super().__exit__(exc_type, exc_val, exc_tb)


def make_database(url: str, pool_size: int = 16) -> peewee.Database:
    """Create (but do not open) the database named by ``url``."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = Path(unquote(parsed.path.removeprefix("/")))
        path.parent.mkdir(parents=True, exist_ok=True)
        return ImmediateSqliteDatabase(
            str(path),
            pragmas={"journal_mode": "wal", "busy_timeout": 10_000, "foreign_keys": 1},
            check_same_thread=False,
        )
    if parsed.scheme in {"postgres", "postgresql"}:
        options = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        prepare = options.pop("prepared_statements", "true").lower()
        if prepare not in {"true", "false"}:
            raise ValueError("DATABASE_URL's prepared_statements must be true or false")
        pool = PostgresPool(
            unquote(parsed.path.lstrip("/")),
            user=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            host=parsed.hostname,
            port=parsed.port,
            max_connections=pool_size,
            stale_timeout=300,
            timeout=10,
            **options,
        )
        pool.prepare = prepare == "true"
        return pool
    raise ValueError(f"unsupported DATABASE_URL scheme {parsed.scheme!r}")


def connect_database(url: str, pool_size: int = 16) -> peewee.Database:
    """Create the database for ``url`` and bind the models' proxy to it."""
    db = make_database(url, pool_size)
    database.initialize(db)
    return db


@contextlib.contextmanager
def kept_connection(db: peewee.Database) -> Iterator[None]:
    """A unit of work on the calling thread's connection, which stays open for the
    thread's next one: a worker thread runs job after job without checking a connection
    out of the pool and back in around each (two pool locks, the database's lock twice).

    A connection that has failed (psycopg2 marks it ``closed`` as soon as an operation
    on it fails) is given back first, and the pool drops it: the call that met the dead
    connection failed as a transient fault, the next unit of work gets a fresh one.
    """
    if db.is_closed():
        db.connect()
    elif getattr(db.connection(), "closed", 0):
        db.close()
        db.connect()
    yield


def is_postgres(db: peewee.Database | peewee.DatabaseProxy = database) -> bool:
    """True when the (initialised) database is PostgreSQL."""
    target = db.obj if isinstance(db, peewee.DatabaseProxy) else db
    return isinstance(target, peewee.PostgresqlDatabase)


def for_update(query: peewee.Select, skip_locked: bool = False) -> peewee.Select:
    """Lock the selected rows (PostgreSQL); SQLite's immediate transactions already serialise."""
    return query.for_update(skip_locked=skip_locked) if is_postgres() else query


def execute(sql: str, params: tuple = (), *, prepare: bool = False):
    """Run hand-written, parameterized SQL (``%s`` placeholders) on the bound database.

    Used for the few statements on the per-job hot path, where compiling a peewee
    query costs more CPU than the round trip it makes. With ``prepare`` (one statement
    of a fixed shape), PostgreSQL parses and plans it once per connection and then only
    executes it: most of the server's CPU for a short statement is parsing and planning.
    """
    if not is_postgres():
        return database.execute_sql(sql.replace("%s", "?"), params)
    return database.execute_sql(prepared(sql, len(params)) if prepare else sql, params)


# connection -> {statement text: the EXECUTE of it}; a closed connection takes its
# statements with it (they live in the server's session), and so does its entry here.
_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MAX_PREPARED = 64  # per connection: the hot path has a handful of fixed statements
_PLACEHOLDER = re.compile(r"%(s|%)")


def prepared(sql: str, arity: int) -> str:
    """``EXECUTE`` of ``sql`` (one PostgreSQL statement with ``arity`` ``%s`` parameters)
    prepared on this transaction's connection, now if it is new there; ``sql`` itself
    when statements are not prepared, or once the connection holds too many.

    For statements sent together in one round trip (``"EXECUTE a(..); EXECUTE b(..)"``).
    """
    db = database.obj
    if not (isinstance(db, peewee.PostgresqlDatabase) and db.prepare):
        return sql
    conn = db.connection()
    statements = _PREPARED.get(conn)
    if statements is None:  # (a connection is one thread's at a time)
        statements = _PREPARED[conn] = {}
    text = statements.get(sql)
    if text is None:
        if len(statements) >= _MAX_PREPARED:
            return sql
        numbers = iter(range(1, arity + 1))
        # (the PREPARE is sent through psycopg2's formatting too: "%%" stays "%%")
        body = _PLACEHOLDER.sub(lambda m: f"${next(numbers)}" if m[1] == "s" else "%%", sql)
        name = "bz_" + hashlib.blake2s(sql.encode(), digest_size=8).hexdigest()
        # A statement survives its transaction's rollback; it is recorded only once
        # the server has it, so a failed PREPARE is simply tried again next time.
        db.execute_sql(f"PREPARE {name} AS {body}")
        text = f"EXECUTE {name} ({', '.join(['%s'] * arity)})" if arity else f"EXECUTE {name}"
        statements[sql] = text
    return text
