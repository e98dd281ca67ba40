"""GET /api/v1/feed served by the plain view (timelines.home) and, for what it hands over, by the
DRF view (timelines.api.HomeFeedApi): same bytes and headers, one Redis call and no Postgres query
for a warm page, every error still a problem, revocation still immediate. Real users service,
Postgres and Redis."""

import gzip
import json

import pytest
from django.test import override_settings
from feed_service import fastpath
from timelines import home, services, store
from timelines.models import BigAuthorFollow

from shared.testing import QueryCounter, assert_problem
from tests.timelines.test_timelines import fan_out, feed_ids, follow, post

pytestmark = pytest.mark.django_db


@pytest.fixture
def handed_over(count_hand_overs):
    """The requests the plain view hands to the DRF view."""
    return count_hand_overs(home.home_feed)


def warm_reader(person, posts=3, handed_over=None):
    author, fan = person("author"), person("fan")
    fan.follow(author)
    posted = [post(author, f"p{i} ünïcödé \u2028 line") for i in range(posts)]
    for post_id in posted:
        fan_out(post_id)
    feed_ids(fan)  # the DRF view builds the Redis timeline; the post and profile caches are filled
    feed_ids(fan)  # the plain view: the big-followee cache is filled
    if handed_over is not None:
        handed_over.clear()
    return author, fan, posted


def without_request_id(response) -> dict:
    return {k: v for k, v in response.items() if k != "X-Request-ID"}


@pytest.mark.parametrize("query", [{}, {"limit": 2}, {"limit": 5}])
def test_the_plain_view_answers_with_the_drf_views_bytes_and_headers(
    person, monkeypatch, handed_over, query, django_capture_on_commit_callbacks
):
    _, fan, posted = warm_reader(person, handed_over=handed_over)
    with django_capture_on_commit_callbacks(execute=True):
        assert fan.api.post(f"/api/v1/posts/{posted[0]}/like").status_code == 201
    page_of = home.home_feed.page
    for _ in range(3):  # a next_cursor carries its signing time (seconds): both answers within one second
        handed_over.clear()
        monkeypatch.setattr(home.home_feed, "page", page_of)
        plain = fan.api.get("/api/v1/feed", query, HTTP_ACCEPT_ENCODING="gzip")
        monkeypatch.setattr(home.home_feed, "page", lambda request, claims: None)  # everything to the DRF view
        drf = fan.api.get("/api/v1/feed", query, HTTP_ACCEPT_ENCODING="gzip")
        assert handed_over == ["GET"] and plain.status_code == drf.status_code == 200
        if plain.content == drf.content:
            break
    assert plain.content == drf.content
    assert without_request_id(plain) == without_request_id(drf)  # Content-Type, Allow, ETag, Vary, gzip …
    page = json.loads(gzip.decompress(plain.content) if plain.get("Content-Encoding") == "gzip" else plain.content)
    assert [int(p["id"]) for p in page["results"]] == posted[::-1][: query.get("limit", 20)]
    assert page["results"][-1]["liked_by_me"] is (len(page["results"]) == 3)
    assert (page["next_cursor"] is None) is ("limit" not in query or query["limit"] >= 3)


def test_a_warm_page_is_one_redis_call_and_no_query(person, handed_over, redis_commands, django_capture_on_commit_callbacks):
    author, fan, posted = warm_reader(person, handed_over=handed_over)
    redis_commands.clear()
    with QueryCounter() as queries:
        page = fan.api.get("/api/v1/feed").json()
    assert [int(p["id"]) for p in page["results"]] == posted[::-1]
    assert page["results"][0]["author"] == author.summary()
    assert [q["sql"] for q in queries] == []  # nobody likes these posts: no liked_by_me query either
    assert redis_commands == ["EVALSHA"] and handed_over == []  # revocation, page, posts, profiles, big followees
    other = person("other")
    with django_capture_on_commit_callbacks(execute=True):  # the likes' commits: the post cache forgets them
        assert other.api.post(f"/api/v1/posts/{posted[1]}/like").status_code == 201
        assert fan.api.post(f"/api/v1/posts/{posted[0]}/like").status_code == 201
    with QueryCounter() as queries:
        page = fan.api.get("/api/v1/feed").json()
    assert len(queries) == 2, [q["sql"] for q in queries]  # the two liked posts' rows (post cache forgot them), liked_by_me
    assert [(p["like_count"], p["liked_by_me"]) for p in page["results"]] == [(0, False), (1, False), (1, True)]


def test_errors_are_the_drf_views_problems(person, handed_over):
    _, fan, _ = warm_reader(person, handed_over=handed_over)
    assert_problem(fan.api.get("/api/v1/feed?cursor=garbage"), 400, "validation-error")
    assert_problem(fan.api.get("/api/v1/feed?limit=0"), 400, "validation-error")
    fan.api.credentials()
    assert_problem(fan.api.get("/api/v1/feed"), 401, "not-authenticated")
    fan.api.credentials(HTTP_AUTHORIZATION="Bearer not.a.token")
    response = fan.api.get("/api/v1/feed")
    assert_problem(response, 401, "invalid-token")
    assert response["WWW-Authenticate"] == 'Bearer realm="api", error="invalid_token"'
    fan.api.credentials(HTTP_AUTHORIZATION=f"Bearer {fan.access} extra")
    assert_problem(fan.api.get("/api/v1/feed"), 401, "invalid-token")
    assert handed_over == ["GET"] * 5
    fan.api.credentials(HTTP_AUTHORIZATION=f"Bearer {fan.access}")
    assert_problem(fan.api.post("/api/v1/feed"), 405, "method-not-allowed")
    head = fan.api.head("/api/v1/feed")
    assert head.status_code == 200 and head["Allow"] == "GET, HEAD, OPTIONS"
    assert handed_over[-2:] == ["POST", "HEAD"]


