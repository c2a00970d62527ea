"""Contract tests for the social feed: every endpoint, its successes, reason codes and bad input.

Binding contract: /work/shared/API.md, sections "Conventions", "Commands and jobs",
"Social feed" and "Live events". The app and a worker run in this process; every
answer is checked never to be a 5xx.
"""

from __future__ import annotations

import base64
import time
import urllib.request
import uuid
from contextlib import closing
from typing import Any, NamedTuple

import pytest

from tests.support import Api, Reply, SseReader, assert_failed, finish, parse_time, succeeded

WAIT = {"Prefer": "wait=5"}
POST_FIELDS = {"id", "title", "body", "author", "like_count", "comment_count", "liked_by_me",
               "created_at", "updated_at"}
COMMENT_FIELDS = {"id", "comment", "author", "created_at"}
ALARM_FIELDS = {"id", "type", "from_user", "post_id", "comment_id", "created_at", "read"}
JOB_FIELDS = {"id", "type", "status", "result", "error", "created_at", "started_at",
              "finished_at", "attempts"}
BAD_IDS = ["999999999", "abc", "0", "-1", "1.5", "1e3", "99999999999999999999",
           "9223372036854775807", "9223372036854775808", "%D9%A1", "1%00", "%201"]


class NoFiveHundreds(Api):
    """The test client, asserting on every answer that the server did not fail."""

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Reply:
        reply = super().call(method, path, body, **kw)
        assert reply.status < 500, (method, path, reply)
        return reply


class User(NamedTuple):
    token: str
    id: int
    name: str


def person(api: Api) -> User:
    name = f"f_{uuid.uuid4().hex[:10]}"
    reply = api.post("/users/signup", {"username": name, "password": "password123"})
    assert reply.status == 201, reply
    return User(api.login(name)["access_token"], reply.body["id"], name)


def people(api: Api, n: int) -> list[User]:
    return [person(api) for _ in range(n)]


@pytest.fixture(scope="module")
def api(stack) -> Api:
    return NoFiveHundreds(stack.api.base)


@pytest.fixture(scope="module")
def ann(api) -> User:
    """An author whose post the read-only tests share."""
    return person(api)


@pytest.fixture(scope="module")
def anns_post(api, ann) -> dict:
    return publish(api, ann)


def publish(api: Api, who: User, title: str = "Hello", body: str = "first words") -> dict:
    reply = api.post("/posts", {"title": title, "body": body}, token=who.token)
    assert reply.status == 201, reply
    return reply.body


def command(api: Api, method: str, path: str, who: User, body: Any = None) -> dict:
    """The terminal job of a feed command (asked with Prefer: wait)."""
    reply = api.call(method, path, body, token=who.token, headers=WAIT)
    job = finish(api, reply, who.token)
    assert set(job) == JOB_FIELDS, job
    return job


def like(api: Api, who: User, post_id: int) -> dict:
    job = command(api, "POST", f"/posts/{post_id}/likes", who)
    assert job["type"] == "sns.like"
    return job


def unlike(api: Api, who: User, post_id: int) -> dict:
    job = command(api, "DELETE", f"/posts/{post_id}/likes", who)
    assert job["type"] == "sns.unlike"
    return job


def comment(api: Api, who: User, post_id: int, text: str = "nice") -> dict:
    job = command(api, "POST", f"/posts/{post_id}/comments", who, {"comment": text})
    assert job["type"] == "sns.comment"
    return job


def alarms(api: Api, who: User, query: str = "") -> dict:
    reply = api.get(f"/alarms{query}", token=who.token)
    assert reply.status == 200, reply
    assert set(reply.body) == {"items", "next_cursor", "unread_count"}
    for item in reply.body["items"]:
        assert set(item) == ALARM_FIELDS, item
    return reply.body


def walk(api: Api, path: str, limit: int, token: str | None = None) -> list[int]:
    """Every id of a list, page by page."""
    seen, cursor = [], None
    while True:
        sep = "&" if "?" in path else "?"
        reply = api.get(f"{path}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else ""),
                        token=token)
        assert reply.status == 200, reply
        assert len(reply.body["items"]) <= limit
        seen += [item["id"] for item in reply.body["items"]]
        cursor = reply.body["next_cursor"]
        if cursor is None:
            return seen


