"""feed as a producer: every consumer's message contract (contracts/messages/*-feed.json, feed's
own included) verified against the envelopes feed's real code makes. Each scenario runs the
service function a request would (posts.services: post_create with a mention resolved by the real
users service of this suite, like_create, post_delete, which build their payloads through
posts.events), takes the outbox row it wrote and wraps it exactly as the relay does."""

import json
import sys
from pathlib import Path

import pytest
from posts import services

from shared.events.models import OutboxEvent
from shared.events.relay import Relay

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "contracts"))
from event_contracts import record_producer_verification, sources, verify_producer

pytestmark = pytest.mark.django_db


def relayed(type_: str) -> dict:
    from feed_service.celery import app

    return Relay(app)._envelope(OutboxEvent.objects.filter(type=type_).latest("seq"))


@pytest.fixture
def scenarios(person):
    author, fan = person("author"), person("fan")

    def created():
        services.post_create(author_id=author.id, body=f"contract test for @{fan.username}")
        return relayed("post.created")

    def liked():
        post = services.post_create(author_id=author.id, body="to be liked")
        services.like_create(post_id=post.id, user_id=fan.id)
        return relayed("post.liked")

    def deleted():
        post = services.post_create(author_id=author.id, body="to be deleted")
        services.post_delete(post_id=post.id, user_id=author.id)
        return relayed("post.deleted")

    return {("post.created", 1): created, ("post.liked", 1): liked, ("post.deleted", 1): deleted}


def test_every_consumer_message_contract_is_met_by_feeds_real_events(scenarios):
    assert [p.name for p in sources("feed")] == ["feed-feed.json", "notifications-feed.json"]
    verified = verify_producer("feed", scenarios)
    record_producer_verification("feed")
    assert set(verified) == {"post.created v1", "post.liked v1", "post.deleted v1"}
    created = scenarios[("post.created", 1)]()
    assert created["data"]["mentioned_user_ids"]  # the contract's list matcher was checked on a real mention


def test_a_producer_that_renames_a_field_a_consumer_reads_fails_verification(scenarios):
    real = scenarios[("post.created", 1)]

    def renamed():
        envelope = real()
        envelope["data"]["mentioned_ids"] = envelope["data"].pop("mentioned_user_ids")
        return envelope

    with pytest.raises(AssertionError, match=r"(?s)does not meet its consumers' message contracts.*mentioned_user_ids"):
        verify_producer("feed", {**scenarios, ("post.created", 1): renamed})


def test_a_deployed_consumers_message_contract_is_verified_too(scenarios):
    """A consumer recorded as deployed keeps the message pact of its release (broker.deployed_contracts_for):
    feed's verification replays it besides the working tree's, so a field only the deployed release
    still reads cannot be dropped while it runs."""
    released = json.loads(sources("feed")[1].read_text())  # notifications-feed.json
    assert released["consumer"]["name"] == "notifications"
    for interaction in released["interactions"]:
        if interaction["description"] == "post.created v1":
            interaction["contents"]["content"]["data"]["retired_field"] = "only the deployed release reads it"
    deployed = [("notifications-1.0.0-production", json.dumps(released))]
    with pytest.raises(AssertionError, match=r"(?s)does not meet its consumers' message contracts.*retired_field"):
        verify_producer("feed", scenarios, deployed=deployed)
    assert verify_producer("feed", scenarios, deployed=[]) == ["post.created v1", "post.deleted v1", "post.liked v1"]
