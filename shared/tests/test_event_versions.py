"""Event versions in the catalogue: the newest is what `publish(type, data)` writes; a replaced one in
PREVIOUS stays publishable beside it by number (docs/events.md#evolving-an-event); any other is an
error, never a guess. Publishing two versions in one transaction and their routing by version run
with real processes in tests/test_event_subscriptions.py."""

import pytest

from shared.events import catalogue
from shared.events.catalogue import CATALOGUE, PREVIOUS, VERSIONS, EventSchemaError, EventType, validate_data

V1 = {"post_id": "1", "author_id": "2", "mentioned_user_ids": [], "created_at": "2026-12-02T03:00:00Z"}


def test_every_version_is_in_versions_and_the_newest_is_the_default():
    assert set(VERSIONS) == {(s.type, s.version) for s in [*CATALOGUE.values(), *PREVIOUS]}
    assert validate_data("post.created", V1) is CATALOGUE["post.created"]
    assert validate_data("post.created", V1, CATALOGUE["post.created"].version) is CATALOGUE["post.created"]


def test_a_version_nobody_publishes_is_refused():
    with pytest.raises(EventSchemaError, match=r"post\.created v7 is not published \(newest: v1"):
        validate_data("post.created", V1, 7)
    with pytest.raises(EventSchemaError, match=r"unknown event type 'post\.made'"):
        validate_data("post.made", V1, 1)


def test_a_version_beside_the_newest_is_validated_against_its_own_fields(monkeypatch):
    v2 = EventType("post.created", 2, "feed", {**CATALOGUE["post.created"].fields, "mentioned_ids": "ids"}, "renamed")
    del v2.fields["mentioned_user_ids"]
    monkeypatch.setitem(VERSIONS, ("post.created", 2), v2)
    renamed = {**{k: v for k, v in V1.items() if k != "mentioned_user_ids"}, "mentioned_ids": ["3"]}
    assert validate_data("post.created", renamed, 2) is v2
    with pytest.raises(EventSchemaError, match=r"missing fields \['mentioned_ids'\]"):
        validate_data("post.created", V1, 2)
    with pytest.raises(EventSchemaError, match=r"missing fields \['mentioned_user_ids'\]"):
        validate_data("post.created", renamed)  # v1, the default, still has its own fields
    assert "| `post.created` | 2 | feed |" in catalogue.render_markdown()
