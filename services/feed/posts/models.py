from django.contrib.postgres.fields import ArrayField
from django.db import models

from shared.users_api.validation import USERNAME_MAX_LENGTH


class Post(models.Model):
    # Snowflake id (shared.ids): time-ordered, so "newest first" is ORDER BY id DESC.
    id = models.BigIntegerField(primary_key=True)
    author_id = models.BigIntegerField()  # a user in the users service: no foreign key across services
    body = models.CharField(max_length=500)
    mentions = ArrayField(models.CharField(max_length=USERNAME_MAX_LENGTH), default=list)  # usernames as resolved at post time
    mentioned_user_ids = ArrayField(models.BigIntegerField(), default=list)
    # Denormalized, kept exact by F() updates in the same transaction as the like row.
    like_count = models.IntegerField(default=0)
    created_at = models.DateTimeField()

    class Meta:
        indexes = [
            # user timeline, backfill on follow, big-author merge at read: an author's posts newest first
            models.Index(fields=["author_id", "-id"], name="post_author_id_idx"),
        ]

    def __str__(self) -> str:
        return f"post {self.id} by {self.author_id}"


class Like(models.Model):
    post = models.ForeignKey(Post, on_delete=models.CASCADE, related_name="+", db_index=False)
    user_id = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # one like per user and post; with user first it also serves liked_by_me (user, post IN …)
            models.UniqueConstraint(fields=["user_id", "post"], name="like_user_post_uniq"),
        ]
        indexes = [
            # removing a post's likes; a post's likers
            models.Index(fields=["post", "-id"], name="like_post_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} likes {self.post_id}"
