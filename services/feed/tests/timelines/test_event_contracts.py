"""feed's contracts for the events it consumes (contracts/messages/feed-<producer>.json): users'
follow and profile events, and its own post events (fan-out and removal ride on the outbox too).

Each `expect` lists only the fields feed's handlers read. The pacts are fed to the real handlers
(inbox + handlers, as the worker runs them; the post.created fan-out asks the real users service
of this suite for followers); `test_committed_message_pacts_are_current` keeps the committed files
exactly what is defined here, and the producers' suites verify them against their real code.
"""

import json
import sys
from pathlib import Path

import pytest
from django.utils import timezone

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "contracts"))
from event_contracts import examples, expect, id_, message_pact, oldest_versions, text, with_unknown_fields
from pact_files import MESSAGE_DIR, assert_committed

from shared.events.inbox import registered
from shared.events.models import InboxEvent

pytestmark = pytest.mark.django_db

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


def build(producer: str):
    pact = message_pact(CONSUMER, producer)
    for type_, version, data in EXPECTATIONS[producer]:
        expect(pact, type_, version, data)
    return pact


@pytest.fixture
def handle(django_capture_on_commit_callbacks):
    """The worker's path for one message body: inbox + handlers in one transaction, commit hooks run."""
    from shared.events.inbox import dispatch

    def run(body) -> bool:
        envelope = json.loads(body) if isinstance(body, str | bytes) else body
        # the contract takes any UTC time; the example's fixed date is outside the tables' partitions
        envelope["occurred_at"] = timezone.now().isoformat()
        with django_capture_on_commit_callbacks(execute=True):
            applied = dispatch(envelope)
        assert applied, f"{envelope['type']} was not applied"
        return applied

    return run


@pytest.mark.parametrize("producer", sorted(EXPECTATIONS))
def test_committed_message_pacts_are_current(producer):
    assert_committed(build(producer), MESSAGE_DIR)


@pytest.mark.parametrize("producer", sorted(EXPECTATIONS))
def test_the_handlers_accept_every_message_of_the_contract(producer, handle):
    build(producer).verify(lambda body, _metadata: handle(body), "Async")
    assert InboxEvent.objects.count() == len(EXPECTATIONS[producer])


def test_every_subscription_has_a_contract():
    covered = {(type_, version) for items in EXPECTATIONS.values() for type_, version, _ in items}
    assert covered == registered()


def test_unknown_fields_are_ignored(handle):
    for producer in EXPECTATIONS:
        for body in examples(build(producer)).values():
            handle(with_unknown_fields(body))


def test_the_oldest_declared_version_of_each_event_is_handled(handle):
    bodies = {name: body for producer in EXPECTATIONS for name, body in examples(build(producer)).items()}
    for type_, version in sorted(oldest_versions(registered()).items()):
        body = bodies[f"{type_} v{version}"]
        assert body["version"] == version
        handle(body)
