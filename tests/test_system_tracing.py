"""One trace across every process a post goes through (docs/operations.md#tracing).

The system fixture runs every process with the SDK's file exporter (OTEL_TRACES_EXPORTER=file:
JSON lines per process under the run directory) and a sampling ratio of 0, so only a request
whose trusted proxy sent a sampled `traceparent` is recorded (parent-based sampling, the
gateway trusting 127.0.0.1 as it would an L7 proxy in front of it). A post with a mention, by an
author with three followers (above the system tests' FANOUT_INLINE and FANOUT_PAGE of 2, so the
fan-out walks two pages and delivers through tasks), then shows, in one trace id: the gateway's
span → feed's request span → users' (the mention lookup, the author's hydration); feed's outbox
row → feed's relay → the feed worker's post.created handler → users (both pages of follower ids,
the second fetched in the walk's helper thread) and one `feed.fanout_deliver` task per page, and
→ the notifications worker's handler. Every span's parent is in the trace.
"""

from __future__ import annotations

import json
import secrets

from harness import register, wait_until


def spans_of(system, trace_id: str) -> list[dict]:
    """The trace's spans from every process's file: the services' (the SDK's span JSON, one per
    line) and the gateway's (OTLP/JSON requests, one per line), in the SDK's shape."""
    out = []
    for path in sorted((system.ctx.run_dir / "traces").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if f'"trace_id": "0x{trace_id}"' in line:
                out.append(json.loads(line))
            elif f'"traceId":"{trace_id}"' in line:
                out += [
                    otlp_span(rs, span)
                    for rs in json.loads(line)["resourceSpans"]
                    for ss in rs["scopeSpans"]
                    for span in ss["spans"]
                    if span["traceId"] == trace_id
                ]
    return out


def otlp_span(resource_spans: dict, span: dict) -> dict:
    def value(v: dict):
        ((kind, x),) = v.items()
        return int(x) if kind == "intValue" else x

    return {
        "name": span["name"],
        "context": {"trace_id": f"0x{span['traceId']}", "span_id": f"0x{span['spanId']}"},
        "parent_id": f"0x{span['parentSpanId']}" if span.get("parentSpanId") else None,
        "kind": {1: "SpanKind.INTERNAL", 2: "SpanKind.SERVER", 3: "SpanKind.CLIENT"}[span["kind"]],
        "attributes": {a["key"]: value(a["value"]) for a in span["attributes"]},
        "resource": {"attributes": {a["key"]: value(a["value"]) for a in resource_spans["resource"]["attributes"]}},
    }


def service(span: dict) -> str:
    return span["resource"]["attributes"]["service.name"]


def ancestors(span: dict, by_id: dict[str, dict]) -> list[dict]:
    chain = []
    parent = span["parent_id"]
    while parent in by_id:
        chain.append(by_id[parent])
        parent = by_id[parent]["parent_id"]
    return chain


def test_a_post_is_one_trace_from_the_gateway_to_the_notification(system, api):
    alice, alice_auth = register(api, "tralice")
    bob, bob_auth = register(api, "trbob")
    for follower_auth in (bob_auth, register(api, "trcarol")[1], register(api, "trdan")[1]):
        assert api.post(f"/users/{alice}/follow", headers=follower_auth).status_code == 201

    trace_id, proxy_span = secrets.token_hex(16), secrets.token_hex(8)
    post = api.post(
        "/posts",
        headers={**alice_auth, "traceparent": f"00-{trace_id}-{proxy_span}-01", "X-Request-ID": "trace-post-1"},
        json={"body": f"traced @{bob}"},
    )
    assert post.status_code == 201, post.text

    seen: set = set()

    def complete():
        spans = spans_of(system, trace_id)
        seen.clear()
        seen.update((service(s), s["name"]) for s in spans)
        want = {("notifications", "run/events.handle"), ("feed", "run/events.handle")}
        deliveries = sum(s["name"] == "run/feed.fanout_deliver" for s in spans)
        # users: the mention lookup and the hydration in the request, two pages of follower ids
        users = sum(service(s) == "users" and s["kind"] == "SpanKind.SERVER" for s in spans)
        done = want <= seen and deliveries >= 2 and users >= 4 and any(service(s) == "gateway" for s in spans)
        return spans if done else None

    try:
        spans = wait_until(complete, timeout=60, interval=0.2, what="the post's spans from every process")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; spans seen (service, name): {sorted(seen)}") from None
    by_id = {s["context"]["span_id"]: s for s in spans}

    # the edge: the gateway's span continues the trusted proxy's, and nothing else is a root
    (edge,) = [s for s in spans if service(s) == "gateway"]
    assert edge["parent_id"] == f"0x{proxy_span}" and edge["kind"] == "SpanKind.SERVER"
    assert edge["attributes"]["http.request.method"] == "POST"
    assert edge["attributes"]["http.response.status_code"] == 201
    assert edge["attributes"]["http.route"] == "/api/v1/posts"
    orphans = [(service(s), s["name"]) for s in spans if s is not edge and s["parent_id"] not in by_id]
    assert orphans == [], f"spans whose parent is not in the trace: {orphans}"

    # gateway → feed (the request) → users (the mention lookup)
    (feed_request,) = [s for s in spans if service(s) == "feed" and s["kind"] == "SpanKind.SERVER"]
    assert feed_request["parent_id"] == edge["context"]["span_id"]
    assert feed_request["attributes"]["http.response.status_code"] == 201
    users_in_request = [
        s for s in spans if service(s) == "users" and s["kind"] == "SpanKind.SERVER" and feed_request in ancestors(s, by_id)
    ]
    # the mention's lookup and the author's hydration (alice's profile is in no cache yet)
    paths = {s["attributes"].get("url.path") for s in users_in_request}
    assert {"/internal/v1/users/by-username", "/internal/v1/users"} <= paths, paths
    assert any(
        s["attributes"].get("db.system.name", s["attributes"].get("db.system")) == "postgresql"
        for s in spans
        if service(s) == "feed" and feed_request in ancestors(s, by_id)
    ), "no feed query span"

    # feed → outbox → relay → each consumer's task, all under feed's request span
    for consumer in ("feed", "notifications"):
        handlers = [s for s in spans if service(s) == consumer and s["name"] == "run/events.handle"]
        assert handlers, f"no events.handle span in {consumer}"
        for handler in handlers:
            chain = ancestors(handler, by_id)
            assert feed_request in chain and edge in chain
            publish = by_id[handler["parent_id"]]
            assert (service(publish), publish["name"], publish["kind"]) == (
                "feed",
                "apply_async/events.handle",
                "SpanKind.PRODUCER",
            )
            assert publish["resource"]["attributes"]["process.pid"] != feed_request["resource"]["attributes"]["process.pid"], (
                "the publish span should come from the relay process"
            )
    # the fan-out: post.created's handler in feed's worker asks users for alice's followers, a
    # page of two at a time, and queues a feed.fanout_deliver task per page under its publish span
    (feed_handler,) = [s for s in spans if service(s) == "feed" and s["name"] == "run/events.handle"]
    pages = [
        s
        for s in spans
        if service(s) == "users"
        and s["kind"] == "SpanKind.SERVER"
        and s["attributes"].get("url.path", "").endswith("/follower-ids")
    ]
    assert len(pages) == 2 and all(feed_handler in ancestors(s, by_id) for s in pages), pages
    deliveries = [s for s in spans if s["name"] == "run/feed.fanout_deliver"]
    assert len(deliveries) == 2, deliveries
    for delivery in deliveries:
        assert service(delivery) == "feed" and delivery["kind"] == "SpanKind.CONSUMER"
        publish = by_id[delivery["parent_id"]]
        assert (publish["name"], publish["kind"], by_id[publish["parent_id"]]) == (
            "apply_async/feed.fanout_deliver",
            "SpanKind.PRODUCER",
            feed_handler,
        )
