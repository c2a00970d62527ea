"""The social feed: posts, likes, comments, and alarms pushed live.

- **Counts are exact.** ``like_count`` and ``comment_count`` change only in the
  transaction that inserts or deletes the row behind them, by an UPDATE of the post row
  that comes first: it takes the post's row lock, so every like, unlike and comment of
  one post applies one at a time, and a refusal (``ALREADY_LIKED``, ``NOT_LIKED``)
  rolls the count back with everything else. One like per user and post is also a
  UNIQUE index. Every writer locks the post row before anything else of the post,
  so a like racing an unlike of the same user cannot deadlock.
- **Alarms** are written in the transaction of the like or comment that causes them,
  numbered per recipient (1, 2, 3, ... in commit order: the recipient's inbox row is
  the counter and its lock), and emitted only after commit. The number is the alarm's
  ``id`` and its event id on ``GET /alarms/subscribe``, so a recipient's stream is
  contiguous: in order, and replayable from the database after ``Last-Event-ID``. An
  alarm goes with what caused it (an unliked like, a deleted comment or post).
- **A recount** every ``FEED_RECOUNT_INTERVAL`` seconds compares the counts with the
  rows behind them and repairs (and logs) any drift. There should be none.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

import msgspec
import peewee

from db.connection import database, execute, for_update
from db.models import Alarm, AlarmInbox, Comment, Post, PostLike, User
from jobs.clock import iso
from jobs.errors import DomainError
from jobs.fields import Positive, Text
from jobs.pagination import Id, Moment, id_page, keyset_page
from jobs.platform import Command, Context, Domain, Event, Periodic

log = logging.getLogger(__name__)

LIVE_ALARM = "sns.alarm"
NEW_LIKE, NEW_COMMENT = "NEW_LIKE", "NEW_COMMENT"
REPLAY_LIMIT = 1000
VISIBLE = r"\s*[^\x00\s][^\x00]*"
"""Text with at least one visible character and no NUL (leading spaces first: a pattern
that lets two stars share the text backtracks in quadratic time on a long refused one)."""
PostId = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]


class FeedSettings(msgspec.Struct, frozen=True):
    """How often the recount compares each post's counts with its rows (seconds)."""

    feed_recount_interval: Positive = 300


def _not_found() -> DomainError:
    return DomainError("POST_NOT_FOUND", "no such post")


def _person(user_id: int, username: str) -> dict:
    return {"id": user_id, "username": username}


# -- posts -----------------------------------------------------------------------------

Author = User.alias("author_user")


def _posts() -> peewee.Select:
    return (Post.select(Post, Author.username)
            .join(Author, on=(Post.author == Author.id), attr="author_user"))


def post_view(p: Post, liked_by_me: bool) -> dict:
    """A post as the API shows it (``p`` selected through :func:`_posts`)."""
    return {
        "id": p.id,
        "title": p.title,
        "body": p.body,
        "author": _person(p.author_id, p.author_user.username),
        "like_count": p.like_count,
        "comment_count": p.comment_count,
        "liked_by_me": liked_by_me,
        "created_at": iso(p.created_at),
        "updated_at": iso(p.updated_at),
    }


def _liked(viewer: int | None, post_ids: list[int]) -> set[int]:
    """Which of ``post_ids`` the viewer likes (none without a viewer)."""
    if viewer is None or not post_ids:
        return set()
    return {pid for (pid,) in PostLike.select(PostLike.post)
            .where((PostLike.user == viewer) & PostLike.post.in_(post_ids)).tuples()}


def _views(rows: list[Post], viewer: int | None) -> list[dict]:
    liked = _liked(viewer, [p.id for p in rows])
    return [post_view(p, p.id in liked) for p in rows]


def create_post(author_id: int, title: str, body: str, now: datetime) -> dict:
    """Publish a post."""
    post = Post.create(author=author_id, title=title, body=body, created_at=now,
                       updated_at=now)
    return get_post(post.id, author_id)


def get_post(post_id: int, viewer: int | None) -> dict:
    """One post; ``POST_NOT_FOUND`` if there is none."""
    found = _posts().where(Post.id == post_id).first()
    if found is None:
        raise _not_found()
    return _views([found], viewer)[0]


def require_post(post_id: int) -> None:
    """``POST_NOT_FOUND`` unless the post exists."""
    if not Post.select().where(Post.id == post_id).exists():
        raise _not_found()


