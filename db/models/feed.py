"""The social feed: posts, one like per user per post, comments, and alarms.

``posts.like_count`` and ``posts.comment_count`` are changed only in the transaction
that inserts or deletes the row behind them, so they always equal those rows. Alarms
are numbered per recipient (``number``: 1, 2, 3, ... in commit order, from the
recipient's :class:`AlarmInbox` row), which makes a recipient's alarm stream contiguous
and replayable. An alarm goes with what caused it: its like, its comment, its post.
"""

from __future__ import annotations

import peewee

from db.models.base import BaseModel
from db.models.users import User


class Post(BaseModel):
    """A post and the counts of the likes and comments behind it."""

    id = peewee.BigAutoField()
    author = peewee.ForeignKeyField(User, on_delete="CASCADE")
    title = peewee.CharField(max_length=200)
    body = peewee.TextField()
    like_count = peewee.IntegerField(default=0, constraints=[peewee.Check("like_count >= 0")])
    comment_count = peewee.IntegerField(default=0,
                                        constraints=[peewee.Check("comment_count >= 0")])
    created_at = peewee.DateTimeField()
    updated_at = peewee.DateTimeField()

    class Meta:
        table_name = "posts"
        indexes = ((("created_at", "id"), False), (("author", "created_at", "id"), False))


class PostLike(BaseModel):
    """One user's like of one post (UNIQUE: at most one)."""

    id = peewee.BigAutoField()
    post = peewee.ForeignKeyField(Post, on_delete="CASCADE")
    user = peewee.ForeignKeyField(User, on_delete="CASCADE")
    created_at = peewee.DateTimeField()

    class Meta:
        table_name = "post_likes"
        indexes = ((("post", "user"), True), (("user",), False))


class Comment(BaseModel):
    """A comment on a post."""

    id = peewee.BigAutoField()
    post = peewee.ForeignKeyField(Post, on_delete="CASCADE")
    author = peewee.ForeignKeyField(User, on_delete="CASCADE")
    comment = peewee.TextField()
    created_at = peewee.DateTimeField()

    class Meta:
        table_name = "post_comments"
        indexes = ((("post", "created_at", "id"), False), (("author",), False))


class AlarmInbox(BaseModel):
    """A recipient's alarm counter (the last number given) and read mark."""

    user = peewee.ForeignKeyField(User, primary_key=True, on_delete="CASCADE")
    last_number = peewee.BigIntegerField(default=0)
    read_up_to = peewee.BigIntegerField(default=0)

    class Meta:
        table_name = "alarm_inboxes"


class Alarm(BaseModel):
    """Someone liked or commented on the recipient's post; ``number`` is its id to them."""

    id = peewee.BigAutoField()
    user = peewee.ForeignKeyField(User, on_delete="CASCADE")
    number = peewee.BigIntegerField()
    type = peewee.CharField(max_length=12)
    from_user = peewee.ForeignKeyField(User, on_delete="CASCADE")
    post = peewee.ForeignKeyField(Post, on_delete="CASCADE")
    like = peewee.ForeignKeyField(PostLike, null=True, on_delete="CASCADE")
    comment = peewee.ForeignKeyField(Comment, null=True, on_delete="CASCADE")
    created_at = peewee.DateTimeField()

    class Meta:
        table_name = "alarms"
        indexes = ((("user", "number"), True), (("post",), False), (("like",), False),
                   (("comment",), False))
