"""The feed service's OpenAPI schema: generated without a warning, complete, and true.

`test_api_conforms` is schemathesis fuzzing every documented operation in-process against the real
database and Redis, as a user registered with the real users service (real access token; authors
and mentions resolved through it): no 5xx, and every status code, content type and body as
documented. Each operation's examples run inside one test transaction, rolled back.
"""

import pytest
from django.core.wsgi import get_wsgi_application

from shared.fuzzing import documented_schema, documented_shapes, fuzz_call, fuzz_settings, load_schema, served_shapes


def test_schema_generates_without_warnings_and_documents_every_route():
    schema = documented_schema("feed")
    timeline = schema["paths"]["/api/v1/posts"]["get"]
    assert {p["name"]: p.get("required", False) for p in timeline["parameters"]} == {
        "author": True,
        "cursor": False,
        "limit": False,
    }
    post = schema["components"]["schemas"]["Post"]
    assert set(post["required"]) == {"id", "author", "body", "mentions", "like_count", "liked_by_me", "created_at"}


def test_schema_is_served(api_client):
    assert served_shapes(api_client) == documented_shapes("feed")


# loaded from the service's own /api/schema/ endpoint, through the WSGI application under test
schema = load_schema(get_wsgi_application())


@pytest.fixture
def fuzz_user(person, db):
    """A registered user who follows someone, with posts (one mentioning them) and a like to page through."""
    me, other = person("fuzz"), person("other")
    me.follow(other)
    other.api.post("/api/v1/posts", {"body": f"hello @{me.username}"}, format="json")
    mine = me.api.post("/api/v1/posts", {"body": "my own post"}, format="json").json()
    other.api.post(f"/api/v1/posts/{mine['id']}/like")
    return me.access


@schema.parametrize()
@fuzz_settings()
def test_api_conforms(case, fuzz_user):
    fuzz_call(case, fuzz_user)
