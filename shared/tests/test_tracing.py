"""shared.tracing's configuration from the environment, and its OTLP exporter against a receiver.

The exporter and sampler variables are read by every service process (docs/operations.md#tracing);
a bad value is refused with a message naming the variable. `setup()` installs process-wide state
(the tracer provider, the instrumentations), so the export test runs it in a process of its own,
as a gunicorn worker or a relay would, against an OTLP/HTTP receiver in this process that decodes
what arrives with the OTLP protobuf definitions, as a collector does.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from shared import tracing
from shared.testing import wait_until


@pytest.fixture
def otel_env(monkeypatch):
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_exporter_is_none_unless_the_environment_names_one(otel_env):
    assert tracing.exporter_name() == "none"
    for name in ("otlp", "console", "file", " OTLP "):
        otel_env.setenv("OTEL_TRACES_EXPORTER", name)
        assert tracing.exporter_name() == name.strip().lower()
    otel_env.setenv("OTEL_TRACES_EXPORTER", "jaeger")
    with pytest.raises(ValueError, match=r"OTEL_TRACES_EXPORTER='jaeger': expected one of none, otlp, console, file"):
        tracing.exporter_name()
    # with the exporter none, setup installs nothing
    otel_env.setenv("OTEL_TRACES_EXPORTER", "none")
    assert tracing.setup("users") is False and not tracing.enabled() and tracing.traceparent() == ""


@pytest.mark.parametrize(
    "name, arg, description",
    [
        (None, None, "ParentBased{root:TraceIdRatioBased{0.1}"),
        ("parentbased_traceidratio", "0.25", "ParentBased{root:TraceIdRatioBased{0.25}"),
        ("parentbased_always_on", None, "ParentBased{root:AlwaysOnSampler"),
        ("parentbased_always_off", None, "ParentBased{root:AlwaysOffSampler"),
        ("traceidratio", "0.5", "TraceIdRatioBased{0.5}"),
        ("always_on", None, "AlwaysOnSampler"),
        ("always_off", None, "AlwaysOffSampler"),
    ],
)
def test_the_sampler_and_its_ratio_come_from_the_environment(otel_env, name, arg, description):
    if name is not None:
        otel_env.setenv("OTEL_TRACES_SAMPLER", name)
    if arg is not None:
        otel_env.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    assert tracing.sampler_from_env().get_description().startswith(description)


@pytest.mark.parametrize(
    "name, arg, message",
    [
        ("parentbased_traceidratio", "1.5", r"OTEL_TRACES_SAMPLER_ARG='1.5': expected a ratio between 0 and 1"),
        ("parentbased_traceidratio", "-0.1", r"OTEL_TRACES_SAMPLER_ARG='-0.1': expected a ratio between 0 and 1"),
        ("traceidratio", "ten percent", r"OTEL_TRACES_SAMPLER_ARG='ten percent': expected a ratio between 0 and 1"),
        ("sometimes", "0.1", r"OTEL_TRACES_SAMPLER='sometimes': expected one of parentbased_traceidratio, "),
    ],
)
def test_a_bad_sampler_setting_is_refused_with_the_variable_named(otel_env, name, arg, message):
    otel_env.setenv("OTEL_TRACES_SAMPLER", name)
    otel_env.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    with pytest.raises(ValueError, match=message):
        tracing.sampler_from_env()


class Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint: keeps each request's path, content type and decoded body."""

    received: list[tuple[str, str, ExportTraceServiceRequest]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.received.append((self.path, self.headers["Content-Type"], request))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list]]:
    received: list = []
    handler = type("Handler", (Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


PROCESS = """
from opentelemetry import trace
from shared import tracing

assert tracing.setup("feed") and tracing.enabled()
tracer = trace.get_tracer("probe")
with tracer.start_as_current_span("started here"):  # a root span: the ratio (0) decides, not sampled
    print(tracing.traceparent())
with tracing.remote_parent({stored!r}):  # a stored, sampled traceparent, as the relay continues one
    with tracer.start_as_current_span("continued") as span:
        print(tracing.traceparent())
        print(*tracing.current_ids())
trace.get_tracer_provider().shutdown()  # flushes the batch processor
"""


def test_otlp_exports_a_process_s_sampled_spans_to_the_collector(collector):
    endpoint, received = collector
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    stored = f"00-{trace_id}-{parent_id}-01"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PROCESS.format(stored=stored))],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    own, continued, ids = result.stdout.splitlines()[-3:]
    assert not int(own.split("-")[3], 16) & 1, own  # started here at ratio 0: carried, not sampled
    assert continued.startswith(f"00-{trace_id}-") and int(continued.split("-")[3], 16) & 1, continued
    span_id = continued.split("-")[2]
    assert ids.split() == [trace_id, span_id]  # what the log lines carry inside the span

    wait_until(lambda: received, timeout=10, what="an OTLP request at the receiver")
    (path, content_type, request), *more = received
    assert (path, content_type, more) == ("/v1/traces", "application/x-protobuf", [])
    (resource_spans,) = request.resource_spans
    resource = {a.key: a.value.string_value or a.value.int_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "feed" and resource["service.namespace"] == "social"
    assert resource["process.pid"] > 0
    spans = [span for scope in resource_spans.scope_spans for span in scope.spans]
    assert [s.name for s in spans] == ["continued"], "the unsampled root span was exported"
    (span,) = spans
    assert (span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex()) == (trace_id, span_id, parent_id)
