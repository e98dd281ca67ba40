"""The notifications service's OpenAPI schema: generated without a warning, complete, and true.

`test_api_conforms` is schemathesis fuzzing every documented operation in-process against the real
database and Redis, as a user registered with the real users service (real access token, actor
profiles fetched from it): no 5xx, and every status code, content type and body as documented.
Each operation's examples run inside one test transaction, rolled back.
"""

import pytest
from django.core.wsgi import get_wsgi_application

from shared.fuzzing import documented_schema, documented_shapes, fuzz_call, fuzz_settings, load_schema, served_shapes
from shared.openapi import ID_PATTERN
from shared.testing import assert_problem


def test_schema_generates_without_warnings_and_documents_every_route():
    schema = documented_schema("notifications")
    listing = schema["paths"]["/api/v1/notifications"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"cursor", "limit", "unread"}
    page = listing["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(schema["components"]["schemas"][page]["required"]) == {"results", "next_cursor"}
    notification = schema["components"]["schemas"]["Notification"]["properties"]
    assert notification["id"]["pattern"] == notification["post_id"]["pattern"] == ID_PATTERN


def test_schema_is_served(api_client):
    assert served_shapes(api_client) == documented_shapes("notifications")


# loaded from the service's own /api/schema/ endpoint, through the WSGI application under test
schema = load_schema(get_wsgi_application())


@pytest.fixture
def fuzz_user(register, deliver, db):
    """A registered user with one notification of each kind, so the list renders real rows and actors."""
    me, fan = register("fuzz"), register("fan")
    deliver("user.followed", {"follower_id": str(fan.id), "followee_id": str(me.id)})
    deliver("user.followed", {"follower_id": "987654321", "followee_id": str(me.id)})  # an actor that is gone
    deliver("post.liked", {"liker_id": str(fan.id), "author_id": str(me.id), "post_id": "77"})
    deliver("post.created", {"author_id": str(fan.id), "post_id": "78", "mentioned_user_ids": [str(me.id)]})
    return me.access


@schema.parametrize()
@fuzz_settings()
def test_api_conforms(case, fuzz_user):
    fuzz_call(case, fuzz_user)


def test_mark_read_takes_ids_only_in_their_canonical_form(fuzz_user, api_client):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {fuzz_user}")
    for ids in (["007"], ["0"], [str(2**63)], [True]):
        response = api_client.post("/api/v1/notifications/read", {"ids": ids}, format="json")
        assert_problem(response, 400, "validation-error")
        assert response.json()["errors"] == {"ids.0": ["Must be an id (a decimal string)."]}, ids
    assert api_client.post("/api/v1/notifications/read", {"ids": ["7", 8]}, format="json").status_code == 204
