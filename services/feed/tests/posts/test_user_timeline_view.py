"""GET /api/v1/posts?author= served by the plain view (posts.user_timeline) and, for what it hands
over, by the DRF view (posts.api.PostListCreateApi): same bytes and headers, one query and no users
call for a cached name, every error still the DRF view's problem, revocation still immediate.
Real users service, Postgres and Redis."""

import gzip
import json

import pytest
from posts import user_timeline
from timelines import api as timelines_api

from shared.pagination import encode_cursor
from shared.testing import QueryCounter, assert_problem
from tests.authors.test_usernames import users_calls, users_then_stopped  # noqa: F401 (a fixture)
from tests.posts.test_api import create

pytestmark = pytest.mark.django_db
PATH = "/api/v1/posts"


@pytest.fixture
def handed_over(count_hand_overs):
    """The requests the plain view hands to the DRF view."""
    return count_hand_overs(user_timeline.posts_list_create)


def both(person, monkeypatch, handed_over, query: dict):
    """The plain view's and the DRF view's answers to the same request, within one second (a
    next_cursor carries its signing time in seconds)."""
    page_of = user_timeline.posts_list_create.page
    for _ in range(3):
        handed_over.clear()
        monkeypatch.setattr(user_timeline.posts_list_create, "page", page_of)
        plain = person.api.get(PATH, query, HTTP_ACCEPT_ENCODING="gzip")
        monkeypatch.setattr(user_timeline.posts_list_create, "page", lambda request, claims: None)  # all to DRF
        drf = person.api.get(PATH, query, HTTP_ACCEPT_ENCODING="gzip")
        assert handed_over == ["GET"], handed_over  # the second request only
        if plain.content == drf.content:
            break
    monkeypatch.setattr(user_timeline.posts_list_create, "page", page_of)
    return plain, drf


def body_of(response) -> dict:
    raw = gzip.decompress(response.content) if response.get("Content-Encoding") == "gzip" else response.content
    return json.loads(raw)


def without_request_id(response) -> dict:
    return {k: v for k, v in response.items() if k != "X-Request-ID"}


@pytest.fixture
def author_with_posts(person, django_capture_on_commit_callbacks):
    """alice's 5 posts (one with U+2028 in its body, which DRF's renderer escapes); bob likes the
    second newest, carol the newest. Returns (alice, bob, ids oldest first)."""
    alice, bob, carol = person("alice"), person("bob"), person("carol")
    ids = [create(alice, f"p{i} ünïcödé \u2028 line 😀").json()["id"] for i in range(5)]
    with django_capture_on_commit_callbacks(execute=True):
        assert bob.api.post(f"/api/v1/posts/{ids[3]}/like").status_code == 201
        assert carol.api.post(f"/api/v1/posts/{ids[4]}/like").status_code == 201
    return alice, bob, ids


@pytest.mark.parametrize("limit", [None, 2, 20])
def test_the_plain_view_answers_with_the_drf_views_bytes_and_headers(author_with_posts, monkeypatch, handed_over, limit):
    alice, bob, ids = author_with_posts
    query = {"author": alice.username} | ({"limit": limit} if limit else {})
    plain, drf = both(bob, monkeypatch, handed_over, query)
    assert plain.status_code == drf.status_code == 200
    assert plain.content == drf.content
    assert without_request_id(plain) == without_request_id(drf)  # Content-Type, Allow, ETag, Vary, gzip …
    page = body_of(plain)
    assert [p["id"] for p in page["results"]] == ids[::-1][: limit or 20]
    assert [(p["like_count"], p["liked_by_me"]) for p in page["results"]][:2] == [(1, False), (1, True)]
    assert page["results"][0]["author"] == alice.summary()
    assert (page["next_cursor"] is None) is (limit != 2)


def test_a_cursor_page_is_the_same_bytes_too(author_with_posts, monkeypatch, handed_over):
    alice, bob, ids = author_with_posts
    first = bob.api.get(PATH, {"author": alice.username, "limit": 2}).json()
    query = {"author": alice.username.upper(), "limit": 2, "cursor": first["next_cursor"]}  # names: any case
    plain, drf = both(bob, monkeypatch, handed_over, query)
    assert plain.status_code == drf.status_code == 200
    assert plain.content == drf.content and without_request_id(plain) == without_request_id(drf)
    page = body_of(plain)
    assert [p["id"] for p in page["results"]] == ids[::-1][2:4] and page["next_cursor"]
    last = bob.api.get(PATH, {"author": alice.username, "limit": 2, "cursor": page["next_cursor"]}).json()
    assert [p["id"] for p in last["results"]] == ids[:1] and last["next_cursor"] is None


def test_an_author_with_no_posts_is_the_same_empty_page(person, monkeypatch, handed_over):
    quiet, reader = person("quiet"), person("reader")
    plain, drf = both(reader, monkeypatch, handed_over, {"author": quiet.username})
    assert plain.status_code == drf.status_code == 200
    assert plain.content == drf.content == b'{"results":[],"next_cursor":null}'
    assert without_request_id(plain) == without_request_id(drf)


def test_a_cached_name_is_one_redis_call_one_query_and_no_users_call(author_with_posts, handed_over, redis_commands):
    alice, bob, ids = author_with_posts
    assert bob.api.get(PATH, {"author": alice.username}).status_code == 200  # the name is cached
    calls = users_calls()
    handed_over.clear()
    redis_commands.clear()
    with QueryCounter() as queries:
        page = bob.api.get(PATH, {"author": alice.username}).json()
    assert [p["id"] for p in page["results"]] == ids[::-1]
    assert len(queries) == 1, [q["sql"] for q in queries]  # the page with liked_by_me
    assert redis_commands == ["EVALSHA"]  # the token's revocation keys and the name, in one script
    assert handed_over == [] and users_calls() == calls


