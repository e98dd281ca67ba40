from django.db import models


class TimelineEntry(models.Model):
    """Durable home timeline: one row per (reader, post) written by fan-out; the Redis sorted set
    of any user can be rebuilt from it. No foreign key: rows are written in bulk, and removal on
    post delete / unfollow / user delete is explicit."""

    pk = models.CompositePrimaryKey("user_id", "post_id")  # also a user's timeline newest first (backward scan)
    user_id = models.BigIntegerField()
    post_id = models.BigIntegerField()
    author_id = models.BigIntegerField()

    class Meta:
        indexes = [
            models.Index(fields=["post_id"], name="timeline_post_idx"),  # remove a deleted post everywhere
            models.Index(fields=["user_id", "author_id"], name="timeline_user_author_idx"),  # unfollow
        ]

    def __str__(self) -> str:
        return f"{self.post_id} in timeline of {self.user_id}"


class AuthorStats(models.Model):
    """Follower count per author, kept from user.followed / user.unfollowed, to decide fan-out
    (push) or read-time merge (pull) for an author's posts."""

    author_id = models.BigIntegerField(primary_key=True)
    followers_count = models.IntegerField(default=0)
    is_big = models.BooleanField(default=False)  # above FANOUT_MAX_FOLLOWERS: posts are pulled at read time

    def __str__(self) -> str:
        return f"author {self.author_id}: {self.followers_count} followers"


class BigAuthorFollow(models.Model):
    """Who follows a big author: the readers into whose timelines its posts are merged at read."""

    pk = models.CompositePrimaryKey("user_id", "author_id")  # a reader's big followees
    user_id = models.BigIntegerField()
    author_id = models.BigIntegerField()

    def __str__(self) -> str:
        return f"{self.user_id} follows big author {self.author_id}"