def cursor_of(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def stream_url(api: Api, query: str = "") -> str:
    return f"{api.base}/api/v1/alarms/subscribe{query}"


class QueryTokenReader(SseReader):
    """An EventSource that cannot send headers: the token rides in ``?access_token=``."""

    def __init__(self, url: str, timeout: float = 20) -> None:
        request = urllib.request.Request(url, headers={"Accept": "text/event-stream"})
        self.response = urllib.request.urlopen(request, timeout=timeout)
        self.status = self.response.status
        self.content_type = self.response.headers.get("Content-Type", "")


# -- posts ---------------------------------------------------------------------------------


def test_a_post_is_published_and_anyone_reads_it(api):
    # Given an author
    author = person(api)
    # When they publish a post
    reply = api.post("/posts", {"title": "First light", "body": "Line one\nline two"},
                     token=author.token)
    # Then it is 201 with the whole post, counted from zero
    assert reply.status == 201, reply
    post = reply.body
    assert set(post) == POST_FIELDS
    assert (post["title"], post["body"]) == ("First light", "Line one\nline two")
    assert post["author"] == {"id": author.id, "username": author.name}
    assert (post["like_count"], post["comment_count"], post["liked_by_me"]) == (0, 0, False)
    assert parse_time(post["created_at"]) == parse_time(post["updated_at"])
    # And anyone reads it without a token, as does its author
    assert api.get(f"/posts/{post['id']}").body == post
    assert api.get(f"/posts/{post['id']}", token=author.token).body == post
    feed = api.get("/posts")
    assert feed.status == 200 and set(feed.body) == {"items", "next_cursor"}
    assert feed.body["items"][0] == post  # newest first
    mine = api.get("/users/me/posts", token=author.token)
    assert mine.status == 200 and mine.body == {"items": [post], "next_cursor": None}


@pytest.mark.parametrize("title, body", [
    ("t" * 200, "b" * 10_000), ("\U0001F600" * 200, "\uac00" * 10_000), ("a", "b"),
    ("  padded  ", "tab\tand\nnewline"),
], ids=["longest", "longest-non-ascii", "shortest", "inner-spaces"])
def test_texts_at_the_bounds_are_accepted_as_sent(api, ann, title, body):
    reply = api.post("/posts", {"title": title, "body": body}, token=ann.token)
    assert reply.status == 201, reply
    assert (reply.body["title"], reply.body["body"]) == (title, body)
    assert api.get(f"/posts/{reply.body['id']}").body["title"] == title


POST_BODY_ERRORS = [
    ({"body": "b"}, "title"), ({"title": "t"}, "body"), ({"title": ""}, "title"),
    ({"body": ""}, "body"), ({"title": "t" * 201}, "title"), ({"body": "b" * 10_001}, "body"),
    ({"title": "   "}, "title"), ({"body": " \n\t "}, "body"), ({"title": "a\u0000b"}, "title"),
    ({"body": "\u0000"}, "body"), ({"title": 5}, "title"), ({"title": None}, "title"),
    ({"title": True}, "title"), ({"body": ["x"]}, "body"), ({"body": {"x": 1}}, "body"),
    ({"author_id": 1}, "author_id"), ({"like_count": 5}, "like_count"),
]


@pytest.mark.parametrize("change, field", POST_BODY_ERRORS)
def test_a_bad_post_is_400_naming_the_field(api, ann, change, field):
    body = {"title": "t", "body": "b"} | change
    if field in ("title", "body") and field not in change:
        body.pop(field)
    reply = api.post("/posts", body, token=ann.token)
    assert (reply.status, reply.code) == (400, "INVALID_REQUEST"), reply
    assert field in reply.body["error"]["fields"], reply


@pytest.mark.parametrize("change, field", POST_BODY_ERRORS)
def test_a_bad_edit_is_400_naming_the_field_and_changes_nothing(api, ann, anns_post, change,
                                                                field):
    body = {"title": "t", "body": "b"} | change
    if field in ("title", "body") and field not in change:
        body.pop(field)
    reply = api.call("PUT", f"/posts/{anns_post['id']}", body, token=ann.token)
    assert (reply.status, reply.code) == (400, "INVALID_REQUEST"), reply
    assert field in reply.body["error"]["fields"], reply
    assert api.get(f"/posts/{anns_post['id']}").body == anns_post


NON_OBJECTS = [b"[]", b'"text"', b"null", b"42", b'{"title": "t", ', b"{'title': 't'}",
               b"[" * 30_000 + b"]" * 30_000, b'{"title": ' + b"[" * 30_000 + b"]" * 30_000 + b"}",
               b'{"title": "\\ud800", "body": "b"}']
NON_OBJECT_IDS = ["list", "string", "null", "number", "truncated", "single-quotes",
                  "deeply-nested", "deeply-nested-field", "lone-surrogate"]


@pytest.mark.parametrize("raw", NON_OBJECTS, ids=NON_OBJECT_IDS)
def test_a_body_that_is_not_a_json_object_is_400(api, ann, anns_post, raw):
    for method, path in (("POST", "/posts"), ("PUT", f"/posts/{anns_post['id']}"),
                         ("POST", "/alarms/read"), ("POST", f"/posts/{anns_post['id']}/comments"),
                         ("POST", f"/posts/{anns_post['id']}/likes")):
        reply = api.call(method, path, raw=raw, token=ann.token)
        assert (reply.status, reply.code) == (400, "INVALID_REQUEST"), (path, reply)
        assert reply.body["error"]["fields"], (path, reply)


@pytest.mark.parametrize("raw", [b'{"title": "\xff", "body": "b"}', b'{"comment": "\xc3"}'],
                         ids=["post", "comment"])
def test_bytes_that_are_not_utf8_inside_a_string_are_400(api, ann, anns_post, raw):
    path = "/posts" if b"title" in raw else f"/posts/{anns_post['id']}/comments"
    reply = Api(api.base).post(path, raw=raw, token=ann.token)
    assert (reply.status, reply.code) == (400, "INVALID_REQUEST"), reply


def test_checking_the_longest_text_does_not_stall_the_server(api, ann, anns_post):
    # Given the longest body allowed, refused only by its last character (a NUL)
    text = "a" * 9_999 + "\u0000"
    for method, path in (("POST", "/posts"), ("PUT", f"/posts/{anns_post['id']}")):
        started = time.monotonic()
        reply = api.call(method, path, {"title": "t", "body": text}, token=ann.token)
        # Then it is refused at once (validation runs on the web process's event loop)
        assert (reply.status, reply.code) == (400, "INVALID_REQUEST"), reply
        assert "body" in reply.body["error"]["fields"]
        assert time.monotonic() - started < 1.0, "the text pattern backtracks"


def test_a_post_body_over_64_kib_is_413(api, ann):
    reply = api.post("/posts", {"title": "t", "body": "b" * (64 * 1024)}, token=ann.token)
    assert (reply.status, reply.code) == (413, "PAYLOAD_TOO_LARGE"), reply


def test_only_the_author_edits_a_post(api):
    # Given a post and another user
    author, other = people(api, 2)
    post = publish(api, author)
    # When the other user edits it, it is 403 and nothing changes
    reply = api.call("PUT", f"/posts/{post['id']}", {"title": "Mine", "body": "now"},
                     token=other.token)
    assert (reply.status, reply.code) == (403, "INVALID_PERMISSION"), reply
    assert api.get(f"/posts/{post['id']}").body == post
    # When the author edits it
    reply = api.call("PUT", f"/posts/{post['id']}", {"title": "Second", "body": "thoughts"},
                     token=author.token)
    # Then it is 200 with the post as it now is
    assert reply.status == 200, reply
    edited = reply.body
    assert set(edited) == POST_FIELDS
    assert (edited["id"], edited["title"], edited["body"]) == (post["id"], "Second", "thoughts")
    assert (edited["created_at"], edited["author"]) == (post["created_at"], post["author"])
    assert parse_time(edited["updated_at"]) > parse_time(post["updated_at"])
    assert api.get(f"/posts/{post['id']}").body == edited
    # And an edit must replace both fields
    reply = api.call("PUT", f"/posts/{post['id']}", {"title": "only"}, token=author.token)
    assert reply.status == 400 and "body" in reply.body["error"]["fields"]


def test_only_the_author_deletes_a_post_and_everything_of_it_goes(api):
    # Given a post liked and commented on by others, with its author's alarms
    author, fan, stranger = people(api, 3)
    post = publish(api, author)["id"]
    succeeded(like(api, fan, post))
    succeeded(comment(api, fan, post))
    succeeded(comment(api, stranger, post))
    kept = publish(api, author)["id"]
    succeeded(like(api, stranger, kept))
    assert alarms(api, author)["unread_count"] == 4
    # When someone else deletes it, it is 403 and the post stays
    reply = api.call("DELETE", f"/posts/{post}", token=fan.token)
    assert (reply.status, reply.code) == (403, "INVALID_PERMISSION"), reply
    assert api.get(f"/posts/{post}").status == 200
    # When its author deletes it
    reply = api.call("DELETE", f"/posts/{post}", token=author.token)
    # Then it is 204 with no body, and the post, its comments and its alarms are gone
    assert (reply.status, reply.body) == (204, None), reply
    for path in (f"/posts/{post}", f"/posts/{post}/comments"):
        assert (api.get(path).status, api.get(path).code) == (404, "POST_NOT_FOUND"), path
    left = alarms(api, author)
    assert [(a["post_id"], a["type"]) for a in left["items"]] == [(kept, "NEW_LIKE")]
    assert left["unread_count"] == 1
    assert [p["id"] for p in api.get("/users/me/posts", token=author.token).body["items"]] == [
        kept]
    # And every command on the deleted post is refused at the door
    for method, suffix in (("POST", "/likes"), ("DELETE", "/likes"), ("POST", "/comments")):
        reply = api.call(method, f"/posts/{post}{suffix}",
                         {"comment": "x"} if suffix == "/comments" else None, token=fan.token)
        assert (reply.status, reply.code) == (404, "POST_NOT_FOUND"), (method, suffix, reply)
    # And a second delete is 404
    reply = api.call("DELETE", f"/posts/{post}", token=author.token)
    assert (reply.status, reply.code) == (404, "POST_NOT_FOUND")


def test_my_posts_are_only_mine_newest_first_without_repeats(api):
    # Given two authors with posts interleaved
    me, other = people(api, 2)
    made = []
    for i in range(5):
        made.append(publish(api, me, title=f"m{i}")["id"])
        publish(api, other, title=f"o{i}")
    # When I page through my posts two at a time
    seen = walk(api, "/users/me/posts", 2, token=me.token)
    # Then I see exactly mine, newest first, each once
    assert seen == made[::-1]
    assert walk(api, "/users/me/posts", 100, token=me.token) == made[::-1]
    mine = api.get("/users/me/posts?limit=1", token=me.token).body
    assert mine["items"][0]["author"]["id"] == me.id and mine["next_cursor"]


def test_the_feed_pages_newest_first_and_never_repeats_while_posts_arrive(api):
    # Given five new posts on the feed
    author = person(api)
    made = [publish(api, author, title=f"p{i}")["id"] for i in range(5)]
    first = api.get("/posts?limit=2")
    assert first.status == 200 and [p["id"] for p in first.body["items"]] == made[:2:-1]
    # When a post arrives while paging
    late = publish(api, author, title="late")["id"]
    seen, cursor = [p["id"] for p in first.body["items"]], first.body["next_cursor"]
    while cursor is not None:
        reply = api.get(f"/posts?limit=7&cursor={cursor}")
        assert reply.status == 200, reply
        seen += [p["id"] for p in reply.body["items"]]
        cursor = reply.body["next_cursor"]
    # Then no post comes twice, the late one is not among the older pages, and every
    # one of mine came, newest first
    assert len(seen) == len(set(seen))
    assert late not in seen
    assert [i for i in seen if i in made] == made[::-1]
    # And the default page is 20, the largest 100
    assert len(api.get("/posts").body["items"]) <= 20
    assert api.get("/posts?limit=100").status == 200


def test_post_reads_are_public_but_a_token_sent_must_be_valid(api, anns_post):
    pid = anns_post["id"]
    for path in ("/posts", f"/posts/{pid}", f"/posts/{pid}/comments"):
        assert api.get(path).status == 200, path
    for path in ("/posts", f"/posts/{pid}"):
        for headers in ({"Authorization": "Bearer garbage"}, {"Authorization": "Basic abc"},
                        {"Authorization": "Bearer "}):
            reply = api.get(path, headers=headers)
            assert (reply.status, reply.code) == (401, "INVALID_TOKEN"), (path, headers, reply)


def test_every_write_and_private_read_needs_a_valid_token(api, ann, anns_post):
    pid = anns_post["id"]
    fan = person(api)
    cid = succeeded(comment(api, fan, pid))["comment_id"]
    calls = [("POST", "/posts", {"title": "t", "body": "b"}),
             ("PUT", f"/posts/{pid}", {"title": "t", "body": "b"}),
             ("DELETE", f"/posts/{pid}", None), ("GET", "/users/me/posts", None),
             ("POST", f"/posts/{pid}/likes", None), ("DELETE", f"/posts/{pid}/likes", None),
             ("POST", f"/posts/{pid}/comments", {"comment": "hi"}),
             ("DELETE", f"/posts/{pid}/comments/{cid}", None), ("GET", "/alarms", None),
             ("POST", "/alarms/read", {"up_to": 1}), ("GET", "/alarms/subscribe", None)]
    for method, path, body in calls:
        reply = api.call(method, path, body)
        assert (reply.status, reply.code) == (401, "UNAUTHORIZED"), (method, path, reply)
        reply = api.call(method, path, body, token="garbage")
        assert (reply.status, reply.code) == (401, "INVALID_TOKEN"), (method, path, reply)
    # And nothing changed
    assert api.get(f"/posts/{pid}").body == anns_post | {"comment_count": 1}
    assert api.get(f"/posts/{pid}/comments").body["items"][0]["id"] == cid


@pytest.mark.parametrize("bad", BAD_IDS)
def test_unknown_posts_are_404_everywhere_and_record_no_job(api, bad):
    who = person(api)
    calls = [("GET", f"/posts/{bad}", None), ("PUT", f"/posts/{bad}", {"title": "t", "body": "b"}),
             ("DELETE", f"/posts/{bad}", None), ("POST", f"/posts/{bad}/likes", None),
             ("DELETE", f"/posts/{bad}/likes", None),
             ("POST", f"/posts/{bad}/comments", {"comment": "hi"}),
             ("GET", f"/posts/{bad}/comments", None), ("DELETE", f"/posts/{bad}/comments/1", None)]
    for method, path, body in calls:
        reply = api.call(method, path, body, token=who.token)
        assert (reply.status, reply.code) == (404, "POST_NOT_FOUND"), (method, path, reply)
    assert api.get("/jobs", token=who.token).body["items"] == []


# -- likes -----------------------------------------------------------------------------------


def test_a_like_counts_once_and_shows_as_liked_by_the_liker_only(api):
    # Given someone else's post
    author, fan = people(api, 2)
    post = publish(api, author)["id"]
    # When a fan likes it
    job = like(api, fan, post)
    # Then the job succeeds with the new count, once
    assert succeeded(job) == {"post_id": post, "like_count": 1, "liked": True}
    assert_failed(like(api, fan, post), "ALREADY_LIKED")
    # And the post shows it, as liked by the fan only
    assert api.get(f"/posts/{post}", token=fan.token).body["liked_by_me"] is True
    assert api.get(f"/posts/{post}", token=author.token).body["liked_by_me"] is False
    anonymous = api.get(f"/posts/{post}").body
    assert (anonymous["like_count"], anonymous["liked_by_me"]) == (1, False)
    in_feed = {p["id"]: p for p in api.get("/posts?limit=100", token=fan.token).body["items"]}
    assert (in_feed[post]["like_count"], in_feed[post]["liked_by_me"]) == (1, True)
    in_own = api.get("/users/me/posts", token=author.token).body["items"][0]
    assert (in_own["id"], in_own["like_count"], in_own["liked_by_me"]) == (post, 1, False)
    # And the author may like their own post too (counted, without an alarm)
    assert succeeded(like(api, author, post))["like_count"] == 2
    assert api.get(f"/posts/{post}", token=author.token).body["liked_by_me"] is True
    assert [a["from_user"]["id"] for a in alarms(api, author)["items"]] == [fan.id]


def test_an_unlike_takes_back_only_ones_own_like_once(api):
    # Given a post liked by one fan
    author, fan, other = people(api, 3)
    post = publish(api, author)["id"]
    succeeded(like(api, fan, post))
    # When someone who never liked it unlikes it, it fails and the count stays
    assert_failed(unlike(api, other, post), "NOT_LIKED")
    assert api.get(f"/posts/{post}").body["like_count"] == 1
    # When the fan unlikes it
    assert succeeded(unlike(api, fan, post)) == {"post_id": post, "like_count": 0,
                                                 "liked": False}
    # Then a second unlike fails, and the post is as before
    assert_failed(unlike(api, fan, post), "NOT_LIKED")
    shown = api.get(f"/posts/{post}", token=fan.token).body
    assert (shown["like_count"], shown["liked_by_me"]) == (0, False)
    # And the like's alarm went with it; a new like is counted from zero again
    assert alarms(api, author) == {"items": [], "next_cursor": None, "unread_count": 0}
    assert succeeded(like(api, fan, post))["like_count"] == 1


@pytest.mark.parametrize("raw, field", [(b'{"post_id": 1}', "post_id"), (b'{"x": 1}', "x"),
                                        (b'{"liked": true}', "liked")])
def test_a_like_takes_no_fields_and_a_refused_one_records_no_job(api, anns_post, raw, field):
    who = person(api)
    for method in ("POST", "DELETE"):
        reply = api.call(method, f"/posts/{anns_post['id']}/likes", raw=raw, token=who.token)
        assert (reply.status, reply.code) == (400, "INVALID_REQUEST"), reply
        assert field in reply.body["error"]["fields"]
    assert api.get("/jobs", token=who.token).body["items"] == []
    for raw_ok in (b"", b"{}"):  # no body, or an empty object, is a like
        reply = api.call("POST", f"/posts/{anns_post['id']}/likes", raw=raw_ok, token=who.token,
                         headers=WAIT)
        assert reply.status == 200, reply
    assert len(api.get("/jobs", token=who.token).body["items"]) == 2


def test_a_command_without_prefer_wait_is_202_with_its_location(api, anns_post):
    who = person(api)
    reply = api.post(f"/posts/{anns_post['id']}/comments", {"comment": "later"}, token=who.token)
    assert reply.status == 202, reply
    assert set(reply.body) == JOB_FIELDS
    assert (reply.body["type"], reply.body["status"]) == ("sns.comment", "queued")
    assert (reply.body["result"], reply.body["error"], reply.body["attempts"]) == (None, None, 0)
    assert reply.headers["location"] == f"/api/v1/jobs/{reply.body['id']}"
    assert reply.headers["retry-after"] == "1"
    done = finish(api, reply, who.token)
    assert succeeded(done)["post_id"] == anns_post["id"]


def test_a_repeated_idempotency_key_likes_once(api):
    author, fan = people(api, 2)
    post = publish(api, author)["id"]
    headers = WAIT | {"Idempotency-Key": f"like-{post}"}
    first = api.post(f"/posts/{post}/likes", token=fan.token, headers=headers)
    again = api.post(f"/posts/{post}/likes", token=fan.token, headers=headers)
    assert first.status == again.status == 200, (first, again)
    assert again.body["id"] == first.body["id"]
    assert succeeded(again.body) == {"post_id": post, "like_count": 1, "liked": True}
    assert api.get(f"/posts/{post}").body["like_count"] == 1
    other = api.post(f"/posts/{post}/comments", {"comment": "x"}, token=fan.token,
                     headers=headers)
    assert (other.status, other.code) == (422, "IDEMPOTENCY_KEY_REUSED"), other


def test_a_command_on_a_post_deleted_after_it_was_accepted_fails_post_not_found(api, stack):
    author, fan = people(api, 2)
    post = publish(api, author)["id"]
    # Given a like and a comment accepted while no worker runs
    stack.kill("worker")
    try:
        accepted = [api.post(f"/posts/{post}/likes", token=fan.token),
                    api.post(f"/posts/{post}/comments", {"comment": "x"}, token=fan.token)]
        assert [r.status for r in accepted] == [202, 202], accepted
        # When the post is deleted before they run
        assert api.call("DELETE", f"/posts/{post}", token=author.token).status == 204
    finally:
        stack.start_worker()
    # Then both fail POST_NOT_FOUND, and the author gets no alarm
    for reply in accepted:
        assert_failed(api.wait_job(reply.body["id"], fan.token), "POST_NOT_FOUND")
    assert alarms(api, author)["items"] == []


# -- comments --------------------------------------------------------------------------------


def test_comments_are_counted_and_listed_oldest_first(api):
    # Given a post
    author, fan = people(api, 2)
    post = publish(api, author)["id"]
    # When a fan and the author comment on it
    first = succeeded(comment(api, fan, post, "first!"))
    assert set(first) == {"comment_id", "post_id", "comment_count"}
    assert (first["post_id"], first["comment_count"]) == (post, 1)
    ids = [first["comment_id"]]
    for i, who in enumerate((author, fan, fan)):
        result = succeeded(comment(api, who, post, f"reply {i}"))
        assert result["comment_count"] == i + 2
        ids.append(result["comment_id"])
    # Then the post counts them, and anyone lists them oldest first
    assert api.get(f"/posts/{post}").body["comment_count"] == 4
    listed = api.get(f"/posts/{post}/comments")
    assert listed.status == 200 and set(listed.body) == {"items", "next_cursor"}
    items = listed.body["items"]
    assert [c["id"] for c in items] == ids and listed.body["next_cursor"] is None
    assert all(set(c) == COMMENT_FIELDS for c in items)
    assert (items[0]["comment"], items[0]["author"]) == ("first!", {"id": fan.id,
                                                                    "username": fan.name})
    assert items[1]["author"]["id"] == author.id
    parse_time(items[0]["created_at"])
    # And paging one at a time gives the same, each once
    assert walk(api, f"/posts/{post}/comments", 1) == ids
    assert walk(api, f"/posts/{post}/comments", 3) == ids


@pytest.mark.parametrize("body, field", [
    ({}, "comment"), ({"comment": ""}, "comment"), ({"comment": "   "}, "comment"),
    ({"comment": "\n\t"}, "comment"), ({"comment": "c" * 2_001}, "comment"),
    ({"comment": "a\u0000"}, "comment"), ({"comment": 5}, "comment"),
    ({"comment": True}, "comment"), ({"comment": None}, "comment"),
    ({"comment": ["x"]}, "comment"), ({"comment": "ok", "post_id": 1}, "post_id"),
    ({"comment": "ok", "author_id": 1}, "author_id"),
])
def test_a_bad_comment_is_400_naming_the_field_and_records_no_job(api, anns_post, body, field):
    who = person(api)
    reply = api.post(f"/posts/{anns_post['id']}/comments", body, token=who.token)
    assert (reply.status, reply.code) == (400, "INVALID_REQUEST"), reply
    assert field in reply.body["error"]["fields"]
    assert api.get("/jobs", token=who.token).body["items"] == []


def walk_comments(api: Api, post_id: int) -> dict[int, str]:
    reply = api.get(f"/posts/{post_id}/comments?limit=100")
    assert reply.status == 200, reply
    out = {c["id"]: c["comment"] for c in reply.body["items"]}
    cursor = reply.body["next_cursor"]
    while cursor:
        reply = api.get(f"/posts/{post_id}/comments?limit=100&cursor={cursor}")
        out |= {c["id"]: c["comment"] for c in reply.body["items"]}
        cursor = reply.body["next_cursor"]
    return out


def test_a_comment_at_the_bounds_is_kept_as_sent(api, anns_post):
    who = person(api)
    for text in ("c", "\u00e9" * 2_000, " spaced out "):
        cid = succeeded(comment(api, who, anns_post["id"], text))["comment_id"]
        listed = walk_comments(api, anns_post["id"])
        assert listed[cid] == text


def test_a_comment_is_deleted_by_its_author_or_the_posts_author_only(api):
    # Given a post with three comments by a fan, and a third user
    author, fan, stranger = people(api, 3)
    post = publish(api, author)["id"]
    c1, c2, c3 = (succeeded(comment(api, fan, post, t))["comment_id"] for t in "abc")
    assert alarms(api, author)["unread_count"] == 3
    # When the third user deletes one, it is 403 and it stays
    reply = api.call("DELETE", f"/posts/{post}/comments/{c1}", token=stranger.token)
    assert (reply.status, reply.code) == (403, "INVALID_PERMISSION"), reply
    # When the comment's author deletes one, and the post's author another
    for who, cid in ((fan, c1), (author, c2)):
        reply = api.call("DELETE", f"/posts/{post}/comments/{cid}", token=who.token)
        assert (reply.status, reply.body) == (204, None), reply
    # Then one is left, counted, and the deleted comments' alarms are gone
    assert [c["id"] for c in api.get(f"/posts/{post}/comments").body["items"]] == [c3]
    assert api.get(f"/posts/{post}").body["comment_count"] == 1
    left = alarms(api, author)
    assert [a["comment_id"] for a in left["items"]] == [c3] and left["unread_count"] == 1
    # And a deleted comment is 404, as is one of another post, or an id of any shape
    other_post = publish(api, stranger)["id"]
    for path in (f"/posts/{post}/comments/{c1}", f"/posts/{other_post}/comments/{c3}"):
        reply = api.call("DELETE", path, token=author.token)
        assert (reply.status, reply.code) == (404, "COMMENT_NOT_FOUND"), (path, reply)
    for bad in BAD_IDS:
        reply = api.call("DELETE", f"/posts/{post}/comments/{bad}", token=fan.token)
        assert (reply.status, reply.code) == (404, "COMMENT_NOT_FOUND"), (bad, reply)
    assert api.get(f"/posts/{post}").body["comment_count"] == 1


# -- alarms ----------------------------------------------------------------------------------


def test_likes_and_comments_of_others_alarm_the_author_newest_first(api):
    # Given a post
    author, fan, friend = people(api, 3)
    post = publish(api, author)["id"]
    # When its author likes and comments on it, no alarm is made
    succeeded(like(api, author, post))
    succeeded(comment(api, author, post, "mine"))
    assert alarms(api, author) == {"items": [], "next_cursor": None, "unread_count": 0}
    # When a fan likes it and a friend comments
    succeeded(like(api, fan, post))
    said = succeeded(comment(api, friend, post, "hi"))
    # Then the author has two unread alarms, newest first
    got = alarms(api, author)
    assert got["unread_count"] == 2 and got["next_cursor"] is None
    newest, oldest = got["items"]
    assert newest["id"] > oldest["id"]
    assert (newest["type"], newest["from_user"], newest["post_id"], newest["comment_id"],
            newest["read"]) == ("NEW_COMMENT", {"id": friend.id, "username": friend.name}, post,
                                said["comment_id"], False)
    assert (oldest["type"], oldest["from_user"]["id"], oldest["post_id"], oldest["comment_id"],
            oldest["read"]) == ("NEW_LIKE", fan.id, post, None, False)
    assert parse_time(newest["created_at"]) >= parse_time(oldest["created_at"])
    # And the others have none
    for who in (fan, friend):
        assert alarms(api, who) == {"items": [], "next_cursor": None, "unread_count": 0}


def test_alarms_are_read_up_to_an_id_never_past_the_last(api):
    # Given an author with two alarms
    author, fan, friend, late = people(api, 4)
    post = publish(api, author)["id"]
    succeeded(like(api, fan, post))
    succeeded(comment(api, friend, post))
    second, first = (a["id"] for a in alarms(api, author)["items"])
    # When they read up to the first
    reply = api.post("/alarms/read", {"up_to": first}, token=author.token)
    # Then one is unread
    assert (reply.status, reply.body) == (200, {"unread_count": 1}), reply
    got = alarms(api, author)
    assert [(a["id"], a["read"]) for a in got["items"]] == [(second, False), (first, True)]
    assert got["unread_count"] == 1
    # When they read far past the last one
    reply = api.post("/alarms/read", {"up_to": 2**63 - 1}, token=author.token)
    assert (reply.status, reply.body) == (200, {"unread_count": 0}), reply
    assert all(a["read"] for a in alarms(api, author)["items"])
    # Then an alarm that comes later is still unread (the mark stopped at the last alarm)
    succeeded(like(api, late, post))
    got = alarms(api, author)
    assert got["unread_count"] == 1
    assert [a["read"] for a in got["items"]] == [False, True, True]
    # And reading up to an older id reads nothing back
    reply = api.post("/alarms/read", {"up_to": first}, token=author.token)
    assert (reply.status, reply.body) == (200, {"unread_count": 1}), reply
    # And someone with no alarms may read too
    nobody = person(api)
    reply = api.post("/alarms/read", {"up_to": 5}, token=nobody.token)
    assert (reply.status, reply.body) == (200, {"unread_count": 0}), reply


@pytest.mark.parametrize("body, field", [
    ({}, "up_to"), ({"up_to": 0}, "up_to"), ({"up_to": -1}, "up_to"), ({"up_to": "1"}, "up_to"),
    ({"up_to": True}, "up_to"), ({"up_to": 1.5}, "up_to"), ({"up_to": None}, "up_to"),
    ({"up_to": 2**63}, "up_to"), ({"up_to": 10**30}, "up_to"), ({"up_to": [1]}, "up_to"),
    ({"up_to": 1, "all": True}, "all"),
])
def test_a_bad_read_mark_is_400_naming_the_field(api, ann, body, field):
    reply = api.post("/alarms/read", body, token=ann.token)
    assert (reply.status, reply.code) == (400, "INVALID_REQUEST"), reply
    assert field in reply.body["error"]["fields"]


def test_alarms_page_newest_first_without_repeats(api):
    author, *fans = people(api, 5)
    post = publish(api, author)["id"]
    for fan in fans:
        succeeded(like(api, fan, post))
    every = [a["id"] for a in alarms(api, author)["items"]]
    assert len(every) == 4 and every == sorted(every, reverse=True)
    assert walk(api, "/alarms", 1, token=author.token) == every
    assert walk(api, "/alarms", 3, token=author.token) == every
    page = alarms(api, author, "?limit=2")
    assert page["unread_count"] == 4 and page["next_cursor"]  # counts every page's unread


LISTS = ["/posts", "/users/me/posts", "/alarms", "/posts/{post}/comments"]
BAD_QUERIES = [
    ("limit=0", "limit"), ("limit=101", "limit"), ("limit=abc", "limit"), ("limit=-1", "limit"),
    ("limit=1.5", "limit"), ("limit=", "limit"), ("limit=99999999999999999999", "limit"),
    ("limit=%D9%A1", "limit"), ("cursor=%25%25%25", "cursor"), ("cursor=abc", "cursor"),
    ("cursor=AAAA", "cursor"), (f"cursor={'A' * 600}", "cursor"),
    ("cursor=" + cursor_of(b"[" * 190 + b"]" * 190), "cursor"),
    ("cursor=" + cursor_of(b'["2024-01-01T00:00:00Z", 1]'), "cursor"),
    ("cursor=" + cursor_of(b'["2024-01-01T00:00:00", 99999999999999999999]'), "cursor"),
    ("cursor=" + cursor_of(b'["10000-01-01T00:00:00", 1]'), "cursor"),
    ("cursor=" + cursor_of(b'{"id": 1}'), "cursor"), ("cursor=" + cursor_of(b"null"), "cursor"),
    ("cursor=%C3%A9", "cursor"),
]


@pytest.mark.parametrize("query, field", BAD_QUERIES)
def test_bad_list_queries_are_400_naming_the_parameter(api, ann, anns_post, query, field):
    for path in LISTS:
        url = path.format(post=anns_post["id"]) + "?" + query
        reply = api.get(url, token=ann.token)
        assert (reply.status, reply.code) == (400, "INVALID_REQUEST"), (url, reply)
        assert field in reply.body["error"]["fields"], (url, reply)


def test_a_cursor_of_another_list_is_refused(api):
    # Given an alarm cursor (an id) and a feed cursor (a time and an id)
    author, a, b = people(api, 3)
    post = publish(api, author)["id"]
    publish(api, author)
    succeeded(like(api, a, post))
    succeeded(like(api, b, post))
    alarm_cursor = alarms(api, author, "?limit=1")["next_cursor"]
    post_cursor = api.get("/users/me/posts?limit=1", token=author.token).body["next_cursor"]
    # Then neither is taken by the other list
    reply = api.get(f"/posts?cursor={alarm_cursor}")
    assert (reply.status, reply.code) == (400, "INVALID_REQUEST"), reply
    reply = api.get(f"/alarms?cursor={post_cursor}", token=author.token)
    assert (reply.status, reply.code) == (400, "INVALID_REQUEST"), reply


@pytest.mark.parametrize("key", [b'["0001-01-01T00:00:00", 0]', b'["0001-01-01T00:00:00", 1]',
                                 b'["9999-12-31T23:59:59.999999", 9223372036854775807]'],
                         ids=["first-moment", "first-moment-id-1", "last-moment"])
def test_cursors_at_the_calendars_edges_are_answered(api, ann, anns_post, key):
    newest_first = ("/posts", "/users/me/posts")
    for path in (*newest_first, f"/posts/{anns_post['id']}/comments"):
        reply = api.get(f"{path}?cursor={cursor_of(key)}", token=ann.token)
        assert reply.status == 200, (path, reply)
        assert isinstance(reply.body["items"], list)
        # nothing comes after the first moment going back, nor after the last going on
        if (b"0001" in key) == (path in newest_first):
            assert reply.body == {"items": [], "next_cursor": None}, path


# -- live alarms -------------------------------------------------------------------------------


def test_the_stream_sends_each_new_alarm_as_it_is_in_the_list(api):
    # Given an author with an old alarm
    author, fan, friend = people(api, 3)
    post = publish(api, author)["id"]
    succeeded(like(api, fan, post))
    # When they subscribe without Last-Event-ID
    with closing(SseReader(stream_url(api), author.token)) as reader:
        assert reader.status == 200
        assert reader.content_type.startswith("text/event-stream")
        # And a friend comments, the author comments (no alarm), the friend likes
        said = succeeded(comment(api, friend, post))
        succeeded(comment(api, author, post))
        succeeded(like(api, friend, post))
        # Then only the new alarms come, in order, each as GET /alarms shows it
        first, second = reader.take(2)
    listed = alarms(api, author)["items"]
    assert [e.event for e in (first, second)] == ["alarm", "alarm"]
    assert [first.id, second.id] == [str(listed[1]["id"]), str(listed[0]["id"])]
    assert first.data == listed[1]
    assert (first.data["type"], first.data["comment_id"]) == ("NEW_COMMENT", said["comment_id"])
    assert (second.data["type"], second.data["from_user"]["id"]) == ("NEW_LIKE", friend.id)
    assert second.data == listed[0]


def test_a_reconnect_with_last_event_id_replays_missed_alarms_in_order_once(api):
    author, a, b, c = people(api, 4)
    post = publish(api, author)["id"]
    with closing(SseReader(stream_url(api), author.token)) as reader:
        succeeded(like(api, a, post))
        seen = reader.next()
    # Given two alarms while nobody listens
    succeeded(like(api, b, post))
    said = succeeded(comment(api, c, post))
    # When the author reconnects with the last id they saw
    with closing(SseReader(stream_url(api), author.token, last_event_id=seen.id)) as again:
        missed = again.take(2)
        # Then the missed alarms come first, in order, then live ones, none twice
        succeeded(like(api, c, post))
        live = again.next()
    assert [int(e.id) for e in missed] == [int(seen.id) + 1, int(seen.id) + 2]
    assert [(e.data["type"], e.data["from_user"]["id"]) for e in missed] == [
        ("NEW_LIKE", b.id), ("NEW_COMMENT", c.id)]
    assert missed[1].data["comment_id"] == said["comment_id"]
    assert (int(live.id), live.data["type"], live.data["from_user"]["id"]) == (
        int(seen.id) + 3, "NEW_LIKE", c.id)
    # And Last-Event-ID 0 replays all of them from the start
    with closing(SseReader(stream_url(api), author.token, last_event_id="0")) as full:
        assert [e.id for e in full.take(4)] == [seen.id, *(e.id for e in missed), live.id]


def test_a_last_event_id_beyond_the_last_alarm_does_not_silence_the_stream(api):
    author, fan = people(api, 2)
    post = publish(api, author)["id"]
    with closing(SseReader(stream_url(api), author.token, last_event_id="999999")) as reader:
        succeeded(like(api, fan, post))
        event = reader.next()
    assert (event.id, event.event, event.data["from_user"]["id"]) == (
        str(alarms(api, author)["items"][0]["id"]), "alarm", fan.id)


def test_the_stream_takes_the_token_from_the_query_for_browsers(api):
    author, fan = people(api, 2)
    post = publish(api, author)["id"]
    with closing(QueryTokenReader(stream_url(api, f"?access_token={author.token}"))) as reader:
        assert reader.status == 200
        assert reader.content_type.startswith("text/event-stream")
        succeeded(like(api, fan, post))
        event = reader.next()
    assert (event.event, event.data["post_id"], event.data["type"]) == ("alarm", post, "NEW_LIKE")
    reply = api.get("/alarms/subscribe?access_token=garbage")
    assert (reply.status, reply.code) == (401, "INVALID_TOKEN"), reply
    # And only the event stream takes it: elsewhere it is not a parameter at all
    reply = api.get(f"/alarms?access_token={author.token}")
    assert (reply.status, reply.code) == (400, "INVALID_REQUEST"), reply
    assert set(reply.body["error"]["fields"]) == {"access_token"}


@pytest.mark.parametrize("last_event_id", ["abc", "-1", "1.5", "1e3", "99999999999999999999",
                                           "1 2", "\u0661"])
def test_a_bad_last_event_id_is_400(api, ann, last_event_id):
    reply = api.get("/alarms/subscribe", token=ann.token,
                    headers={"Last-Event-ID": last_event_id.encode().decode("latin-1")})
    assert (reply.status, reply.code) == (400, "INVALID_REQUEST"), reply
    assert "Last-Event-ID" in reply.body["error"]["fields"]


# -- the description -------------------------------------------------------------------------


def test_openapi_lists_every_feed_endpoint_with_the_job_types(api):
    spec = api.get("/openapi.json")
    assert spec.status == 200, spec
    paths = spec.body["paths"]
    expected = {
        "/api/v1/posts": {"get": None, "post": None},
        "/api/v1/posts/{post_id}": {"get": None, "put": None, "delete": None},
        "/api/v1/users/me/posts": {"get": None},
        "/api/v1/posts/{post_id}/likes": {"post": "sns.like", "delete": "sns.unlike"},
        "/api/v1/posts/{post_id}/comments": {"get": None, "post": "sns.comment"},
        "/api/v1/posts/{post_id}/comments/{comment_id}": {"delete": None},
        "/api/v1/alarms": {"get": None},
        "/api/v1/alarms/read": {"post": None},
        "/api/v1/alarms/subscribe": {"get": None},
    }
    for path, methods in expected.items():
        assert path in paths, path
        for method, job_type in methods.items():
            assert paths[path][method].get("x-job-type") == job_type, (path, method)
