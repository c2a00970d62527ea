"""``/posts`` and ``/alarms``: the social feed's posts, comments and alarms.

Likes, unlikes and comments are commands (``sns.like``, ``sns.unlike``,
``sns.comment``): their doors only check that the post exists; the rest is decided
under the post's row lock in the worker. Posts and comment deletions are synchronous.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from jobs import feed
from jobs.clock import utcnow
from jobs.platform import Event
from web import sse
from web.auth import optional_user, require_stream_user, require_user
from web.commands import DB, HUB, STREAMS
from web.responses import json_response
from web.routing import Query, Route
from web.shapes import Int, Page, Text
from web.validation import MAX_ID, PAGING, page_params, path_id

Title = Text(1, 200, feed.VISIBLE, "1..200 characters, not only spaces")
Body = Text(1, 10_000, feed.VISIBLE, "1..10,000 characters, not only spaces")


class PostText(msgspec.Struct, forbid_unknown_fields=True):
    """A post's title and body (to publish it, or to replace them)."""

    title: Title
    body: Body


class ReadUpTo(msgspec.Struct, forbid_unknown_fields=True):
    """Mark the caller's alarms read, up to and including this alarm id."""

    up_to: Int(1, MAX_ID)


class Person(msgspec.Struct):
    """A user as others see them."""

    id: int
    username: str


class Post(msgspec.Struct):
    """A post (``liked_by_me``: false without a token)."""

    id: int
    title: str
    body: str
    author: Person
    like_count: int
    comment_count: int
    liked_by_me: bool
    created_at: str
    updated_at: str


class CommentView(msgspec.Struct):
    """A comment."""

    id: int
    comment: str
    author: Person
    created_at: str


class AlarmView(msgspec.Struct):
    """Someone liked or commented on one of the caller's posts (``id``: numbered per
    recipient, also the event id on ``/alarms/subscribe``)."""

    id: int
    type: str
    from_user: Person
    post_id: int
    comment_id: int | None
    created_at: str
    read: bool


class Alarms(msgspec.Struct):
    """One page of alarms, newest first, and how many of all are unread."""

    items: list[AlarmView]
    next_cursor: str | None
    unread_count: int


class Unread(msgspec.Struct):
    """How many alarms are still unread."""

    unread_count: int


def _post_id(request: web.Request) -> int:
    return path_id(request, "post_id", "POST_NOT_FOUND")


async def create_post(request: web.Request, body: PostText) -> web.Response:
    """``POST /posts``: 201 with the post."""
    user_id = await require_user(request)
    post = await request.app[DB](feed.create_post, user_id, body.title, body.body, utcnow())
    return json_response(post, 201)


async def list_posts(request: web.Request) -> web.Response:
    """``GET /posts``: the feed, newest first."""
    viewer = await optional_user(request)
    limit, cursor = page_params(request)
    return json_response(await request.app[DB](feed.list_posts, viewer, limit, cursor))


async def my_posts(request: web.Request) -> web.Response:
    """``GET /users/me/posts``: the caller's posts, newest first."""
    user_id = await require_user(request)
    limit, cursor = page_params(request)
    return json_response(await request.app[DB](feed.list_posts, user_id, limit, cursor,
                                                user_id))


async def get_post(request: web.Request) -> web.Response:
    """``GET /posts/{id}``."""
    post_id = _post_id(request)
    viewer = await optional_user(request)
    return json_response(await request.app[DB](feed.get_post, post_id, viewer))


async def edit_post(request: web.Request, body: PostText) -> web.Response:
    """``PUT /posts/{id}``: the author replaces the title and body."""
    user_id = await require_user(request)
    post_id = _post_id(request)
    return json_response(await request.app[DB](feed.edit_post, post_id, user_id, body.title,
                                                body.body, utcnow()))


async def delete_post(request: web.Request) -> web.Response:
    """``DELETE /posts/{id}``: 204; its likes, comments and alarms go with it."""
    user_id = await require_user(request)
    await request.app[DB](feed.delete_post, _post_id(request), user_id)
    return web.Response(status=204)


