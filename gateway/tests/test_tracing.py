"""W3C trace context at the edge (gateway/tracing.py), against a real gateway process and upstream.

A client's traceparent is believed only from a trusted proxy; anyone else's is dropped and the
gateway starts the trace. Tracing on, every forwarded request carries the gateway's own span as
parent; sampled requests' spans reach the exporter (the file exporter: OTLP/JSON lines; the otlp
exporter: OTLP/HTTP JSON to a collector, here a receiver in the test process) with the HTTP
semantic-convention attributes, and the access line carries the trace and span ids.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .conftest import Gateway, Upstream, eventually, free_port

pytestmark = pytest.mark.timeout(90)

ROUTES = """
upstreams:
  svc: {replicas: []}
routes:
  - {prefix: /api, service: svc, auth: none, ratelimit: off}
"""
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$")


@pytest.fixture
def upstream(procs, keys):
    u = Upstream("r1", free_port(), str(keys.path)).start()
    procs.append(u)
    return u


def _gateway(tmp_path, procs, upstream, **env):
    g = Gateway(
        tmp_path,
        {"GATEWAY_UPSTREAMS": f"svc={upstream.addr}", "JWKS_URL": f"http://{upstream.addr}/.well-known/jwks.json", **env},
        ROUTES,
    ).start()
    procs.append(g)
    return g


def _spans(directory) -> list[dict]:
    spans = []
    for path in directory.glob("gateway-*.jsonl"):
        for line in path.read_text().splitlines():
            request = json.loads(line)
            for rs in request["resourceSpans"]:
                assert {"key": "service.name", "value": {"stringValue": "gateway"}} in rs["resource"]["attributes"]
                for ss in rs["scopeSpans"]:
                    spans += ss["spans"]
    return spans


def _attrs(span: dict) -> dict:
    return {a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}


def test_tracing_off_drops_an_untrusted_traceparent_and_forwards_a_trusted_one(tmp_path, procs, upstream):
    plain = _gateway(tmp_path, procs, upstream)
    echoed = plain.request(
        "GET", "/api/x", headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "tracestate": "k=v"}
    ).json()["headers"]
    assert "traceparent" not in echoed and "tracestate" not in echoed
    behind_proxy = _gateway(tmp_path, procs, upstream, GATEWAY_TRUSTED_PROXIES="127.0.0.1/32")
    echoed = behind_proxy.request(
        "GET", "/api/x", headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "tracestate": "k=v"}
    ).json()["headers"]
    assert (echoed["traceparent"], echoed["tracestate"]) == (f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "k=v")


def test_untrusted_client_gets_a_new_trace_started_by_the_gateway(tmp_path, procs, upstream):
    traces = tmp_path / "traces"
    g = _gateway(
        tmp_path, procs, upstream, OTEL_TRACES_EXPORTER="file", OTEL_TRACES_FILE_DIR=str(traces), OTEL_TRACES_SAMPLER_ARG="1"
    )
    r = g.request(
        "GET",
        "/api/untrusted",
        headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "tracestate": "k=v", "X-Request-ID": "trace-untrusted"},
    )
    echoed = r.json()["headers"]
    trace_id, span_id, flags = TRACEPARENT.match(echoed["traceparent"]).groups()
    assert trace_id != CLIENT_TRACE and flags == "01" and "tracestate" not in echoed
    (span,) = eventually(lambda: [s for s in _spans(traces) if s["spanId"] == span_id], 5, "the gateway's span")
    assert span["traceId"] == trace_id and "parentSpanId" not in span  # the gateway's span is the root
    assert span["name"] == "GET /api" and span["kind"] == 2
    attrs = _attrs(span)
    assert (attrs["http.request.method"], attrs["url.path"], attrs["http.route"], attrs["http.response.status_code"]) == (
        "GET",
        "/api/untrusted",
        "/api",
        "200",
    )
    assert int(span["endTimeUnixNano"]) >= int(span["startTimeUnixNano"]) > 0
    (line,) = [e for e in g.access_log() if e["request_id"] == "trace-untrusted"]
    assert (line["trace_id"], line["span_id"]) == (trace_id, span_id)


def test_trusted_proxy_trace_is_continued_and_its_sampling_decision_kept(tmp_path, procs, upstream):
    traces = tmp_path / "traces"
    g = _gateway(
        tmp_path,
        procs,
        upstream,
        OTEL_TRACES_EXPORTER="file",
        OTEL_TRACES_FILE_DIR=str(traces),
        OTEL_TRACES_SAMPLER_ARG="0",
        GATEWAY_TRUSTED_PROXIES="127.0.0.1/32",
    )
    # sampled upstream of us: kept although our own ratio is 0 (parent-based)
    echoed = g.request(
        "GET", "/api/a", headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "tracestate": "k=v"}
    ).json()["headers"]
    trace_id, span_id, flags = TRACEPARENT.match(echoed["traceparent"]).groups()
    assert (trace_id, flags, echoed["tracestate"]) == (CLIENT_TRACE, "01", "k=v") and span_id != CLIENT_SPAN
    (span,) = eventually(lambda: [s for s in _spans(traces) if s["spanId"] == span_id], 5, "the gateway's span")
    assert (span["traceId"], span["parentSpanId"]) == (CLIENT_TRACE, CLIENT_SPAN)
    # not sampled upstream of us: forwarded as not sampled, no span exported
    other = "0af7651916cd43dd8448eb211c80319c"
    echoed = g.request("GET", "/api/b", headers={"traceparent": f"00-{other}-{CLIENT_SPAN}-00"}).json()["headers"]
    assert TRACEPARENT.match(echoed["traceparent"]).group(1, 3) == (other, "00")
    # a malformed one is not continued: a new trace (not sampled at ratio 0)
    echoed = g.request("GET", "/api/c", headers={"traceparent": "00-zz-yy-01"}).json()["headers"]
    assert TRACEPARENT.match(echoed["traceparent"]).group(3) == "00"
    g.request("GET", "/api/flush")
    eventually(lambda: len(g.access_log()) >= 4, 5, "access lines")
    assert all(s["traceId"] == CLIENT_TRACE for s in _spans(traces))


class OtlpReceiver(BaseHTTPRequestHandler):
    """A collector's OTLP/HTTP endpoint: keeps each request's path, content type and JSON body."""

    received: list[tuple[str, str, dict]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], json.loads(body)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


def test_otlp_exporter_posts_sampled_spans_to_the_collector_and_serves_on_without_it(tmp_path, procs, upstream):
    received: list = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (OtlpReceiver,), {"received": received}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        g = _gateway(
            tmp_path,
            procs,
            upstream,
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}/",
            OTEL_TRACES_SAMPLER_ARG="1",
        )
        echoed = g.request("GET", "/api/exported", headers={"X-Request-ID": "trace-otlp"}).json()["headers"]
        trace_id, span_id, _flags = TRACEPARENT.match(echoed["traceparent"]).groups()

        def exported():
            for path, content_type, request in received:
                for rs in request["resourceSpans"]:
                    for ss in rs["scopeSpans"]:
                        for span in ss["spans"]:
                            if span["spanId"] == span_id:
                                return path, content_type, rs, span
            return None

        path, content_type, resource_spans, span = eventually(exported, 10, "the span at the collector")
    finally:
        server.shutdown()
        server.server_close()
    assert (path, content_type) == ("/v1/traces", "application/json")
    assert {"key": "service.name", "value": {"stringValue": "gateway"}} in resource_spans["resource"]["attributes"]
    assert span["traceId"] == trace_id and span["name"] == "GET /api" and span["kind"] == 2
    assert _attrs(span)["url.path"] == "/api/exported"
    # the collector away: requests are served as before, the failed export is logged once
    for i in range(3):
        assert g.request("GET", f"/api/after-{i}").status == 200
    eventually(lambda: "trace export failed" in g.log_text(), 10, "the export warning")
    assert g.log_text().count("trace export failed") == 1


class _Transport:
    """Enough of an asyncio transport for a connection object driven in process."""

    def __init__(self):
        self.written: list[bytes] = []

    def write(self, data):
        self.written.append(bytes(data))

    def writelines(self, data):
        self.written.append(b"".join(data))

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self):
        return False

    def close(self):
        pass

    abort = close

    def pause_reading(self):
        pass

    resume_reading = pause_reading


def test_a_line_logged_while_a_request_is_handled_carries_its_request_and_trace_ids(tmp_path, monkeypatch):
    """The gateway's error lines inside a request (proxy: "error handling upstream/client data") are
    written with the request's ids (Req.log_ids via ClientConn._log_ids), in the one log schema: the
    request id and the trace and span ids of the gateway's span, as its access line has them."""
    import asyncio
    import logging

    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "upstreams:\n  up: {replicas: ['127.0.0.1:9']}\nroutes:\n  - {prefix: /, service: up, auth: none, ratelimit: off}\n"
    )
    monkeypatch.setenv("GATEWAY_ROUTES", str(routes))
    monkeypatch.delenv("REDIS_URL", raising=False)
    from gateway import config, logs, proxy, server, tracing

    loop = asyncio.new_event_loop()
    try:
        gw = server.Gateway(config.load(), loop)
        spans: list[str] = []
        gw.tracer = tracing.from_env({"OTEL_TRACES_SAMPLER_ARG": "1"}, sink=spans.append)
        gw.trace_bound = gw.tracer.bound
        replica = gw.clusters["up"].replicas[0]
        upstream = proxy.UpstreamConn(replica, gw)
        upstream.connection_made(_Transport())
        replica.idle.append(upstream)  # a pooled connection: the request is written to it at once
        client = proxy.ClientConn(gw)
        client.connection_made(_Transport())
        client.data_received(b"GET /things HTTP/1.1\r\nHost: gw\r\nX-Request-ID: req-abc-123\r\n\r\n")
        forwarded = b"".join(upstream.transport.written)
        traceparent = re.search(rb"traceparent: 00-([0-9a-f]{32})-([0-9a-f]{16})-01", forwarded)
        assert traceparent is not None, forwarded
        ids = client._log_ids()
        assert ids == {
            "request_id": "req-abc-123",
            "trace_id": traceparent[1].decode(),
            "span_id": traceparent[2].decode(),
        }
        assert upstream.req.log_ids() == ids
        record = logging.LogRecord("gateway.proxy", logging.ERROR, __file__, 1, "error handling upstream data", (), None)
        record.__dict__.update(ids)
        line = json.loads(logs.JsonFormatter().format(record))
        assert {k: line[k] for k in ("request_id", "trace_id", "span_id", "msg")} == {
            **ids,
            "msg": "error handling upstream data",
        }
        assert list(line)[:6] == ["ts", "level", "logger", "service", "pid", "request_id"]  # the schema's order
        gw.tracer = None  # tracing off: no trace ids, as the access line
        assert client._log_ids() == {"request_id": "req-abc-123"}
    finally:
        loop.close()