def list_posts(viewer: int | None, limit: int, cursor: str | None,
               author_id: int | None = None) -> dict:
    """The feed (or one author's posts), newest first, keyed by ``(created_at, id)``."""
    query = _posts()
    if author_id is not None:
        query = query.where(Post.author == author_id)
    rows, next_cursor = keyset_page(query, (Post.created_at, Post.id), tuple[Moment, Id],
                                    limit, cursor, newest_first=True)
    return {"items": _views(rows, viewer), "next_cursor": next_cursor}


def _owned(post_id: int, user_id: int) -> None:
    """``POST_NOT_FOUND`` or ``INVALID_PERMISSION`` when the user may not change the post."""
    author = Post.select(Post.author).where(Post.id == post_id).scalar()
    if author is None:
        raise _not_found()
    if author != user_id:
        raise DomainError("INVALID_PERMISSION", "only the post's author may change it")


def edit_post(post_id: int, user_id: int, title: str, body: str, now: datetime) -> dict:
    """Change a post's title and body (its author only)."""
    changed = (Post.update(title=title, body=body, updated_at=now)
               .where((Post.id == post_id) & (Post.author == user_id)).execute())
    if not changed:
        _owned(post_id, user_id)
    return get_post(post_id, user_id)


def delete_post(post_id: int, user_id: int) -> None:
    """Delete a post (its author only); its likes, comments and alarms go with it."""
    deleted = Post.delete().where((Post.id == post_id) & (Post.author == user_id)).execute()
    if not deleted:
        _owned(post_id, user_id)


# -- likes and comments (command handlers: inside the job's transaction) ----------------

_COUNT = "UPDATE posts SET {0} = {0} {1} 1 WHERE id = %s{2} RETURNING author_id, {0}"


def _count(post_id: int, column: str, step: str) -> tuple[int, int] | None:
    """Move a post's count by one, taking its row lock: ``(author, count)``, or None
    when there is no post (or, going down, nothing to count)."""
    guard = f" AND {column} > 0" if step == "-" else ""
    return execute(_COUNT.format(column, step, guard), (post_id,)).fetchone()


def like(ctx: Context, post_id: int) -> dict:
    """Like a post once: ``ALREADY_LIKED`` the second time."""
    counted = _count(post_id, "like_count", "+")
    if counted is None:
        raise _not_found()
    author, like_count = counted
    row = execute("INSERT INTO post_likes (post_id, user_id, created_at) VALUES (%s, %s, %s)"
                  " ON CONFLICT (post_id, user_id) DO NOTHING RETURNING id",
                  (post_id, ctx.user_id, ctx.now)).fetchone()
    if row is None:  # the rollback takes the count back
        raise DomainError("ALREADY_LIKED", "you already like this post")
    if author != ctx.user_id:
        _alarm(ctx, author, NEW_LIKE, post_id, like_id=row[0])
    return {"post_id": post_id, "like_count": like_count, "liked": True}


def unlike(ctx: Context, post_id: int) -> dict:
    """Take a like back (and its alarm): ``NOT_LIKED`` if there is none."""
    counted = _count(post_id, "like_count", "-")
    if counted is None:
        require_post(post_id)
        raise DomainError("NOT_LIKED", "you do not like this post")
    gone = execute("DELETE FROM post_likes WHERE post_id = %s AND user_id = %s RETURNING id",
                   (post_id, ctx.user_id)).fetchone()
    if gone is None:
        raise DomainError("NOT_LIKED", "you do not like this post")
    return {"post_id": post_id, "like_count": counted[1], "liked": False}


def comment(ctx: Context, post_id: int, text: str) -> dict:
    """Comment on a post."""
    counted = _count(post_id, "comment_count", "+")
    if counted is None:
        raise _not_found()
    author, comment_count = counted
    (comment_id,) = execute("INSERT INTO post_comments (post_id, author_id, comment, created_at)"
                            " VALUES (%s, %s, %s, %s) RETURNING id",
                            (post_id, ctx.user_id, text, ctx.now)).fetchone()
    if author != ctx.user_id:
        _alarm(ctx, author, NEW_COMMENT, post_id, comment_id=comment_id)
    return {"comment_id": comment_id, "post_id": post_id, "comment_count": comment_count}


def list_comments(post_id: int, limit: int, cursor: str | None) -> dict:
    """A post's comments, oldest first."""
    require_post(post_id)
    query = (Comment.select(Comment, Author.username)
             .join(Author, on=(Comment.author == Author.id), attr="author_user")
             .where(Comment.post == post_id))
    rows, next_cursor = keyset_page(query, (Comment.created_at, Comment.id),
                                    tuple[Moment, Id], limit, cursor)
    return {"items": [{"id": c.id, "comment": c.comment,
                       "author": _person(c.author_id, c.author_user.username),
                       "created_at": iso(c.created_at)} for c in rows],
            "next_cursor": next_cursor}


