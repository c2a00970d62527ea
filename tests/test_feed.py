"""The social feed on the real database with a fixed clock: likes, comments, alarms,
deletion, paging and the recount, and the races between them (threads straight on the
database; the same races over HTTP with real processes are in test_e2e_feed.py)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from db.models import Alarm, AlarmInbox, Comment, Job, Post, PostLike
from jobs import feed, records, users
from jobs.clock import utcnow
from jobs.errors import DomainError
from jobs.pagination import encode_cursor
from jobs.platform import Context
from tests.commands import ok, refused, run
from tests.support import run_together
from workers import lifecycle


@pytest.fixture
def people(rt, clock) -> list[int]:
    """Three users: the author first."""
    return [users.create_user(name, "x", clock.now()).id for name in ("ann", "bob", "cid")]


def post(author: int, clock, title: str = "Hello") -> int:
    return feed.create_post(author, title, "first words", clock.now())["id"]


def counts(post_id: int) -> tuple[int, int, int, int]:
    """``(like_count, like rows, comment_count, comment rows)``."""
    p = Post.get_by_id(post_id)
    return (p.like_count, PostLike.select().where(PostLike.post == post_id).count(),
            p.comment_count, Comment.select().where(Comment.post == post_id).count())


def alarms_of(user_id: int) -> list[tuple[int, str, int]]:
    """``(number, type, from)`` of the user's alarms, in order."""
    return [(a.number, a.type, a.from_user_id)
            for a in Alarm.select().where(Alarm.user == user_id).order_by(Alarm.number)]


@pytest.fixture
def published(rt) -> list:
    """Every event the workers publish during the test."""
    got: list = []
    rt.publisher.publish = lambda events, *args, **kw: got.extend(events)
    return got


# -- likes --------------------------------------------------------------------------------


def test_a_like_counts_once_and_tells_the_author(rt, clock, people, published):
    ann, bob, _ = people
    p = post(ann, clock)
    assert ok(run(bob, "sns.like", post_id=p)) == {"post_id": p, "like_count": 1, "liked": True}
    assert refused(run(bob, "sns.like", post_id=p)) == "ALREADY_LIKED"
    assert counts(p)[:2] == (1, 1)
    assert alarms_of(ann) == [(1, "NEW_LIKE", bob)]
    [alarm] = [e for e in published if e.topic == feed.LIVE_ALARM]
    assert (alarm.key, alarm.id) == (str(ann), 1)
    assert alarm.data == {"id": 1, "type": "NEW_LIKE", "from_user": {"id": bob, "username": "bob"},
                          "post_id": p, "comment_id": None, "created_at": alarm.data["created_at"],
                          "read": False}
    assert [e.data for e in feed.alarms_since(ann, 0)] == [alarm.data]


def test_liking_ones_own_post_counts_but_tells_nobody(rt, clock, people, published):
    ann = people[0]
    p = post(ann, clock)
    assert ok(run(ann, "sns.like", post_id=p))["like_count"] == 1
    assert alarms_of(ann) == [] and not [e for e in published if e.topic == feed.LIVE_ALARM]


def test_an_unlike_takes_the_like_and_its_alarm_back(rt, clock, people):
    ann, bob, cid = people
    p = post(ann, clock)
    assert refused(run(bob, "sns.unlike", post_id=p)) == "NOT_LIKED"
    ok(run(bob, "sns.like", post_id=p))
    ok(run(cid, "sns.like", post_id=p))
    assert ok(run(bob, "sns.unlike", post_id=p)) == {"post_id": p, "like_count": 1,
                                                     "liked": False}
    assert refused(run(bob, "sns.unlike", post_id=p)) == "NOT_LIKED"
    assert counts(p)[:2] == (1, 1)
    assert alarms_of(ann) == [(2, "NEW_LIKE", cid)]  # numbers are never given twice
    ok(run(bob, "sns.like", post_id=p))
    assert alarms_of(ann) == [(2, "NEW_LIKE", cid), (3, "NEW_LIKE", bob)]


def test_commands_on_a_missing_post_fail_post_not_found(rt, clock, people):
    bob = people[1]
    for job_type, extra in (("sns.like", {}), ("sns.unlike", {}),
                            ("sns.comment", {"comment": "hi"})):
        assert refused(run(bob, job_type, post_id=999, **extra)) == "POST_NOT_FOUND"


# -- comments -----------------------------------------------------------------------------


