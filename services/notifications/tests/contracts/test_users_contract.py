"""notifications → users: the one internal API call notifications makes (actor profiles, through
`shared.users_api.UsersClient`), driven through its real code path `notifications.actors.actor_profiles`
(Redis cache in front, degrade to unknown actors) against the Pact mock server.

`test_committed_pact_is_current` builds the whole pact from the same definitions and requires
contracts/pacts/notifications-users.json to be exactly it (PACT_UPDATE=1 rewrites it); users' suite
verifies that committed file. Matchers stand for what notifications does not care about; literal
values are kept where it relies on them (an empty `results` for ids that are gone)."""

import pytest
from django.core.cache import cache
from notifications.actors import actor_profiles, unknown_actor, users_client
from pact import Pact, match
from pact_files import assert_committed

from shared.http import DownstreamHTTPError
from shared.users_api import UserSummary

DIGITS = r"^\d+$"
ID_LIST = r"^\d+(,\d+)*$"
# The service credential: a signed JWT (header.claims.signature); the example is not a valid token
SERVICE_TOKEN = match.regex(
    "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6InN2Yytqd3QifQ.eyJpc3MiOiJub3RpZmljYXRpb25zIn0.c2lnbmF0dXJl",
    regex=r"^Bearer [A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
)
JSON = "application/json"


def batch(pact: Pact, description: str, ids_example: str):
    return (
        pact.upon_receiving(description)
        .with_request("GET", "/internal/v1/users")
        .with_header("Authorization", SERVICE_TOKEN)
        .with_query_parameter("ids", match.regex(ids_example, regex=ID_LIST))
    )


# ------------------------------------------------------------------------------------ interactions


def batch_some_exist(pact: Pact) -> None:
    (
        batch(pact, "a batch profile lookup for ids of which some exist", "1001,1002,999999")
        .given("users exist", users=[{"id": 1001, "username": "alice"}, {"id": 1002, "username": "bob"}])
        .given("no users have these ids", ids=[999999])
        .will_respond_with(200)
        # exactly the two that exist: an id that is gone is left out, not answered with an error
        .with_body(
            {
                "results": match.like(
                    [
                        {
                            "id": match.regex("1001", regex=DIGITS),
                            "username": match.str("alice"),
                            "display_name": match.str("Alice"),
                            "avatar_url": match.str("https://img.example/alice.png"),
                        },
                        {
                            "id": "1002",
                            "username": "bob",
                            "display_name": "Bob",
                            "avatar_url": "",
                        },  # the rules above hold for [*]
                    ],
                    min=2,
                    max=2,
                )
            },
            content_type=JSON,
        )
    )


def batch_none_exist(pact: Pact) -> None:
    (
        batch(pact, "a batch profile lookup for ids none of which exist", "999998,999999")
        .given("no users have these ids", ids=[999998, 999999])
        .will_respond_with(200)
        .with_body({"results": []}, content_type=JSON)
    )


def credential_refused(pact: Pact) -> None:
    (
        batch(pact, "a batch profile lookup with a service credential users does not accept", "1001")
        .given("the caller's service credential is not accepted")
        .will_respond_with(401)
    )


INTERACTIONS = [batch_some_exist, batch_none_exist, credential_refused]


# ------------------------------------------------------------------------------------------- tests


def test_actor_profiles_fetch_the_missing_and_mark_unknown_ids(users_mock):
    with users_mock(batch_some_exist):
        actors = actor_profiles(ids=[1002, 999999, 1001])
    assert actors == {
        1001: UserSummary(id=1001, username="alice", display_name="Alice", avatar_url="https://img.example/alice.png"),
        1002: UserSummary(id=1002, username="bob", display_name="Bob", avatar_url=""),
        999999: unknown_actor(999999),
    }
    assert cache.get("actor:v2:1001") == actors[1001].as_dict()  # what users answered is cached; the unknown id is not
    assert cache.get("actor:v2:999999") is None


def test_actors_that_are_gone_render_as_unknown(users_mock):
    with users_mock(batch_none_exist):
        actors = actor_profiles(ids=[999999, 999998])
    assert actors == {999998: unknown_actor(999998), 999999: unknown_actor(999999)}


def test_refused_credential_is_a_client_error_and_actors_degrade(users_mock):
    with users_mock(credential_refused):
        with pytest.raises(DownstreamHTTPError) as refused:
            users_client().summaries([1001])
        actors = actor_profiles(ids=[1001])
    assert refused.value.status == 401
    assert actors == {1001: unknown_actor(1001)}


def test_committed_pact_is_current():
    pact = Pact("notifications", "users")
    for define in INTERACTIONS:
        define(pact)
    assert_committed(pact)  # raises AssertionError with the diff when they differ
