"""Job events: each status change of a job takes a value of one sequence (its event id)."""

from peewee import BigIntegerField, PostgresqlDatabase


def up(migrator, db):
    if isinstance(db, PostgresqlDatabase):
        db.execute_sql("CREATE SEQUENCE IF NOT EXISTS job_event_seq")
        db.execute_sql("ALTER TABLE jobs ADD COLUMN seq BIGINT DEFAULT nextval('job_event_seq')")
    else:
        migrator.add_column("jobs", "seq", BigIntegerField(null=True))
    db.execute_sql("CREATE INDEX IF NOT EXISTS jobs_user_id_seq ON jobs (user_id, seq)")


def down(migrator, db):
    db.execute_sql("DROP INDEX IF EXISTS jobs_user_id_seq")
    migrator.drop_column("jobs", "seq")
