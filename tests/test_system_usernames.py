"""The username cache of feed end to end: a user timeline and a mention resolve a name from Redis,
and users' `user.deleted`, travelling through its outbox, relay and feed's worker, retires it; the
name can then be registered again and resolves to the new account once feed's short memory of the
missing name (USERNAME_MISS_SECONDS, 10 s) has passed."""

from __future__ import annotations

from harness import PASSWORD, register

from shared.testing import wait_until


def eventually(fetch, until, *, timeout: float = 30.0):
    """Poll until the asynchronous pipeline has delivered (a bound, not a speed assertion)."""
    return wait_until(fetch, until, timeout=timeout, interval=0.2, what="delivery")


def test_a_deleted_account_leaves_the_user_timeline_and_its_name_can_be_taken_again(api):
    alice, alice_auth = register(api, "alice")
    _bob, bob_auth = register(api, "bob")
    post = api.post("/posts", headers=alice_auth, json={"body": "soon gone"}).json()

    def timeline():
        return api.get("/posts", params={"author": alice}, headers=bob_auth)

    first = timeline()  # the name is cached from here on
    assert first.status_code == 200 and [p["id"] for p in first.json()["results"]] == [post["id"]]
    mention = api.post("/posts", headers=bob_auth, json={"body": f"hi @{alice}"})
    assert mention.status_code == 201 and mention.json()["mentions"] == [alice]

    assert api.request("DELETE", "/users/me", headers=alice_auth, json={"password": PASSWORD}).status_code == 204
    gone = eventually(timeline, lambda r: r.status_code == 404)  # user.deleted reached feed
    assert gone.headers["content-type"] == "application/problem+json"
    later = api.post("/posts", headers=bob_auth, json={"body": f"still there, @{alice}?"})
    assert later.status_code == 201 and later.json()["mentions"] == []

    again = api.post("/auth/register", json={"username": alice, "email": f"again_{alice}@example.com", "password": PASSWORD})
    assert again.status_code == 201, again.text
    found = eventually(timeline, lambda r: r.status_code == 200)
    assert found.json()["results"] == []  # the new account's posts, not the old one's
    mention = api.post("/posts", headers=bob_auth, json={"body": f"welcome back @{alice}"})
    assert mention.status_code == 201 and mention.json()["mentions"] == [alice]
