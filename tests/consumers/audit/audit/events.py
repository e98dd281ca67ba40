"""The one subscription of this consumer: post.created v1 (declared here, nowhere else)."""

from audit.models import AuditedPost
from shared.events import Event, handler


@handler("post.created", version=1)
def on_post_created(event: Event) -> None:
    AuditedPost.objects.create(event_id=event.id, post_id=int(event.data["post_id"]), author_id=int(event.data["author_id"]))
