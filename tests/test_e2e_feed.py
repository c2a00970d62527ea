"""The feed across real processes: two web processes and a worker pool of two processes.

Likes, unlikes and comments from many users at once over HTTP keep every count equal
to its rows; alarms caused by requests to one web process reach a subscriber of the
other, once and in order, and a reconnect with ``Last-Event-ID`` fills the gap; the
feed pages without repeats or skips while posts are being written.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest

from db.models import Alarm, Comment, Post, PostLike
from jobs import feed
from jobs.clock import utcnow
from tests.shop_fixtures import bulk_users
from tests.support import SseReader, Stack, finish, two_webs

pytestmark = pytest.mark.e2e
WAIT = {"Prefer": "wait=20"}


@pytest.fixture(scope="module")
def webs(process_env) -> Iterator[tuple[Stack, Stack]]:
    """Two web processes and a worker with two processes."""
    yield from two_webs(process_env)


def user_of(token: str) -> int:
    return int(jwt.decode(token, options={"verify_signature": False})["sub"])


def author_and_post(database, settings) -> tuple[str, int, int]:
    """A new author's token and id, and a post of theirs."""
    [token] = bulk_users(database, settings, f"fa{uuid.uuid4().hex[:8]}_", 1)
    uid = user_of(token)
    with database.connection_context():
        return token, uid, feed.create_post(uid, "Hot take", "words", utcnow())["id"]


def send(stack: Stack, method: str, path: str, token: str, body: dict | None = None) -> dict:
    reply = stack.api.call(method, path, body, token=token, headers=WAIT)
    return finish(stack.api, reply, token)


def all_at_once(calls: list, threads: int = 64) -> list[dict]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda call: call(), calls))


def state(database, post_id: int, author: int) -> dict[str, int]:
    with database.connection_context():
        p = Post.get_by_id(post_id)
        return {"like_count": p.like_count,
                "likes": PostLike.select().where(PostLike.post == post_id).count(),
                "comment_count": p.comment_count,
                "comments": Comment.select().where(Comment.post == post_id).count(),
                "alarms": Alarm.select().where((Alarm.post == post_id)
                                               & (Alarm.user == author)).count()}


def test_1000_users_like_at_once_then_500_unlike_while_500_others_like(webs, database,
                                                                       settings):
    _, author, post_id = author_and_post(database, settings)
    tokens = bulk_users(database, settings, f"fl{uuid.uuid4().hex[:8]}_", 1500)
    path = f"/posts/{post_id}/likes"
    jobs = all_at_once([lambda t=t, i=i: send(webs[i % 2], "POST", path, t)
                        for i, t in enumerate(tokens[:1000])])
    assert [j["status"] for j in jobs] == ["succeeded"] * 1000
    assert sorted(j["result"]["like_count"] for j in jobs) == list(range(1, 1001))
    assert state(database, post_id, author) | {"comment_count": 0, "comments": 0} == {
        "like_count": 1000, "likes": 1000, "comment_count": 0, "comments": 0, "alarms": 1000}
    unlikes = [lambda t=t, i=i: send(webs[i % 2], "DELETE", path, t)
               for i, t in enumerate(tokens[:500])]
    likes = [lambda t=t, i=i: send(webs[i % 2], "POST", path, t)
             for i, t in enumerate(tokens[1000:])]
    mixed = [call for pair in zip(unlikes, likes, strict=True) for call in pair]
    jobs = all_at_once(mixed)
    assert [j["status"] for j in jobs] == ["succeeded"] * 1000, [j["error"] for j in jobs
                                                                  if j["error"]][:3]
    assert state(database, post_id, author)["like_count"] == 1000
    assert state(database, post_id, author) == {"like_count": 1000, "likes": 1000,
                                                "comment_count": 0, "comments": 0,
                                                "alarms": 1000}


def test_one_user_liking_20_times_at_once_likes_once(webs, database, settings):
    _, author, post_id = author_and_post(database, settings)
    [token] = bulk_users(database, settings, f"f20{uuid.uuid4().hex[:8]}_", 1)
    jobs = all_at_once([lambda i=i: send(webs[i % 2], "POST", f"/posts/{post_id}/likes", token)
                        for i in range(20)], threads=20)
    assert sorted(j["status"] for j in jobs) == ["failed"] * 19 + ["succeeded"]
    assert {j["error"]["code"] for j in jobs if j["error"]} == {"ALREADY_LIKED"}
    assert state(database, post_id, author) == {"like_count": 1, "likes": 1, "comment_count": 0,
                                                "comments": 0, "alarms": 1}


