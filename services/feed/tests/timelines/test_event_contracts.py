"""feed's contracts for the events it consumes (contracts/messages/feed-<producer>.json): users'
follow and profile events, and its own post events (fan-out and removal ride on the outbox too).

Each `expect` lists only the fields feed's handlers read. The tests (`event_contracts.ConsumerContract`)
feed the pacts to the real handlers (inbox + handlers, as the worker runs them; the post.created
fan-out asks the real users service of this suite for followers) and keep the committed files
exactly what is defined here; the producers' suites verify them against their real code.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "contracts"))
from event_contracts import ConsumerContract, id_, text

pytestmark = pytest.mark.django_db


class TestEventContracts(ConsumerContract):
    CONSUMER = "feed"
    EXPECTATIONS = {
        "users": [
            ("user.followed", 1, {"follower_id": id_(1001), "followee_id": id_(1002)}),
            ("user.unfollowed", 1, {"follower_id": id_(1001), "followee_id": id_(1002)}),
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
            ("post.created", 1, {"post_id": id_(2001), "author_id": id_(1001)}),
            ("post.deleted", 1, {"post_id": id_(2001)}),
        ],
    }
