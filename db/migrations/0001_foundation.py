"""Foundation: users, point wallets and history, jobs, periodic runs.

The models below are a frozen copy of the schema at this migration, deliberately
independent of ``db.models`` so that later model changes never rewrite history.
"""

from peewee import (
    BigAutoField,
    BigIntegerField,
    BooleanField,
    CharField,
    Check,
    CompositeKey,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
    UUIDField,
)


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class User(Base):
        id = BigAutoField()
        username = CharField(max_length=32, unique=True)
        password_hash = CharField(max_length=255)
        phone = CharField(max_length=20, null=True)
        phone_verified = BooleanField(default=False)
        is_artist = BooleanField(default=False)
        is_admin = BooleanField(default=False)
        created_at = DateTimeField()

        class Meta:
            table_name = "users"

    class PointWallet(Base):
        user = ForeignKeyField(User, primary_key=True, on_delete="CASCADE")
        balance = BigIntegerField(default=0, constraints=[Check("balance >= 0")])
        updated_at = DateTimeField()

        class Meta:
            table_name = "point_wallets"

    class PointHistory(Base):
        id = BigAutoField()
        user = ForeignKeyField(User, on_delete="CASCADE", index=False)
        type = CharField(max_length=8)
        amount = BigIntegerField()
        balance_after = BigIntegerField(constraints=[Check("balance_after >= 0")])
        ref = CharField(max_length=100)
        created_at = DateTimeField()

        class Meta:
            table_name = "point_history"
            indexes = ((("user", "id"), False),)

    class Job(Base):
        id = UUIDField(primary_key=True)
        user = ForeignKeyField(User, on_delete="CASCADE", index=False)
        type = CharField(max_length=64)
        status = CharField(max_length=16, default="queued")
        payload = TextField()
        request_hash = CharField(max_length=64)
        idempotency_key = CharField(max_length=64, null=True)
        result = TextField(null=True)
        error = TextField(null=True)
        attempts = IntegerField(default=0)
        sent = BooleanField(default=False)
        created_at = DateTimeField()
        started_at = DateTimeField(null=True)
        finished_at = DateTimeField(null=True)

        class Meta:
            table_name = "jobs"
            indexes = (
                (("user", "idempotency_key"), True),
                (("user", "created_at"), False),
            )

    class PeriodicRun(Base):
        schedule_id = CharField(max_length=64)
        slot = BigIntegerField()
        ran_at = DateTimeField()

        class Meta:
            table_name = "periodic_runs"
            primary_key = CompositeKey("schedule_id", "slot")

    db.create_tables([User, PointWallet, PointHistory, Job, PeriodicRun])
    # The re-send sweep only ever looks at jobs that are not terminal yet.
    db.execute_sql(
        "CREATE INDEX jobs_unfinished_created_at ON jobs (created_at)"
        " WHERE status IN ('queued', 'running')"
    )