def test_comments_count_exactly_and_page_oldest_first(rt, clock, people):
    ann, bob, cid = people
    p = post(ann, clock)
    first = ok(run(bob, "sns.comment", post_id=p, comment="nice"))
    assert first == {"comment_id": first["comment_id"], "post_id": p, "comment_count": 1}
    ok(run(ann, "sns.comment", post_id=p, comment="thanks"))  # one's own: no alarm
    ok(run(cid, "sns.comment", post_id=p, comment="agreed"))
    assert counts(p)[2:] == (3, 3)
    assert [(n, t) for n, t, _ in alarms_of(ann)] == [(1, "NEW_COMMENT"), (2, "NEW_COMMENT")]
    page = feed.list_comments(p, 2, None)
    assert [c["comment"] for c in page["items"]] == ["nice", "thanks"]
    rest = feed.list_comments(p, 2, page["next_cursor"])
    assert [c["comment"] for c in rest["items"]] == ["agreed"] and rest["next_cursor"] is None
    assert rest["items"][0]["author"] == {"id": cid, "username": "cid"}


def test_a_comment_is_deleted_by_its_author_or_the_posts_author_only(rt, clock, people):
    ann, bob, cid = people
    p = post(ann, clock)
    by_bob = ok(run(bob, "sns.comment", post_id=p, comment="one"))["comment_id"]
    by_cid = ok(run(cid, "sns.comment", post_id=p, comment="two"))["comment_id"]
    with pytest.raises(DomainError) as e:
        feed.delete_comment(p, by_bob, cid)
    assert e.value.code == "INVALID_PERMISSION"
    with pytest.raises(DomainError) as e:
        feed.delete_comment(p + 1, by_bob, bob)
    assert e.value.code == "POST_NOT_FOUND"
    other = post(bob, clock)
    with pytest.raises(DomainError) as e:
        feed.delete_comment(other, by_bob, bob)  # a comment of another post
    assert e.value.code == "COMMENT_NOT_FOUND"
    feed.delete_comment(p, by_bob, bob)  # its author
    feed.delete_comment(p, by_cid, ann)  # the post's author
    with pytest.raises(DomainError) as e:
        feed.delete_comment(p, by_cid, ann)
    assert e.value.code == "COMMENT_NOT_FOUND"
    assert counts(p)[2:] == (0, 0)
    assert alarms_of(ann) == []  # the alarms went with their comments


# -- posts --------------------------------------------------------------------------------


def test_only_the_author_edits_or_deletes_and_a_deleted_post_takes_everything(rt, clock, people):
    ann, bob, cid = people
    p = post(ann, clock)
    keep = post(ann, clock, "Keep")
    ok(run(bob, "sns.like", post_id=p))
    ok(run(cid, "sns.comment", post_id=p, comment="hey"))
    ok(run(bob, "sns.like", post_id=keep))
    for attempt in (lambda: feed.edit_post(p, bob, "Mine", "now", clock.now()),
                    lambda: feed.delete_post(p, bob)):
        with pytest.raises(DomainError) as e:
            attempt()
        assert e.value.code == "INVALID_PERMISSION"
    clock.advance(minutes=5)
    edited = feed.edit_post(p, ann, "Hello again", "second words", clock.now())
    assert (edited["title"], edited["body"], edited["like_count"]) == ("Hello again",
                                                                       "second words", 1)
    assert edited["updated_at"] > edited["created_at"]
    feed.delete_post(p, ann)
    for attempt in (lambda: feed.get_post(p, None), lambda: feed.delete_post(p, ann),
                    lambda: feed.edit_post(p, ann, "x", "y", clock.now())):
        with pytest.raises(DomainError) as e:
            attempt()
        assert e.value.code == "POST_NOT_FOUND"
    assert PostLike.select().where(PostLike.post == p).count() == 0
    assert Comment.select().where(Comment.post == p).count() == 0
    assert alarms_of(ann) == [(3, "NEW_LIKE", bob)]  # only the kept post's alarm is left


def test_liked_by_me_is_the_viewers_own(rt, clock, people):
    ann, bob, _ = people
    p = post(ann, clock)
    ok(run(bob, "sns.like", post_id=p))
    assert feed.get_post(p, bob)["liked_by_me"] is True
    assert feed.get_post(p, ann)["liked_by_me"] is False
    assert feed.get_post(p, None)["liked_by_me"] is False
    assert [x["liked_by_me"] for x in feed.list_posts(bob, 10, None)["items"]] == [True]


