"""feed → users: the internal API calls feed makes, as feed's own client makes them.

Each test serves some interactions from the Pact mock server and drives feed's real code
(`authors.client.UsersClient`, `authors.selectors.authors_by_ids`) against it; leaving the mock
fails the test unless every interaction was requested as declared. `test_committed_pact_is_current`
builds the whole pact from the same definitions and requires contracts/pacts/feed-users.json to be
exactly it (PACT_UPDATE=1 rewrites it), and users' suite verifies that committed file.

Matchers stand for what feed does not care about (which ids, which names, which avatar); literal
values are kept where feed relies on them (an empty `results`, a null `next_after`, the cursor it
echoes back, the case-insensitive username match)."""

import pytest
from authors.client import FollowerIdsPage, UserSummary, users_client
from authors.selectors import authors_by_ids, placeholder
from pact import Pact, match
from pact_files import assert_committed

from shared.http import DownstreamHTTPError

DIGITS = r"^\d+$"
# The service credential: a signed JWT (header.claims.signature); the example is not a valid token
SERVICE_TOKEN = match.regex(
    "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6InN2Yytqd3QifQ.eyJpc3MiOiJmZWVkIn0.c2lnbmF0dXJl",
    regex=r"^Bearer [A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
)
JSON = "application/json"


def each(first: object, *more: object) -> object:
    """An array of at least one item, each matching the matchers in `first` (pact records them for
    `[*]`); the `more` examples only show what a longer answer looks like."""
    return match.like([first, *more], min=1)


def profile(user_id: int, username: str, display_name: str, avatar_url: str) -> dict:
    return {
        "id": match.regex(str(user_id), regex=DIGITS),
        "username": match.str(username),
        "display_name": match.str(display_name),
        "avatar_url": match.str(avatar_url),
    }


def internal_get(pact: Pact, description: str, path: str):
    return pact.upon_receiving(description).with_request("GET", path).with_header("Authorization", SERVICE_TOKEN)


# ------------------------------------------------------------------------------------ interactions


