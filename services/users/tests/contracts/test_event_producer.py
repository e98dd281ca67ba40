"""users as a producer: every consumer's message contract (contracts/messages/*-users.json) verified
against the envelopes users' real code makes. Each scenario runs the service function a request
would (registration, follow, unfollow, profile update, account deletion: the code that builds the
payload and publishes it), takes the outbox row it wrote, and wraps it exactly as the relay does
(`Relay._envelope`). A consumer relying on a field users stops sending, or on a type or version
users does not produce, fails this suite, before users ships."""

import sys
from pathlib import Path

import pytest
from accounts import services as account_services
from follows import services as follow_services

from shared.events.models import OutboxEvent
from shared.events.relay import Relay
from tests.conftest import PASSWORD

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "contracts"))
from event_contracts import record_producer_verification, sources, verify_producer

pytestmark = pytest.mark.django_db


def relayed(type_: str) -> dict:
    from users_service.celery import app

    return Relay(app)._envelope(OutboxEvent.objects.filter(type=type_).latest("seq"))


@pytest.fixture
def scenarios(make_user):
    def registered():
        make_user("contract_reg")
        return relayed("user.registered")

    def followed():
        follower, _ = make_user("contract_fan")
        followee, _ = make_user("contract_star")
        follow_services.follow_create(follower_id=follower.id, followee_username=followee.username)
        return relayed("user.followed")

    def unfollowed():
        follower, _ = make_user("contract_ex")
        followee, _ = make_user("contract_was")
        follow_services.follow_create(follower_id=follower.id, followee_username=followee.username)
        follow_services.follow_delete(follower_id=follower.id, followee_username=followee.username)
        return relayed("user.unfollowed")

    def updated():
        user, _ = make_user("contract_upd")
        account_services.user_update(user_id=user.id, display_name="Contract Person", avatar_url="https://img.example/c.png")
        return relayed("user.updated")

    def deleted():
        user, _ = make_user("contract_del")
        account_services.user_delete(user_id=user.id, password=PASSWORD)
        return relayed("user.deleted")

    return {
        ("user.registered", 1): registered,
        ("user.followed", 1): followed,
        ("user.unfollowed", 1): unfollowed,
        ("user.updated", 1): updated,
        ("user.deleted", 1): deleted,
    }


def test_every_consumer_message_contract_is_met_by_users_real_events(scenarios):
    assert [p.name for p in sources("users")] == ["feed-users.json", "notifications-users.json"]
    verified = verify_producer("users", scenarios)
    record_producer_verification("users")
    assert {"user.followed v1", "user.unfollowed v1", "user.updated v1", "user.deleted v1"} <= set(verified)


def test_a_producer_that_drops_a_field_a_consumer_reads_fails_verification(scenarios):
    """The verification is not vacuous: the same check with user.followed missing followee_id fails."""
    real = scenarios[("user.followed", 1)]

    def broken():
        envelope = real()
        envelope["data"].pop("followee_id")
        return envelope

    with pytest.raises(AssertionError, match=r"(?s)does not meet its consumers' message contracts.*followee_id"):
        verify_producer("users", {**scenarios, ("user.followed", 1): broken})
