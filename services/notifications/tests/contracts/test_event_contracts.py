"""notifications' contracts for the events it consumes (contracts/messages/notifications-<producer>.json).

Each `expect` names an event notifications has a handler for and only the fields its handlers read
(post.created's `created_at`, for one, is not among them: the producer may drop it without
breaking notifications). The tests (`event_contracts.ConsumerContract`) feed the pacts to the real
handlers (inbox + handlers, as the worker runs them) and keep the committed files exactly what is
defined here; users' and feed's suites verify those files against their real event-building code.
"""

import pytest
from event_contracts import ConsumerContract, id_, ids, text

pytestmark = pytest.mark.django_db


class TestEventContracts(ConsumerContract):
    CONSUMER = "notifications"
    EXPECTATIONS = {
        "users": [
            ("user.followed", 1, {"follower_id": id_(1001), "followee_id": id_(1002)}),
            (
                "user.updated",
                1,
                {
                    "user_id": id_(1001),
                    "username": text("alice"),
                    "display_name": text("Alice"),
                    "avatar_url": text("https://img.example/alice.png"),
                },
            ),
            ("user.deleted", 1, {"user_id": id_(1001)}),
        ],
        "feed": [
            ("post.created", 1, {"post_id": id_(2001), "author_id": id_(1001), "mentioned_user_ids": ids(1002)}),
            ("post.liked", 1, {"post_id": id_(2001), "author_id": id_(1001), "liker_id": id_(1002)}),
            ("post.deleted", 1, {"post_id": id_(2001)}),
        ],
    }