def test_a_logged_out_session_is_refused_at_once(person, real_session, handed_over):
    _, fan, _ = warm_reader(person, handed_over=handed_over)
    session = real_session(fan)
    assert fan.api.get("/api/v1/feed").status_code == 200  # token verified and cached by this process
    assert handed_over == []
    session.logout()
    handed_over.clear()
    response = fan.api.get("/api/v1/feed")
    assert_problem(response, 401, "invalid-token")
    assert response.json()["detail"] == "token revoked"
    assert handed_over == ["GET"]  # the script saw the revocation key; the DRF view refused it


def test_a_cold_timeline_is_rebuilt_by_the_drf_view_then_served_plain(person, handed_over):
    _, fan, posted = warm_reader(person, handed_over=handed_over)
    store.drop(user_id=fan.id)
    assert feed_ids(fan) == posted[::-1] and handed_over == ["GET"]
    assert feed_ids(fan) == posted[::-1] and handed_over == ["GET"]


@override_settings(FANOUT_MAX_FOLLOWERS=0)
def test_big_followees_are_cached_and_every_change_is_seen_at_once(person, handed_over):
    star, other, fan = person("star"), person("other"), person("fan")
    feed_ids(fan)  # the DRF view builds the timeline
    feed_ids(fan)
    assert store.client().get(store.big_key(fan.id)) == b""  # filled by the plain view: follows no big author
    handed_over.clear()
    follow(fan, star)  # 1 > 0 followers: big, merged at read
    assert store.client().get(store.big_key(fan.id)) == store.DIRTY
    posted = [post(star, f"s{i}") for i in range(3)]
    assert feed_ids(fan) == posted[::-1]
    assert store.client().get(store.big_key(fan.id)) == store.DIRTY  # read from Postgres, not filled over the mark
    store.client().delete(store.big_key(fan.id))  # the mark expired
    assert feed_ids(fan) == posted[::-1]
    assert store.client().get(store.big_key(fan.id)) == str(star.id).encode()
    with QueryCounter() as queries:
        assert feed_ids(fan) == posted[::-1]
    assert len(queries) == 1, [q["sql"] for q in queries]  # the merge only: the big followees came from Redis
    follow(fan, other)
    other_post = post(other)
    assert feed_ids(fan) == [other_post, *posted[::-1]]
    store.client().delete(store.big_key(fan.id))
    feed_ids(fan)
    assert set(store.client().get(store.big_key(fan.id)).split(b",")) == {str(star.id).encode(), str(other.id).encode()}
    fan.unfollow(star)
    services.unfollow_apply(follower_id=fan.id, followee_id=star.id)
    assert feed_ids(fan) == [other_post]  # no post of the unfollowed star, at once
    assert handed_over == []


@override_settings(FANOUT_MAX_FOLLOWERS=0)
def test_a_fill_that_read_before_a_change_cannot_land_after_it(person):
    star, fan = person("star"), person("fan")
    assert store.client().get(store.big_key(fan.id)) is None
    stale = list(BigAuthorFollow.objects.filter(user_id=fan.id).values_list("author_id", flat=True))  # a read's query
    follow(fan, star)  # the change commits and marks the key
    store.big_followees_fill(user_id=fan.id, author_ids=stale)  # that read's fill, late
    assert store.client().get(store.big_key(fan.id)) == store.DIRTY
    star_post = post(star)
    assert feed_ids(fan) == [star_post]


def test_profiles_come_with_the_page_and_a_profile_update_shows_at_once(person, redis_commands):
    from authors.selectors import author_cache_put

    from shared.users_api import UserSummary

    author, fan, _ = warm_reader(person, posts=1)
    author_cache_put(summary=UserSummary(id=author.id, username=author.username, display_name="Renamed", avatar_url=""))
    redis_commands.clear()
    page = fan.api.get("/api/v1/feed").json()
    assert page["results"][0]["author"]["display_name"] == "Renamed"
    assert redis_commands == ["EVALSHA"]
    raw = store.client().get(f"profile:v2:{author.id}")
    assert json.loads(raw) == {**author.summary(), "display_name": "Renamed"}


def test_revocation_kept_in_another_redis_is_checked_there(person, settings, handed_over):
    from shared import redis_clients, revocation

    _, fan, _ = warm_reader(person, handed_over=handed_over)
    settings.REVOCATION_REDIS_URL = settings.REDIS_URL.rsplit("/", 1)[0] + "/13"
    elsewhere = redis_clients.client(settings.REVOCATION_REDIS_URL)
    marker = revocation.USER_KEY.format(fan.id)
    elsewhere.delete(marker)
    try:
        assert fan.api.get("/api/v1/feed").status_code == 200 and handed_over == []
        assert revocation.revoke_user(fan.id)  # the account was deleted: every token of the user refused
        assert elsewhere.exists(marker) and not store.client().exists(marker)
        assert_problem(fan.api.get("/api/v1/feed"), 401, "invalid-token")
        assert handed_over == ["GET"]
    finally:
        elsewhere.delete(marker)


@pytest.mark.parametrize(
    "text",
    ["plain", "ünïcödé and 😀", "line\u2028and\u2029para", 'quotes " and \\ backslash / slash', "ctl \t\n\r\b\f \x01\x1f \x7f"],
)
def test_the_plain_view_writes_json_as_drfs_renderer(text):
    from rest_framework.renderers import JSONRenderer

    body = {
        "results": [{"id": "1", "body": text, "mentions": [text], "like_count": 2**40, "liked_by_me": False}],
        "next_cursor": None,
    }
    assert fastpath.render(body) == JSONRenderer().render(body)
