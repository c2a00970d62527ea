"""The operator console: a replayed job names its original (once: UNIQUE), and the
indexes the console's lists and statistics read by (every user's jobs by time, and the
jobs that finished in a window)."""


def up(migrator, db):
    db.execute_sql("ALTER TABLE jobs ADD COLUMN replay_of UUID NULL"
                   if _postgres(db) else "ALTER TABLE jobs ADD COLUMN replay_of VARCHAR(40) NULL")
    # (partial: the many jobs that replay nothing cost the index nothing)
    db.execute_sql("CREATE UNIQUE INDEX IF NOT EXISTS jobs_replay_of ON jobs (replay_of)"
                   " WHERE replay_of IS NOT NULL")
    db.execute_sql("CREATE INDEX IF NOT EXISTS jobs_created_at ON jobs (created_at, id)")
    db.execute_sql("CREATE INDEX IF NOT EXISTS jobs_finished_at ON jobs (finished_at)")


def down(migrator, db):
    for index in ("jobs_replay_of", "jobs_created_at", "jobs_finished_at"):
        db.execute_sql(f"DROP INDEX IF EXISTS {index}")
    db.execute_sql("ALTER TABLE jobs DROP COLUMN replay_of")


def _postgres(db) -> bool:
    from peewee import PostgresqlDatabase

    return isinstance(db, PostgresqlDatabase)