def delete_comment(post_id: int, comment_id: int, user_id: int) -> None:
    """Delete a comment (its author or the post's); the count follows in the same
    transaction, under the post's lock."""
    with database.atomic():
        post = for_update(Post.select(Post.id, Post.author).where(Post.id == post_id)).first()
        if post is None:
            raise _not_found()
        found = (Comment.select(Comment.author)
                 .where((Comment.id == comment_id) & (Comment.post == post_id)).first())
        if found is None:
            raise DomainError("COMMENT_NOT_FOUND", "no such comment on this post")
        if user_id not in (found.author_id, post.author_id):
            raise DomainError("INVALID_PERMISSION",
                              "only the comment's author or the post's author may delete it")
        Comment.delete().where(Comment.id == comment_id).execute()
        _count(post_id, "comment_count", "-")


# -- alarms ------------------------------------------------------------------------------

_NEXT_NUMBER = ("INSERT INTO alarm_inboxes (user_id, last_number, read_up_to) VALUES (%s, 1, 0)"
                " ON CONFLICT (user_id) DO UPDATE SET last_number = alarm_inboxes.last_number + 1"
                " RETURNING last_number")
_ADD_ALARM = ("INSERT INTO alarms (user_id, number, type, from_user_id, post_id, like_id,"
              " comment_id, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
              " RETURNING (SELECT username FROM users WHERE users.id = from_user_id)")


def _alarm(ctx: Context, recipient: int, kind: str, post_id: int, like_id: int | None = None,
           comment_id: int | None = None) -> None:
    """Write the recipient's next alarm; it is emitted after commit. Two statements, the
    sender's name read by the second: the post's lock is held until the commit."""
    (number,) = execute(_NEXT_NUMBER, (recipient,)).fetchone()
    (username,) = execute(_ADD_ALARM, (recipient, number, kind, ctx.user_id, post_id, like_id,
                                       comment_id, ctx.now)).fetchone()
    ctx.emit(LIVE_ALARM, {"id": number, "type": kind,
                          "from_user": _person(ctx.user_id, username), "post_id": post_id,
                          "comment_id": comment_id, "created_at": iso(ctx.now), "read": False},
             key=recipient, id=number)


Sender = User.alias("from_user_row")


def _alarms(user_id: int) -> peewee.Select:
    return (Alarm.select(Alarm, Sender.username)
            .join(Sender, on=(Alarm.from_user == Sender.id), attr="sender")
            .where(Alarm.user == user_id))


def alarm_view(a: Alarm, read_up_to: int) -> dict:
    """An alarm as its recipient sees it (``a`` selected through :func:`_alarms`)."""
    return {"id": a.number, "type": a.type, "from_user": _person(a.from_user_id, a.sender.username),
            "post_id": a.post_id, "comment_id": a.comment_id, "created_at": iso(a.created_at),
            "read": a.number <= read_up_to}


def _inbox(user_id: int) -> tuple[int, int]:
    """``(last_number, read_up_to)`` of the user's alarms."""
    row = (AlarmInbox.select(AlarmInbox.last_number, AlarmInbox.read_up_to)
           .where(AlarmInbox.user == user_id).tuples().first())
    return row or (0, 0)


def _unread(user_id: int, read_up_to: int) -> int:
    return Alarm.select().where((Alarm.user == user_id) & (Alarm.number > read_up_to)).count()


def list_alarms(user_id: int, limit: int, cursor: str | None) -> dict:
    """The user's alarms, newest first, and how many are unread."""
    _, read_up_to = _inbox(user_id)
    rows, next_cursor = id_page(_alarms(user_id), Alarm.number, limit, cursor,
                                newest_first=True)
    return {"items": [alarm_view(a, read_up_to) for a in rows], "next_cursor": next_cursor,
            "unread_count": _unread(user_id, read_up_to)}


def mark_read(user_id: int, up_to: int) -> dict:
    """Mark every alarm numbered up to ``up_to`` read (never one not written yet)."""
    with database.atomic():
        inbox = for_update(AlarmInbox.select().where(AlarmInbox.user == user_id)).first()
        if inbox is None:
            return {"unread_count": 0}
        mark = max(inbox.read_up_to, min(up_to, inbox.last_number))
        if mark != inbox.read_up_to:
            AlarmInbox.update(read_up_to=mark).where(AlarmInbox.user == user_id).execute()
        return {"unread_count": _unread(user_id, mark)}