def batch_some_exist(pact: Pact) -> None:
    (
        internal_get(pact, "a batch profile lookup for ids of which some exist", "/internal/v1/users")
        .given("users exist", users=[{"id": 1001, "username": "alice"}, {"id": 1002, "username": "bob"}])
        .given("no users have these ids", ids=[999999])
        .with_query_parameter("ids", match.regex("1001,1002,999999", regex=r"^\d+(,\d+)*$"))
        .will_respond_with(200)
        # exactly the two that exist: an unknown id is left out, not answered with a placeholder or an error
        .with_body(
            {
                "results": match.like(
                    [
                        profile(1001, "alice", "Alice", "https://img.example/alice.png"),
                        {"id": "1002", "username": "bob", "display_name": "Bob", "avatar_url": ""},
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
        internal_get(pact, "a batch profile lookup for ids none of which exist", "/internal/v1/users")
        .given("no users have these ids", ids=[999998, 999999])
        .with_query_parameter("ids", match.regex("999998,999999", regex=r"^\d+(,\d+)*$"))
        .will_respond_with(200)
        .with_body({"results": []}, content_type=JSON)
    )


def by_username(pact: Pact) -> None:
    (
        internal_get(pact, "a profile lookup by usernames in another case", "/internal/v1/users/by-username")
        .given("users exist", users=[{"id": 1001, "username": "alice"}])
        .with_query_parameter("usernames", "ALICE,nobody")
        .will_respond_with(200)
        .with_body(
            {
                "results": match.like(
                    [{**profile(1001, "alice", "Alice", ""), "username": match.regex("alice", regex=r"^(?i)alice$")}],
                    min=1,
                    max=1,
                )
            },
            content_type=JSON,
        )
    )


FOLLOWED = {"user_id": 2001, "follower_ids": [2002, 2003, 2004, 2005, 2006]}


def followers_first_page(pact: Pact) -> None:
    (
        internal_get(pact, "the first page of a user's follower ids", "/internal/v1/users/2001/follower-ids")
        .given("a user has followers", **FOLLOWED)
        .with_query_parameter("limit", match.regex("3", regex=DIGITS))
        .will_respond_with(200)
        .with_body(
            {"ids": each(match.regex("2002", regex=DIGITS), "2003", "2004"), "next_after": match.regex("2004", regex=DIGITS)},
            content_type=JSON,
        )
    )


def followers_last_page(pact: Pact) -> None:
    (
        internal_get(pact, "the last page of a user's follower ids, after a cursor", "/internal/v1/users/2001/follower-ids")
        .given("a user has followers", **FOLLOWED)
        .with_query_parameter("after", "2004")  # the cursor the first page answered, sent back as it came
        .with_query_parameter("limit", match.regex("3", regex=DIGITS))
        .will_respond_with(200)
        .with_body({"ids": each(match.regex("2005", regex=DIGITS), "2006"), "next_after": None}, content_type=JSON)
    )


def followers_none(pact: Pact) -> None:
    (
        internal_get(pact, "the follower ids of a user nobody follows", "/internal/v1/users/2010/follower-ids")
        .given("users exist", users=[{"id": 2010, "username": "loner"}])
        .with_query_parameter("limit", match.regex("3", regex=DIGITS))
        .will_respond_with(200)
        .with_body({"ids": [], "next_after": None}, content_type=JSON)
    )


def credential_refused(pact: Pact) -> None:
    (
        internal_get(pact, "a batch profile lookup with a service credential users does not accept", "/internal/v1/users")
        .given("the caller's service credential is not accepted")
        .with_query_parameter("ids", match.regex("1001", regex=r"^\d+(,\d+)*$"))
        .will_respond_with(401)
    )


INTERACTIONS = [
    batch_some_exist,
    batch_none_exist,
    by_username,
    followers_first_page,
    followers_last_page,
    followers_none,
    credential_refused,
]


# ------------------------------------------------------------------------------------------- tests


def test_batch_profiles_leave_out_unknown_ids(users_mock):
    with users_mock(batch_some_exist):
        found = users_client().summaries([1002, 999999, 1001, 1002])
    assert found == {
        1001: UserSummary(id=1001, username="alice", display_name="Alice", avatar_url="https://img.example/alice.png"),
        1002: UserSummary(id=1002, username="bob", display_name="Bob", avatar_url=""),
    }


def test_unknown_authors_render_as_placeholders(users_mock):
    with users_mock(batch_none_exist):
        authors, degraded = authors_by_ids(ids=[999999, 999998])
    assert authors == {999998: placeholder(999998), 999999: placeholder(999999)}
    assert degraded is False  # users answered: the accounts are gone, users is not down


def test_profiles_by_username_match_case_insensitively(users_mock):
    with users_mock(by_username):
        found = users_client().summaries_by_username(["ALICE", "nobody"])
    assert found == {"alice": UserSummary(id=1001, username="alice", display_name="Alice", avatar_url="")}


def test_follower_ids_walk_pages_by_keyset_cursor(users_mock):
    pages = []
    with users_mock(followers_first_page, followers_last_page):
        after = None
        while True:  # as fan-out and big-author promotion walk them: next_after until it is null
            page = users_client().follower_ids(2001, after=after, limit=3)
            pages.append(page)
            if page.next_after is None:
                break
            after = page.next_after
    assert pages == [FollowerIdsPage(ids=[2002, 2003, 2004], next_after=2004), FollowerIdsPage(ids=[2005, 2006], next_after=None)]


def test_follower_ids_of_unfollowed_user_is_one_empty_page(users_mock):
    with users_mock(followers_none):
        page = users_client().follower_ids(2010, after=None, limit=3)
    assert page == FollowerIdsPage(ids=[], next_after=None)


def test_refused_credential_is_a_client_error_and_authors_degrade(users_mock):
    with users_mock(credential_refused):
        with pytest.raises(DownstreamHTTPError) as refused:
            users_client().summaries([1001])
        authors, degraded = authors_by_ids(ids=[1001])
    assert refused.value.status == 401
    assert authors == {1001: placeholder(1001)} and degraded is True


def test_committed_pact_is_current():
    pact = Pact("feed", "users")
    for define in INTERACTIONS:
        define(pact)
    assert_committed(pact)  # raises AssertionError with the diff when they differ