async def comments(request: web.Request) -> web.Response:
    """``GET /posts/{id}/comments``: oldest first."""
    post_id = _post_id(request)
    limit, cursor = page_params(request)
    return json_response(await request.app[DB](feed.list_comments, post_id, limit, cursor))


async def delete_comment(request: web.Request) -> web.Response:
    """``DELETE /posts/{id}/comments/{comment_id}``: the comment's or the post's author."""
    user_id = await require_user(request)
    post_id = _post_id(request)
    comment_id = path_id(request, "comment_id", "COMMENT_NOT_FOUND")
    await request.app[DB](feed.delete_comment, post_id, comment_id, user_id)
    return web.Response(status=204)


async def alarms(request: web.Request) -> web.Response:
    """``GET /alarms``: newest first, with ``unread_count``."""
    user_id = await require_user(request)
    limit, cursor = page_params(request)
    return json_response(await request.app[DB](feed.list_alarms, user_id, limit, cursor))


async def read_alarms(request: web.Request, body: ReadUpTo) -> web.Response:
    """``POST /alarms/read``: every alarm up to ``up_to`` is read."""
    user_id = await require_user(request)
    return json_response(await request.app[DB](feed.mark_read, user_id, body.up_to))


async def subscribe(request: web.Request) -> web.StreamResponse:
    """``GET /alarms/subscribe``: the caller's new alarms, live (``event: alarm``)."""
    user_id = await require_stream_user(request)
    db = request.app[DB]

    async def since(after: int | None) -> list[Event]:
        return await db(feed.alarms_since, user_id, after)

    async def latest() -> int:
        return await db(feed.last_alarm, user_id)

    return await sse.stream(request, request.app[HUB], request.app[STREAMS], feed.LIVE_ALARM,
                            str(user_id), since, event_name=lambda e: "alarm",
                            contiguous=True, origin=latest)


async def post_door(request: web.Request, user_id: int, fields: dict) -> None:
    """``sns.like``, ``sns.unlike`` and ``sns.comment`` at the door: 404 for no post."""
    await request.app[DB](feed.require_post, fields["post_id"])


DOORS = {"sns.like": post_door, "sns.unlike": post_door, "sns.comment": post_door}
POST_NOT_FOUND = ("POST_NOT_FOUND",)
OWNER_ONLY = ("POST_NOT_FOUND", "INVALID_PERMISSION")
ROUTES = [
    Route("POST", "/posts", create_post, "Publish a post", body=PostText, response=Post,
          status=201),
    Route("GET", "/posts", list_posts, "The feed, newest first", response=Page[Post],
          auth="optional", query=PAGING),
    Route("GET", "/posts/{post_id}", get_post, "One post", response=Post,
          errors=POST_NOT_FOUND, auth="optional"),
    Route("PUT", "/posts/{post_id}", edit_post, "Replace a post's title and body (its author)",
          body=PostText, response=Post, errors=OWNER_ONLY),
    Route("DELETE", "/posts/{post_id}", delete_post,
          "Delete a post with its likes, comments and alarms (its author)", status=204,
          errors=OWNER_ONLY),
    Route("GET", "/users/me/posts", my_posts, "The caller's posts, newest first",
          response=Page[Post], query=PAGING),
    Route("GET", "/posts/{post_id}/comments", comments, "A post's comments, oldest first",
          response=Page[CommentView], errors=POST_NOT_FOUND, auth="none", query=PAGING),
    Route("DELETE", "/posts/{post_id}/comments/{comment_id}", delete_comment,
          "Delete a comment (its author or the post's author)", status=204,
          errors=("POST_NOT_FOUND", "COMMENT_NOT_FOUND", "INVALID_PERMISSION")),
    Route("GET", "/alarms", alarms, "The caller's alarms, newest first, and the unread count",
          response=Alarms, query=PAGING),
    Route("POST", "/alarms/read", read_alarms, "Mark the caller's alarms read up to an id",
          body=ReadUpTo, response=Unread),
    Route("GET", "/alarms/subscribe", subscribe,
          "Live stream of the caller's new alarms (event: alarm)",
          content_type="text/event-stream", headers=("Last-Event-ID",),
          query=(Query("access_token", str, "for EventSource, instead of the header"),)),
]