def last_alarm(user_id: int) -> int:
    """The number of the user's latest alarm (0 before the first)."""
    return _inbox(user_id)[0]


def alarms_since(user_id: int, after: int | None) -> list[Event]:
    """The user's alarms numbered above ``after``, oldest first (for replay)."""
    _, read_up_to = _inbox(user_id)
    rows = (_alarms(user_id).where(Alarm.number > (after or 0))
            .order_by(Alarm.number).limit(REPLAY_LIMIT))
    return [Event(LIVE_ALARM, alarm_view(a, read_up_to), str(user_id), a.number) for a in rows]


# -- the recount ---------------------------------------------------------------------------

_DRIFT = ("SELECT p.id FROM posts p"
          " WHERE p.like_count <> (SELECT count(*) FROM post_likes l WHERE l.post_id = p.id)"
          " OR p.comment_count <> (SELECT count(*) FROM post_comments c WHERE c.post_id = p.id)")


def recount(ctx: Context) -> dict:
    """Compare every post's counts with its rows; repair and log any drift.

    One statement sees one snapshot, in which a like's row and its count committed
    together, so it finds only real drift. Each drifted post is then locked and
    counted again before it is repaired, so a like committing meanwhile is counted.
    """
    drifted = [pid for (pid,) in execute(_DRIFT).fetchall()]
    for post_id in drifted:
        post = for_update(Post.select().where(Post.id == post_id)).first()
        if post is None:
            continue
        likes = PostLike.select().where(PostLike.post == post_id).count()
        comments = Comment.select().where(Comment.post == post_id).count()
        if (likes, comments) != (post.like_count, post.comment_count):
            log.warning("feed counts repaired", extra={
                "post_id": post_id, "like_count": post.like_count, "likes": likes,
                "comment_count": post.comment_count, "comments": comments})
            Post.update(like_count=likes, comment_count=comments).where(
                Post.id == post_id).execute()
    return {"repaired": len(drifted)} if drifted else {}


# -- commands ------------------------------------------------------------------------------


class LikePost(msgspec.Struct, forbid_unknown_fields=True):
    """``sns.like`` and ``sns.unlike``: the post."""

    post_id: PostId


class CommentOn(msgspec.Struct, forbid_unknown_fields=True):
    """``sns.comment``: the post and the comment."""

    post_id: PostId
    comment: Text(1, 2000, VISIBLE, "1..2,000 characters, not only spaces")


class Liked(msgspec.Struct):
    """The post's like count after the change, and whether the caller likes it."""

    post_id: int
    like_count: int
    liked: bool


class Commented(msgspec.Struct):
    """The new comment and the post's comment count."""

    comment_id: int
    post_id: int
    comment_count: int


def like_command(ctx: Context, cmd: LikePost) -> dict:
    """``sns.like``."""
    return like(ctx, cmd.post_id)


def unlike_command(ctx: Context, cmd: LikePost) -> dict:
    """``sns.unlike``."""
    return unlike(ctx, cmd.post_id)


def comment_command(ctx: Context, cmd: CommentOn) -> dict:
    """``sns.comment``."""
    return comment(ctx, cmd.post_id, cmd.comment)


def recount_counts(ctx: Context) -> dict:
    """Every few minutes: prove the counts equal their rows (repair any drift)."""
    return recount(ctx)


_POST = "/posts/{post_id}"
DOMAIN = Domain(
    name="feed",
    commands=(
        Command("sns.like", LikePost, like_command, "POST", f"{_POST}/likes", "Like a post",
                result=Liked, not_found="POST_NOT_FOUND",
                errors=("ALREADY_LIKED", "POST_NOT_FOUND")),
        Command("sns.unlike", LikePost, unlike_command, "DELETE", f"{_POST}/likes",
                "Take a like back", result=Liked, not_found="POST_NOT_FOUND",
                errors=("NOT_LIKED", "POST_NOT_FOUND")),
        Command("sns.comment", CommentOn, comment_command, "POST", f"{_POST}/comments",
                "Comment on a post", result=Commented, not_found="POST_NOT_FOUND",
                errors=("POST_NOT_FOUND",)),
    ),
    periodic=(Periodic("feed.recount", recount_counts, every="feed_recount_interval"),),
    live_topics=frozenset({LIVE_ALARM}),
    models=(Post, PostLike, Comment, AlarmInbox, Alarm),
    settings=FeedSettings,
)
