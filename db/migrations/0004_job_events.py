"""Job events: each status change of a job takes a value of one sequence (its event id)."""

from peewee import PostgresqlDatabase


def up(migrator, db):
    if isinstance(db, PostgresqlDatabase):
        db.execute_sql("CREATE SEQUENCE IF NOT EXISTS job_event_seq")
        db.execute_sql("ALTER TABLE jobs ADD COLUMN seq BIGINT DEFAULT nextval('job_event_seq')")
    else:  # SQLite (development): no sequences; the column is filled by MAX(seq) + 1
        db.execute_sql("ALTER TABLE jobs ADD COLUMN seq BIGINT")
    db.execute_sql("CREATE INDEX IF NOT EXISTS jobs_user_id_seq ON jobs (user_id, seq)")


def down(migrator, db):
    db.execute_sql("DROP INDEX IF EXISTS jobs_user_id_seq")
    db.execute_sql("ALTER TABLE jobs DROP COLUMN seq")