def test_200_users_comment_at_once_and_the_author_hears_of_each_but_their_own(webs, database,
                                                                             settings):
    author_token, author, post_id = author_and_post(database, settings)
    tokens = bulk_users(database, settings, f"fc{uuid.uuid4().hex[:8]}_", 200)
    path = f"/posts/{post_id}/comments"
    calls = [lambda t=t, i=i: send(webs[i % 2], "POST", path, t, {"comment": f"#{i}"})
             for i, t in enumerate([*tokens, author_token, author_token])]
    jobs = all_at_once(calls)
    assert [j["status"] for j in jobs] == ["succeeded"] * 202
    assert sorted(j["result"]["comment_count"] for j in jobs) == list(range(1, 203))
    assert state(database, post_id, author) == {"like_count": 0, "likes": 0,
                                                "comment_count": 202, "comments": 202,
                                                "alarms": 200}
    with database.connection_context():
        assert {a.from_user_id for a in Alarm.select().where(Alarm.user == author)} == {
            user_of(t) for t in tokens}


def test_alarms_from_the_other_web_process_arrive_once_in_order_and_replay_after_a_gap(
        webs, database, settings):
    first, second = webs
    author_token, author, post_id = author_and_post(database, settings)
    tokens = bulk_users(database, settings, f"fs{uuid.uuid4().hex[:8]}_", 60)
    url = "/api/v1/alarms/subscribe"
    live = SseReader(f"{first.api.base}{url}", author_token)
    assert live.status == 200 and live.content_type.startswith("text/event-stream")
    # 40 alarms caused through the second web process, 20 of them at once
    for t in tokens[:20]:
        assert send(second, "POST", f"/posts/{post_id}/likes", t)["status"] == "succeeded"
    all_at_once([lambda t=t: send(second, "POST", f"/posts/{post_id}/comments", t,
                                  {"comment": "!"}) for t in tokens[20:40]], threads=20)
    got = live.take(40)
    assert [e.id for e in got] == [str(n) for n in range(1, 41)]
    assert {e.event for e in got} == {"alarm"}
    assert [e.data["id"] for e in got] == list(range(1, 41))
    with database.connection_context():
        stored = {e.id: e.data for e in feed.alarms_since(author, 0)}
    assert all(e.data | {"read": False} == stored[e.data["id"]] for e in got)
    live.close()
    # away: 20 more, then back on the *other* web process with Last-Event-ID
    for t in tokens[40:]:
        assert send(first, "POST", f"/posts/{post_id}/likes", t)["status"] == "succeeded"
    back = SseReader(f"{second.api.base}{url}", author_token, last_event_id="40")
    missed = back.take(20)
    assert [e.id for e in missed] == [str(n) for n in range(41, 61)]
    # and live again after the replay, with nothing twice
    assert send(first, "DELETE", f"/posts/{post_id}/likes", tokens[0])["status"] == "succeeded"
    assert send(first, "POST", f"/posts/{post_id}/likes", tokens[0])["status"] == "succeeded"
    assert back.next().id == "61"
    back.close()


def test_the_feed_pages_without_repeats_or_skips_while_posts_are_written(webs, database,
                                                                         settings):
    first, second = webs
    [token] = bulk_users(database, settings, f"fp{uuid.uuid4().hex[:8]}_", 1)
    with database.connection_context():
        uid = user_of(token)
        before = {feed.create_post(uid, f"old {n}", "x", utcnow())["id"] for n in range(100)}
    made: list[int] = []

    def write() -> None:
        for n in range(50):
            reply = second.api.post("/posts", {"title": f"new {n}", "body": "x"}, token=token)
            assert reply.status == 201, reply
            made.append(reply.body["id"])

    writer = threading.Thread(target=write)
    writer.start()
    seen: list[int] = []
    cursor = None
    while True:
        query = "/users/me/posts?limit=7" + (f"&cursor={cursor}" if cursor else "")
        reply = first.api.get(query, token=token)
        assert reply.status == 200, reply
        seen += [p["id"] for p in reply.body["items"]]
        cursor = reply.body["next_cursor"]
        if cursor is None:
            break
    writer.join()
    assert len(made) == 50
    assert len(seen) == len(set(seen))
    assert before <= set(seen)
