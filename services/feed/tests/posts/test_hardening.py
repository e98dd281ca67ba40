"""Hostile input from a security probe (issue 13): it gets a 400 problem and writes nothing."""

import pytest
from posts.models import Like, Post

from shared.testing import assert_problem

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("body", ["[" * 1000, '{"body":' * 1000, "[" * 60_000])
def test_deeply_nested_json_is_a_400_problem(person, body):
    alice = person("alice")
    response = alice.api.post("/api/v1/posts", data=body, content_type="application/json")
    assert_problem(response, 400, "malformed-request")
    assert Post.objects.count() == 0 and Like.objects.count() == 0


def test_every_response_is_nosniff(person, api_client):
    alice = person("alice")
    for response in (alice.api.get("/api/v1/feed"), alice.api.post("/api/v1/posts", {"body": "hi"}, format="json"),
                     api_client.get("/api/v1/feed"), api_client.get("/no/such/url")):
        assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("body", ["\u200b", "\u200b\u200c\u200d\u2060\ufeff", " \u3164 ", "\u2800\u2800", "\u0301",
                                  "\u202e\u202c"])
def test_a_post_of_only_invisible_characters_is_refused(person, body):
    alice = person("alice")
    response = alice.api.post("/api/v1/posts", {"body": body}, format="json")
    problem = assert_problem(response, 400, "validation-error")
    assert list(problem["errors"]) == ["body"]
    assert Post.objects.count() == 0


def test_a_post_with_visible_text_among_zero_width_characters_is_kept(person):
    alice = person("alice")
    assert alice.api.post("/api/v1/posts", {"body": "hi\u200b"}, format="json").status_code == 201
