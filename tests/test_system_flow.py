"""The product end to end: three services, their workers and relays, behind the gateway.

A follow, a post with a mention and a like travel as events through the outboxes, relays and
Celery workers; the feed and the notifications are read back through the gateway."""

from __future__ import annotations

import httpx
from harness import register

from shared.testing import wait_until


def eventually(fetch, until, *, timeout: float = 20.0):
    """Poll until the asynchronous pipeline has delivered (a bound, not a speed assertion)."""
    return wait_until(fetch, until, timeout=timeout, interval=0.1, what="delivery")


def test_follow_post_mention_like_feed_and_notifications(api):
    alice, alice_auth = register(api, "alice")
    bob, bob_auth = register(api, "bob")

    assert api.post(f"/users/{alice}/follow", headers=bob_auth).status_code == 201
    post = api.post("/posts", headers=alice_auth, json={"body": f"hello @{bob} and @nobody_here"})
    assert post.status_code == 201, post.text
    post = post.json()
    assert post["mentions"] == [bob] and post["author"]["username"] == alice

    # fan-out: the post reaches bob's home timeline
    feed = eventually(
        lambda: api.get("/feed", headers=bob_auth).json(), lambda body: any(p["id"] == post["id"] for p in body["results"])
    )
    item = next(p for p in feed["results"] if p["id"] == post["id"])
    assert (item["author"]["username"], item["like_count"], item["liked_by_me"]) == (alice, 0, False)

    assert api.post(f"/posts/{post['id']}/like", headers=bob_auth).status_code in (200, 201)
    liked = api.get(f"/posts/{post['id']}", headers=bob_auth).json()
    assert (liked["like_count"], liked["liked_by_me"]) == (1, True)

    # alice: follow + like; bob: mention
    alice_notes = eventually(lambda: api.get("/notifications", headers=alice_auth).json(), lambda body: len(body["results"]) >= 2)
    assert sorted(n["kind"] for n in alice_notes["results"]) == ["follow", "like"]
    assert {n["actor"]["username"] for n in alice_notes["results"]} == {bob}
    assert next(n for n in alice_notes["results"] if n["kind"] == "like")["post_id"] == post["id"]
    bob_notes = eventually(lambda: api.get("/notifications", headers=bob_auth).json(), lambda body: len(body["results"]) >= 1)
    assert [(n["kind"], n["actor"]["username"], n["post_id"]) for n in bob_notes["results"]] == [("mention", alice, post["id"])]

    assert api.get("/notifications/unread-count", headers=alice_auth).json() == {"count": 2}
    assert api.post("/notifications/read", headers=alice_auth, json={"all": True}).status_code == 204
    assert api.get("/notifications/unread-count", headers=alice_auth).json() == {"count": 0}
    assert api.get("/notifications?unread=true", headers=alice_auth).json()["results"] == []

    # deleting the post removes it from bob's feed (event → fan-out removal)
    assert api.delete(f"/posts/{post['id']}", headers=alice_auth).status_code == 204
    feed = eventually(
        lambda: api.get("/feed", headers=bob_auth).json(), lambda body: all(p["id"] != post["id"] for p in body["results"])
    )
    assert all(p["id"] != post["id"] for p in feed["results"])


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample in an exposition text (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        got = ",".join(sorted(line[len(name) + 1 : line.index("}")].split(",")))
        if got == want:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_every_worker_and_relay_serves_metrics(system, api):
    """Every event process of `make run` serves /metrics (the launcher gives each a METRICS_PORT),
    and the counts are those of the events that just went through them. (A process that has not
    counted anything yet serves an empty exposition: label sets appear with their first sample.)"""
    alice, alice_auth = register(api, "metrics_a")
    _, bob_auth = register(api, "metrics_b")
    before = httpx.get(system.proc("notifications-worker").url, timeout=5).text
    applied_before = sample(before, "events_handled_total", type="user.followed", outcome="applied")
    assert api.post(f"/users/{alice}/follow", headers=bob_auth).status_code == 201
    eventually(lambda: api.get("/notifications/unread-count", headers=alice_auth).json(), lambda body: body["count"] >= 1)

    for service in ("users", "feed", "notifications"):
        for process in ("worker", "relay"):
            proc = system.proc(f"{service}-{process}")
            assert proc.url == f"http://127.0.0.1:{system.ctx.metrics_port(service, process)}/metrics"
            response = httpx.get(proc.url, timeout=5)
            assert response.status_code == 200, proc.name
            assert response.headers["content-type"].startswith("text/plain"), proc.name

    relay = httpx.get(system.proc("users-relay").url, timeout=5).text
    assert sample(relay, "events_published_total", type="user.followed", consumer="notifications") >= 1
    worker = eventually(
        lambda: httpx.get(system.proc("notifications-worker").url, timeout=5).text,
        lambda text: sample(text, "events_handled_total", type="user.followed", outcome="applied") > applied_before,
    )
    assert sample(worker, "events_handled_total", type="user.followed", outcome="applied") > applied_before