def test_errors_are_the_drf_views_problems(author_with_posts, handed_over):
    alice, bob, ids = author_with_posts
    home_cursor = encode_cursor(int(ids[1]), salt=timelines_api.SALT)  # another list's cursor
    assert_problem(bob.api.get(PATH, {"author": "nobody_at_all_here"}), 404, "not-found")
    assert_problem(bob.api.get(PATH, {"author": "not a name!"}), 404, "not-found")
    assert_problem(bob.api.get(PATH), 400, "validation-error")
    assert_problem(bob.api.get(PATH, {"author": alice.username, "cursor": "garbage"}), 400, "validation-error")
    assert_problem(bob.api.get(PATH, {"author": alice.username, "cursor": home_cursor}), 400, "validation-error")
    assert_problem(bob.api.get(PATH, {"author": alice.username, "limit": 0}), 400, "validation-error")
    assert_problem(bob.api.get(PATH, {"author": alice.username, "limit": "ten"}), 400, "validation-error")
    assert handed_over == ["GET"] * 7
    bob.api.credentials()
    assert_problem(bob.api.get(PATH, {"author": alice.username}), 401, "not-authenticated")
    bob.api.credentials(HTTP_AUTHORIZATION="Bearer not.a.token")
    response = bob.api.get(PATH, {"author": alice.username})
    assert_problem(response, 401, "invalid-token")
    assert response["WWW-Authenticate"] == 'Bearer realm="api", error="invalid_token"'
    bob.api.credentials(HTTP_AUTHORIZATION=f"Bearer {bob.access} extra")
    assert_problem(bob.api.get(PATH, {"author": alice.username}), 401, "invalid-token")
    assert handed_over == ["GET"] * 10


def test_other_methods_go_to_the_drf_view(person, handed_over):
    alice = person("alice")
    created = create(alice, "through the plain view's route")
    assert created.status_code == 201 and created.json()["author"] == alice.summary()
    assert_problem(alice.api.put(PATH, {}), 405, "method-not-allowed")
    head = alice.api.head(PATH, {"author": alice.username})
    assert head.status_code == 200 and head["Allow"] == "GET, POST, HEAD, OPTIONS"
    assert handed_over == ["POST", "PUT", "HEAD"]


def test_a_logged_out_session_is_refused_at_once(person, real_session, handed_over):
    alice, bob = person("alice"), person("bob")
    create(alice, "one")
    handed_over.clear()
    session = real_session(bob)
    assert bob.api.get(PATH, {"author": alice.username}).status_code == 200  # token verified and cached by this process
    assert handed_over == []
    session.logout()
    handed_over.clear()
    response = bob.api.get(PATH, {"author": alice.username})
    assert_problem(response, 401, "invalid-token")
    assert response.json()["detail"] == "token revoked"
    assert handed_over == ["GET"]  # the plain view saw the revocation key; the DRF view refused it


def test_revocation_kept_in_another_redis_is_checked_there(person, settings, handed_over, redis_commands):
    from shared import redis_clients, revocation

    alice, bob = person("alice"), person("bob")
    create(alice, "one")
    settings.REVOCATION_REDIS_URL = settings.REDIS_URL.rsplit("/", 1)[0] + "/13"
    elsewhere = redis_clients.client(settings.REVOCATION_REDIS_URL)
    marker = revocation.USER_KEY.format(bob.id)
    elsewhere.delete(marker)
    try:
        assert bob.api.get(PATH, {"author": alice.username}).status_code == 200
        redis_commands.clear()
        assert bob.api.get(PATH, {"author": alice.username}).status_code == 200
        assert redis_commands == ["EXISTS", "EVALSHA"] and handed_over == ["POST"]  # the create only
        assert revocation.revoke_user(bob.id)  # the account was deleted: every token of the user refused
        assert elsewhere.exists(marker) and not redis_clients.client().exists(marker)
        assert_problem(bob.api.get(PATH, {"author": alice.username}), 401, "invalid-token")
        assert handed_over == ["POST", "GET"]
    finally:
        elsewhere.delete(marker)


def test_a_name_users_cannot_be_asked_about_is_the_drf_views_503(person, users_then_stopped, handed_over):  # noqa: F811
    alice, bob, carol = person("alice"), person("bob"), person("carol")
    create(alice, "kept")
    assert bob.api.get(PATH, {"author": alice.username}).status_code == 200  # bob's token verified; alice's name cached
    users_then_stopped.stop()
    handed_over.clear()
    assert bob.api.get(PATH, {"author": alice.username}).status_code == 200
    assert handed_over == []  # served from the cached name
    assert_problem(bob.api.get(PATH, {"author": carol.username}), 503, "dependency-unavailable")
    assert handed_over == ["GET"]


def test_without_redis_the_drf_view_answers_from_postgres(person, settings, handed_over):
    alice, bob = person("alice"), person("bob")
    posted = create(alice, "one").json()["id"]
    assert bob.api.get(PATH, {"author": alice.username}).status_code == 200  # bob's token verified
    handed_over.clear()
    dead = "redis://127.0.0.1:1/0"
    settings.REDIS_URL = settings.REVOCATION_REDIS_URL = dead
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": dead}}
    response = bob.api.get(PATH, {"author": alice.username})
    assert response.status_code == 200 and [p["id"] for p in response.json()["results"]] == [posted]
    assert handed_over == ["GET"]
