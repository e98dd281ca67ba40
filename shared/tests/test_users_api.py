"""shared.users_api: the one client, data types and rules of users' internal API (owned by users)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.users_api import (
    MAX_MENTIONS,
    USERNAME_MAX_LENGTH,
    USERNAME_PATTERN,
    UserSummary,
    is_username,
    mention_candidates,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("bob", True),
        ("a_1", True),
        ("x" * USERNAME_MAX_LENGTH, True),
        ("ab", False),
        ("x" * (USERNAME_MAX_LENGTH + 1), False),
        ("bob!", False),
        ("bøb", False),
        ("bob\n", False),
        ("", False),
    ],
)
def test_the_username_rule(value, ok):
    assert is_username(value) is ok
    assert (re.fullmatch(USERNAME_PATTERN, value) is not None) is ok  # the OpenAPI form says the same


def test_mentions_follow_the_username_rule():
    body = "hi @Alice and @alice, @bo, mail a@b.com, @" + "x" * 31 + " and @carol!"
    assert mention_candidates(body) == ["Alice", "carol"]
    assert len(mention_candidates(" ".join(f"@user{i:03}" for i in range(MAX_MENTIONS + 5)))) == MAX_MENTIONS


def test_user_summary_ids_are_ints_inside_and_strings_in_public():
    summary = UserSummary.from_json({"id": "42", "username": "ann", "display_name": "Ann", "avatar_url": ""})
    assert summary.id == 42
    assert UserSummary(**summary.as_dict()) == summary
    assert summary.public() == {"id": "42", "username": "ann", "display_name": "Ann", "avatar_url": ""}


def test_the_username_rule_is_written_once():
    """No other copy of the rule in the services or shared: they import it from shared.users_api."""
    copies = []
    for path in [*(ROOT / "services").rglob("*.py"), *(ROOT / "shared" / "src").rglob("*.py")]:
        if "users_api" in path.parts or "migrations" in path.parts or "tests" in path.parts:
            continue
        text = path.read_text()
        if re.search(r"A-Za-z0-9_\]\{", text) or re.search(r"max_length=30\b", text):
            copies.append(str(path.relative_to(ROOT)))
    assert copies == []
