"""The job record: idempotency keys, lifecycle transitions, the re-send selection."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import peewee
import pytest

from db.models import Job, PointWallet
from jobs import points, records, sweeps, users
from jobs.errors import DomainError


@pytest.fixture
def uid(clean_db, clock) -> int:
    return users.create_user("owner", "x", clock.now()).id


def test_same_key_same_body_returns_the_original(uid, clock):
    first, created = records.record_job(uid, "points.charge", {"amount": 5}, "k1", clock.now())
    again, created_again = records.record_job(uid, "points.charge", {"amount": 5}, "k1",
                                              clock.now())
    assert created and not created_again
    assert again.id == first.id
    assert Job.select().count() == 1


def test_same_key_different_body_is_refused(uid, clock):
    records.record_job(uid, "points.charge", {"amount": 5}, "k1", clock.now())
    with pytest.raises(DomainError) as refused:
        records.record_job(uid, "points.charge", {"amount": 6}, "k1", clock.now())
    assert refused.value.code == "IDEMPOTENCY_KEY_REUSED"
    assert refused.value.status == 422


def test_a_key_is_free_again_after_24_hours(uid, clock):
    first, _ = records.record_job(uid, "points.charge", {"amount": 5}, "k1", clock.now())
    clock.advance(hours=24, seconds=1)
    second, created = records.record_job(uid, "points.charge", {"amount": 9}, "k1", clock.now())
    assert created and second.id != first.id
    assert Job.select().count() == 2


def test_keys_are_per_user(uid, clock):
    other = users.create_user("other", "x", clock.now()).id
    a, _ = records.record_job(uid, "points.charge", {"amount": 5}, "k1", clock.now())
    b, created = records.record_job(other, "points.charge", {"amount": 5}, "k1", clock.now())
    assert created and a.id != b.id


def test_twenty_concurrent_uses_of_one_key_record_one_job(uid, clock, clean_db):
    ids: list[str] = []
    lock = threading.Lock()

    def submit() -> None:
        with clean_db.connection_context():
            job, _ = records.record_job(uid, "points.charge", {"amount": 5}, "same", clock.now())
        with lock:
            ids.append(str(job.id))

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 20 and len(set(ids)) == 1
    assert Job.select().count() == 1


def test_lifecycle_counts_deliveries_and_finishes_once(uid, clock):
    job, _ = records.record_job(uid, "points.charge", {"amount": 5}, None, clock.now())
    # (a start writes nothing: the finish records the delivery count it is given, at
    # least one more than the row's, however many the worker counted)
    assert records.start_job(job.id, clock.now()).attempts == 1
    assert records.start_job(job.id, clock.now(), delivery=3).attempts == 3
    assert records.finish_job(job.id, clock.now(), result={"balance": 5}, delivery=3)
    assert Job.get_by_id(job.id).attempts == 3
    assert not records.finish_job(job.id, clock.now(), error={"code": "X", "message": "x"})
    assert records.start_job(job.id, clock.now()) is None
    stored = Job.get_by_id(job.id)
    assert (stored.status, stored.result, stored.error) == ("succeeded", {"balance": 5}, None)


def test_resend_selects_old_unsent_unfinished_jobs(uid, clock):
    old, _ = records.record_job(uid, "points.charge", {"amount": 1}, None, clock.now())
    sent, _ = records.record_job(uid, "points.charge", {"amount": 2}, None, clock.now())
    done, _ = records.record_job(uid, "points.charge", {"amount": 3}, None, clock.now())
    records.mark_sent([sent.id])
    records.finish_job(done.id, clock.now(), result={})
    clock.advance(seconds=11)
    fresh, _ = records.record_job(uid, "points.charge", {"amount": 4}, None, clock.now())
    pending = sweeps.unsent_jobs(clock.now(), grace_seconds=10)
    assert [job_id for job_id, _ in pending] == [old.id]
    # After the broker lost its queues, every unfinished job counts as unsent.
    sweeps.forget_sends()
    clock.advance(seconds=11)
    assert {job_id for job_id, _ in sweeps.unsent_jobs(clock.now(), 10)} == {
        old.id, sent.id, fresh.id
    }


def test_list_jobs_filters_and_pages(uid, clock):
    for n in range(3):
        records.record_job(uid, "points.charge", {"amount": n + 1}, None, clock.now())
        clock.advance(seconds=1)
    first = records.list_jobs(uid, None, None, 2, None)
    second = records.list_jobs(uid, None, None, 2, first["next_cursor"])
    amounts = [Job.get_by_id(j["id"]).payload["amount"] for j in first["items"] + second["items"]]
    assert amounts == [3, 2, 1]
    assert second["next_cursor"] is None
    assert records.list_jobs(uid, "succeeded", None, 10, None)["items"] == []
    assert len(records.list_jobs(uid, "queued", "points.charge", 10, None)["items"]) == 3


def test_another_users_job_is_not_found(uid, clock):
    other = users.create_user("nosy", "x", clock.now()).id
    job, _ = records.record_job(uid, "points.charge", {"amount": 1}, None, clock.now())
    for job_id, user in ((str(job.id), other), ("not-a-uuid", uid)):
        with pytest.raises(DomainError) as missing:
            records.get_job(job_id, user)
        assert missing.value.code == "JOB_NOT_FOUND"
    assert records.get_job(str(job.id), uid).id == job.id


def test_periodic_slot_is_claimed_once(clean_db, clock):
    with clean_db.atomic():
        assert sweeps.claim_slot("jobs.resend", 100, clock.now())
    with clean_db.atomic():
        assert not sweeps.claim_slot("jobs.resend", 100, clock.now())
        assert sweeps.claim_slot("jobs.resend", 105, clock.now())
    clock.advance(days=2)
    assert sweeps.prune_runs(clock.now() - timedelta(days=1)) == 2


def test_a_reader_resuming_after_the_highest_id_it_saw_misses_no_finished_job(
        uid, clock, clean_db):
    # Given job A finished in a transaction that has not committed yet, and job B of the
    # same user finishing in another one meanwhile
    a, _ = records.record_job(uid, "points.charge", {"amount": 1}, None, clock.now())
    b, _ = records.record_job(uid, "points.charge", {"amount": 2}, None, clock.now())
    a_open, a_commit, b_done = threading.Event(), threading.Event(), threading.Event()

    def finish(job, opened: threading.Event | None, commit: threading.Event | None) -> None:
        with clean_db.connection_context(), clean_db.atomic():
            assert records.finish_job(job.id, clock.now(), result={})
            if opened is not None:
                opened.set()
                commit.wait(10)

    first = threading.Thread(target=finish, args=(a, a_open, a_commit))
    first.start()
    assert a_open.wait(10)
    second = threading.Thread(target=lambda: (finish(b, None, None), b_done.set()))
    second.start()
    b_done.wait(0.5)  # (B commits now if nothing orders it behind A)
    # When a reader reads what changed, then resumes after the highest id it saw once A
    # has committed too
    with clean_db.connection_context():
        seen = records.changed_since(uid, 0)
    a_commit.set()
    first.join(10)
    second.join(10)
    with clean_db.connection_context():
        highest = max((job.seq for job in seen), default=0)
        seen += records.changed_since(uid, highest)
    # Then it has seen both finished: a finish's id is taken in its user's commit order
    assert {job.id for job in seen if job.status == "succeeded"} == {a.id, b.id}


def test_a_tailing_reader_sees_every_job_of_a_user_finished_from_eight_threads(
        uid, clock, clean_db):
    jobs = [records.record_job(uid, "points.charge", {"amount": n}, None, clock.now())[0]
            for n in range(1, 241)]
    work = iter(jobs)
    lock = threading.Lock()

    def finisher() -> None:
        while True:
            with lock:
                job = next(work, None)
            if job is None:
                return
            with clean_db.connection_context(), clean_db.atomic():  # (half commit with it)
                records.finish_job(job.id, clock.now(), result={}, commit=job.payload["amount"] % 2)

    threads = [threading.Thread(target=finisher) for _ in range(8)]
    for thread in threads:
        thread.start()
    seen: set = set()
    highest = 0
    with clean_db.connection_context():
        while True:
            finished = not any(t.is_alive() for t in threads)  # (then this read is the last)
            batch = records.changed_since(uid, highest)
            seen |= {job.id for job in batch if job.status == "succeeded"}
            highest = max([highest, *(job.seq for job in batch)])
            if finished:
                break
    for thread in threads:
        thread.join()
    assert seen == {job.id for job in jobs}


# -- the finish that carries its transaction's COMMIT (PostgreSQL) ---------------------------


def balance(uid: int) -> int:
    return PointWallet.get_by_id(uid).balance


def test_a_finish_that_commits_keeps_the_effect_and_returns_the_finished_job(uid, clock,
                                                                             clean_db):
    job, _ = records.record_job(uid, "points.charge", {"amount": 5}, None, clock.now())
    with clean_db.connection_context(), clean_db.atomic():
        points.charge(uid, 5, f"job:{job.id}", clock.now())
        finished = records.finish_job(job.id, clock.now(), result={"balance": 5}, delivery=2,
                                      outbox=[("points.charged", {"user_id": uid})],
                                      commit=True)
    stored = Job.get_by_id(job.id)
    assert (finished.status, finished.attempts, finished.seq) == ("succeeded", 2, stored.seq)
    assert finished.user_id == uid and finished.created_at == stored.created_at
    assert stored.status == "succeeded" and balance(uid) == 5


def test_a_finish_that_would_commit_an_already_terminal_job_commits_nothing(uid, clock,
                                                                           clean_db):
    job, _ = records.record_job(uid, "points.charge", {"amount": 5}, None, clock.now())
    with clean_db.connection_context(), clean_db.atomic():
        assert records.finish_job(job.id, clock.now(), result={"balance": 0}, commit=True)
    # A second delivery applies its effect, then finds the job terminal
    with clean_db.connection_context(), clean_db.atomic() as transaction:
        points.charge(uid, 5, f"job:{job.id}", clock.now())
        assert records.finish_job(job.id, clock.now(), result={"balance": 5},
                                  outbox=[("points.charged", {"user_id": uid})],
                                  commit=True) is None
        transaction.rollback()
    assert balance(uid) == 0
    assert Job.get_by_id(job.id).result == {"balance": 0}


def test_a_finish_inside_an_enclosing_transaction_leaves_the_commit_to_it(uid, clock,
                                                                          clean_db):
    job, _ = records.record_job(uid, "points.charge", {"amount": 5}, None, clock.now())
    with (clean_db.connection_context(), pytest.raises(ZeroDivisionError), clean_db.atomic(),
          clean_db.atomic()):
        points.charge(uid, 5, f"job:{job.id}", clock.now())
        assert records.finish_job(job.id, clock.now(), result={}, commit=True)
        raise ZeroDivisionError  # the enclosing transaction rolls back: all of it
    assert balance(uid) == 0 and Job.get_by_id(job.id).status == "queued"


def test_only_keyed_jobs_are_in_the_idempotency_index(uid, clock, clean_db):
    # (most commands have no key: their rows cost that index nothing, on insert or finish)
    (definition,) = clean_db.execute_sql(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'jobs_user_id_idempotency_key_set'"
    ).fetchone()
    assert "UNIQUE" in definition and "WHERE (idempotency_key IS NOT NULL)" in definition
    keyless = records.record_jobs([(uuid.uuid4(), uid, "points.charge", {"amount": n}, None)
                                   for n in range(1, 4)], clock.now())
    records.record_job(uid, "points.charge", {"amount": 5}, "k1", clock.now())
    with pytest.raises(peewee.IntegrityError), clean_db.atomic():  # the key stays unique
        Job.update(idempotency_key="k1").where(Job.id == keyless[0].id).execute()
    assert Job.select().where(Job.idempotency_key.is_null()).count() == 3


def test_a_loaded_job_is_what_the_constructor_makes_of_the_same_values(uid, clock):
    values = {"id": uuid.uuid4(), "user": uid, "type": "points.charge",
              "status": "succeeded", "payload": {"amount": 5}, "result": {"balance": 5},
              "created_at": clock.now(), "finished_at": clock.now(), "attempts": 2, "seq": 7}
    loaded, built = Job.loaded(**values), Job(**values)
    assert loaded.__data__ == built.__data__  # (the defaults too: sent, ...)
    assert (loaded.user_id, loaded.seq, loaded.sent, loaded.error) == (uid, 7, False, None)
    assert records.job_view(loaded) == records.job_view(built)
    assert not loaded.is_dirty()
    loaded.attempts = 3  # and it is a model like any other: it saves what changed
    assert loaded.dirty_fields == [Job.attempts]


def test_job_ids_are_time_ordered_uuids_of_version_7(uid, clock):
    """A new job's key goes to the right end of the primary key's index: ids of later
    milliseconds sort after earlier ones, and the rest of the id stays random."""
    before = time.time_ns() // 1_000_000
    job, _ = records.record_job(uid, "points.charge", {"amount": 5}, None, clock.now())
    ids = [records.new_job_id() for _ in range(10_000)]
    after = time.time_ns() // 1_000_000
    assert (job.id.version, job.id.variant) == (7, uuid.RFC_4122)
    assert all((i.version, i.variant) == (7, uuid.RFC_4122) for i in ids)
    assert before <= job.id.int >> 80 <= ids[0].int >> 80 <= ids[-1].int >> 80 <= after
    assert len(set(ids)) == len(ids)
    later = records.new_job_id()
    while later.int >> 80 == ids[-1].int >> 80:  # (the next millisecond)
        later = records.new_job_id()
    assert later > max(ids)
    assert len({i.int & (1 << 74) - 1 for i in ids}) == len(ids)  # (the random bits vary)