def test_the_feed_pages_newest_first_by_time_then_id(rt, clock, people):
    ann, bob, _ = people
    made = []
    for n in range(9):
        made.append(post(ann if n % 2 else bob, clock, f"p{n}"))
        if n % 3 == 0:
            clock.advance(seconds=1)  # several posts share a created_at
    seen, cursor = [], None
    while True:
        page = feed.list_posts(None, 4, cursor)
        seen += [x["id"] for x in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(made, reverse=True)
    mine = feed.list_posts(ann, 100, None, author_id=ann)["items"]
    assert [x["id"] for x in mine] == [m for m in sorted(made, reverse=True) if m % 2 == 0]


def test_paging_while_posts_arrive_never_repeats_or_skips(rt, people):
    ann = people[0]
    start = utcnow()
    before = {feed.create_post(ann, f"old {n}", "x", start + timedelta(microseconds=n))["id"]
              for n in range(100)}
    seen: list[int] = []

    def write() -> None:
        with rt.database.connection_context():
            for n in range(50):
                feed.create_post(ann, f"new {n}", "x", utcnow())

    writing = threading.Thread(target=write)
    cursor = None
    writing.start()
    with rt.database.connection_context():
        while True:
            page = feed.list_posts(None, 7, cursor)
            seen += [x["id"] for x in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    writing.join()
    assert len(seen) == len(set(seen))  # none repeated
    assert before <= set(seen)  # none skipped of those there when paging began


def test_a_cursor_of_any_other_shape_is_refused(rt):
    for bad in ("", "%%%", "bm90IGpzb24", encode_cursor(1), encode_cursor("x", 1),
                encode_cursor("2026-01-01T00:00:00+00:00", 1), encode_cursor("9999-99-99", 1),
                encode_cursor("2026-01-01T00:00:00", -1), encode_cursor("2026-01-01T00:00:00",
                                                                        2**64),
                encode_cursor(*([[]] * 2)), "W" * 600,
                encode_cursor([[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
                              1)):
        with pytest.raises(DomainError) as e:
            feed.list_posts(None, 5, bad or "=")
        assert e.value.code == "INVALID_REQUEST", bad


# -- alarms -------------------------------------------------------------------------------


def test_alarms_are_read_up_to_a_number_never_past_the_last(rt, clock, people):
    ann, bob, cid = people
    p = post(ann, clock)
    ok(run(bob, "sns.like", post_id=p))
    ok(run(cid, "sns.like", post_id=p))
    ok(run(cid, "sns.comment", post_id=p, comment="and a word"))
    listed = feed.list_alarms(ann, 2, None)
    assert [a["id"] for a in listed["items"]] == [3, 2] and listed["unread_count"] == 3
    assert [a["id"] for a in feed.list_alarms(ann, 2, listed["next_cursor"])["items"]] == [1]
    assert feed.mark_read(ann, 2) == {"unread_count": 1}
    assert feed.mark_read(ann, 1) == {"unread_count": 1}  # never backwards
    assert [a["read"] for a in feed.list_alarms(ann, 10, None)["items"]] == [False, True, True]
    assert feed.mark_read(ann, 10**12) == {"unread_count": 0}
    ok(run(bob, "sns.comment", post_id=p, comment="more"))  # a later alarm is unread
    assert feed.list_alarms(ann, 10, None)["unread_count"] == 1
    assert AlarmInbox.get_by_id(ann).read_up_to == 3
    assert feed.mark_read(bob, 5) == {"unread_count": 0}  # no alarms yet: nothing to mark


def test_a_refused_command_writes_and_publishes_no_alarm(rt, clock, people, published):
    ann, bob, _ = people
    p = post(ann, clock)
    ok(run(bob, "sns.like", post_id=p))
    published.clear()
    refused(run(bob, "sns.like", post_id=p))
    assert [e.topic for e in published] == ["job"]
    assert alarms_of(ann) == [(1, "NEW_LIKE", bob)]
    assert AlarmInbox.get_by_id(ann).last_number == 1  # the rollback took the number back


# -- races --------------------------------------------------------------------------------


def record(uid: int, job_type: str, **payload) -> str:
    job, _ = records.record_job(uid, job_type, payload, None, utcnow())
    return str(job.id)


def run_all(job_ids: list[str]) -> list[Job]:
    run_together(*[lambda j=j: lifecycle.execute_job(j) for j in job_ids])
    return [Job.get_by_id(j) for j in job_ids]


def test_likes_and_unlikes_at_once_keep_the_count_equal_to_the_rows(rt, clock, people):
    ann = people[0]
    likers = [users.create_user(f"l{n}", "x", clock.now()).id for n in range(60)]
    p = post(ann, clock)
    assert all(j.status == "succeeded" for j in run_all(
        [record(u, "sns.like", post_id=p) for u in likers[:40]]))
    # 20 of them unlike while 20 others like, and one of them likes 5 times at once
    jobs = run_all([record(u, "sns.unlike", post_id=p) for u in likers[:20]]
                   + [record(u, "sns.like", post_id=p) for u in likers[40:]]
                   + [record(likers[30], "sns.like", post_id=p) for _ in range(5)])
    assert [j.status for j in jobs[:40]] == ["succeeded"] * 40
    assert [j.error["code"] for j in jobs[40:]] == ["ALREADY_LIKED"] * 5
    assert counts(p)[:2] == (40, 40)
    assert len(alarms_of(ann)) == 40  # one per like that stands
    numbers = [n for n, _, _ in alarms_of(ann)]
    assert numbers == sorted(set(numbers)) and max(numbers) == 60


def test_one_user_liking_20_times_at_once_likes_once_with_one_alarm(rt, clock, people):
    ann, bob, _ = people
    p = post(ann, clock)
    jobs = run_all([record(bob, "sns.like", post_id=p) for _ in range(20)])
    assert sorted(j.status for j in jobs) == ["failed"] * 19 + ["succeeded"]
    assert {j.error["code"] for j in jobs if j.error} == {"ALREADY_LIKED"}
    assert counts(p)[:2] == (1, 1) and alarms_of(ann) == [(1, "NEW_LIKE", bob)]


def test_a_like_and_an_unlike_of_one_user_at_once_do_not_deadlock(rt, clock, people):
    ann, bob, _ = people
    for _ in range(15):
        p = post(ann, clock)
        ok(run(bob, "sns.like", post_id=p))
        jobs = run_all([record(bob, "sns.unlike", post_id=p), record(bob, "sns.like", post_id=p),
                        record(bob, "sns.unlike", post_id=p)])
        assert all(j.status == "succeeded" or j.error["code"] in ("NOT_LIKED", "ALREADY_LIKED")
                   for j in jobs), [j.error for j in jobs]
        like_count, rows, _, _ = counts(p)
        assert like_count == rows <= 1
        assert Alarm.select().where(Alarm.post == p).count() == rows  # one per standing like


def test_deleting_a_post_while_it_is_liked_and_commented_leaves_nothing_behind(rt, clock,
                                                                               people):
    ann = people[0]
    others = [users.create_user(f"d{n}", "x", clock.now()).id for n in range(20)]
    for _ in range(5):
        p = post(ann, clock)
        jobs = [record(u, "sns.like", post_id=p) for u in others[:10]]
        jobs += [record(u, "sns.comment", post_id=p, comment="hi") for u in others[10:]]
        done: list = []

        def delete(p: int = p) -> None:
            with rt.database.connection_context():
                feed.delete_post(p, ann)

        run_together(lambda jobs=jobs, done=done: done.extend(run_all(jobs)), delete)
        assert {j.error["code"] for j in done if j.error} <= {"POST_NOT_FOUND"}
        assert not Post.select().where(Post.id == p).exists()
        assert not Alarm.select().where(Alarm.post == p).exists()
        assert not PostLike.select().where(PostLike.post == p).exists()


# -- the recount --------------------------------------------------------------------------


def test_the_recount_finds_no_drift_and_repairs_drift_made_by_hand(rt, clock, people, caplog):
    from tests.conftest import run_task

    ann, bob, cid = people
    p, q = post(ann, clock), post(bob, clock)
    ok(run(bob, "sns.like", post_id=p))
    ok(run(cid, "sns.comment", post_id=p, comment="x"))
    assert feed.recount(Context(now=clock.now(), services=rt)) == {}
    Post.update(like_count=7).where(Post.id == p).execute()  # drift, as the seed code made
    Post.update(comment_count=3).where(Post.id == q).execute()
    with caplog.at_level("WARNING", logger="jobs.feed"):
        assert run_task(rt, "feed.recount") == {"repaired": 2}
    assert counts(p) == (1, 1, 1, 1) and counts(q) == (0, 0, 0, 0)
    assert [r.post_id for r in caplog.records if r.msg == "feed counts repaired"] == [p, q]


def test_the_recount_racing_likes_repairs_nothing_that_was_right(rt, clock, people):
    ann = people[0]
    likers = [users.create_user(f"r{n}", "x", clock.now()).id for n in range(40)]
    p = post(ann, clock)
    results: list = []
    jobs = [record(u, "sns.like", post_id=p) for u in likers]

    def recount_often() -> None:
        with rt.database.connection_context():
            for _ in range(10):
                with rt.database.atomic():
                    results.append(feed.recount(Context(now=clock.now(), services=rt)))

    run_together(lambda: run_all(jobs), recount_often)
    assert results == [{}] * 10
    assert counts(p)[:2] == (40, 40)
