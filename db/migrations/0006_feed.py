"""The social feed: posts, likes (UNIQUE per user and post), comments, alarms and inboxes.

The models below are a frozen copy of the schema at this migration.
"""

from peewee import (
    BigAutoField,
    BigIntegerField,
    CharField,
    Check,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class User(Base):
        id = BigAutoField()

        class Meta:
            table_name = "users"

    class Post(Base):
        id = BigAutoField()
        author = ForeignKeyField(User, on_delete="CASCADE")
        title = CharField(max_length=200)
        body = TextField()
        like_count = IntegerField(default=0, constraints=[Check("like_count >= 0")])
        comment_count = IntegerField(default=0, constraints=[Check("comment_count >= 0")])
        created_at = DateTimeField()
        updated_at = DateTimeField()

        class Meta:
            table_name = "posts"
            indexes = ((("created_at", "id"), False), (("author", "created_at", "id"), False))

    class PostLike(Base):
        id = BigAutoField()
        post = ForeignKeyField(Post, on_delete="CASCADE")
        user = ForeignKeyField(User, on_delete="CASCADE")
        created_at = DateTimeField()

        class Meta:
            table_name = "post_likes"
            indexes = ((("post", "user"), True), (("user",), False))

    class Comment(Base):
        id = BigAutoField()
        post = ForeignKeyField(Post, on_delete="CASCADE")
        author = ForeignKeyField(User, on_delete="CASCADE")
        comment = TextField()
        created_at = DateTimeField()

        class Meta:
            table_name = "post_comments"
            indexes = ((("post", "created_at", "id"), False), (("author",), False))

    class AlarmInbox(Base):
        user = ForeignKeyField(User, primary_key=True, on_delete="CASCADE")
        last_number = BigIntegerField(default=0)
        read_up_to = BigIntegerField(default=0)

        class Meta:
            table_name = "alarm_inboxes"
            constraints = [Check("read_up_to <= last_number")]

    class Alarm(Base):
        id = BigAutoField()
        user = ForeignKeyField(User, on_delete="CASCADE")
        number = BigIntegerField()
        type = CharField(max_length=12)
        from_user = ForeignKeyField(User, on_delete="CASCADE")
        post = ForeignKeyField(Post, on_delete="CASCADE")
        like = ForeignKeyField(PostLike, null=True, on_delete="CASCADE")
        comment = ForeignKeyField(Comment, null=True, on_delete="CASCADE")
        created_at = DateTimeField()

        class Meta:
            table_name = "alarms"
            constraints = [Check("type IN ('NEW_LIKE', 'NEW_COMMENT')")]
            indexes = ((("user", "number"), True), (("post",), False), (("like",), False),
                       (("comment",), False))

    db.create_tables([Post, PostLike, Comment, AlarmInbox, Alarm])


def down(migrator, db):
    db.execute_sql("DROP TABLE IF EXISTS alarms, alarm_inboxes, post_comments, post_likes, posts")
