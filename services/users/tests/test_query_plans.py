"""Every hot query is served by an index: the plan names it (sequential scans discouraged, as a
big table would make the planner do)."""

import pytest
from accounts.models import RefreshToken, User
from django.db.models.functions import Lower
from follows.models import Follow

from shared.testing import explain

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("name", "queryset", "index"),
    [
        ("user by username", lambda: User.objects.alias(u=Lower("username")).filter(u="alice"), "user_username_ci_uniq"),
        ("user by email", lambda: User.objects.alias(e=Lower("email")).filter(e="a@example.com"), "user_email_ci_uniq"),
        ("users by usernames", lambda: User.objects.alias(u=Lower("username")).filter(u__in=["a", "b"]), "user_username_ci_uniq"),
        ("users by ids", lambda: User.objects.filter(id__in=[1, 2, 3]), "accounts_user_pkey"),
        ("refresh token by hash", lambda: RefreshToken.objects.filter(token_hash="ab" * 32), "token_hash"),
        (
            "refresh family",
            lambda: RefreshToken.objects.filter(family="00000000-0000-0000-0000-000000000000"),
            "refresh_family_idx",
        ),
        (
            "followers page",
            lambda: Follow.objects.filter(followee_id=1, id__lt=100).order_by("-id")[:21],
            "follow_followee_id_idx",
        ),
        (
            "following page",
            lambda: Follow.objects.filter(follower_id=1, id__lt=100).order_by("-id")[:21],
            "follow_follower_id_idx",
        ),
        (
            "is following",
            lambda: Follow.objects.filter(follower_id=1, followee_id=2),
            ("follow_pair_uniq", "follow_followee_follower_idx"),
        ),
        (
            "follower ids for fan-out",
            lambda: (
                Follow.objects.filter(followee_id=1, follower_id__gt=5)
                .order_by("follower_id")
                .values_list("follower_id", flat=True)[:1001]
            ),
            "follow_followee_follower_idx",
        ),
    ],
)
def test_hot_query_uses_index(name, queryset, index):
    plan = explain(queryset())
    assert any(i in plan for i in ((index,) if isinstance(index, str) else index)), f"{name}:\n{plan}"
    assert "Seq Scan" not in plan, f"{name}:\n{plan}"
