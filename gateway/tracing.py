"""W3C trace context at the edge, and a span per sampled request (docs/operations.md#tracing).

The gateway is where a request's trace starts. A client's `traceparent` (and `tracestate`) is
believed only from a trusted proxy (GATEWAY_TRUSTED_PROXIES); from anyone else it is dropped and
the gateway starts a new trace. Every forwarded request carries the gateway's own `traceparent`
(its span is the parent of the service's), sampled or not, so the services' parent-based
samplers follow the gateway's decision.

Sampling: parent-based; a trace the gateway starts is sampled with OTEL_TRACES_SAMPLER_ARG's
ratio, decided on the trace id's low 64 bits as the SDK's TraceIdRatioBased decides it.

The per-request part lives in the compiled data path (proxy.Req._trace/_span): ids from a
per-process xorshift generator, the header, and for a sampled request its span as one OTLP/JSON
object appended to `Tracer.done`. No OpenTelemetry SDK runs in the gateway (it cost ~40 µs per
sampled span, several times the whole request; docs/decisions.md#gateway-spans-minimal-in-the-data-path-no-sdk). The tick
(every 0.1 s) wraps what `done` holds into one OTLP/JSON ExportTraceServiceRequest and hands it
to the exporter OTEL_TRACES_EXPORTER names, the same variable the services read:
otlp (POST to the collector's /v1/traces from a background thread; bounded queue, drops when the
collector is away), console (a line on stdout), file (a line in OTEL_TRACES_FILE_DIR/gateway-<pid>.jsonl:
the OTLP file format).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import sys
import threading
import urllib.request

from .wire import rand64

log = logging.getLogger("gateway.tracing")

TRACEPARENT_RE = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-[^\s]*)?")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16
EXPORTERS = ("none", "otlp", "console", "file")
MAX_QUEUED = 64  # OTLP payloads waiting for the collector (each up to a tick's sampled spans)


class Tracer:
    """Per worker process (after the fork): the sampling bound, the finished spans, the exporter."""

    def __init__(self, ratio: float, sink, *, service: str = "gateway"):
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"OTEL_TRACES_SAMPLER_ARG={ratio!r}: expected a ratio between 0 and 1")
        self.bound = min((1 << 64) - 1, round(ratio * (1 << 64)))  # sampled if the trace id's low 64 bits < bound
        self.sink = sink
        self.done: list[str] = []  # finished sampled spans (OTLP/JSON objects) not yet exported
        attrs = {
            "service.name": service,
            "service.namespace": "social",
            "service.instance.id": f"{os.uname().nodename}-{os.getpid()}",
        }
        self.head = (
            '{"resourceSpans":[{"resource":{"attributes":['
            + ",".join(f'{{"key":"{k}","value":{{"stringValue":{json.dumps(v)}}}}}' for k, v in attrs.items())
            + ']},"scopeSpans":[{"scope":{"name":"gateway"},"spans":['
        )

    @staticmethod
    def adopt(r) -> bool:
        """A trusted proxy's traceparent: continue its trace (r.trace_hdr, r.sampled, r.parent).
        False when it is not a valid version-00-compatible traceparent (then a new trace starts)."""
        m = TRACEPARENT_RE.fullmatch(r.tp_in)
        if m is None or m[1] == b"ff" or m[2] == _ZERO_TRACE or m[3] == _ZERO_SPAN:
            return False
        sampled = bool(int(m[4], 16) & 1)
        hdr = b"traceparent: 00-%s-%016x-%s\r\n" % (m[2], rand64() or 1, b"01" if sampled else b"00")
        if r.ts_in:
            hdr += b"tracestate: " + r.ts_in + b"\r\n"
        r.trace_hdr = hdr
        r.sampled = sampled
        r.parent = m[3].decode()
        return True

    def flush(self) -> None:
        """Export what the last tick's sampled requests left (one OTLP/JSON request)."""
        if self.done:
            done, self.done = self.done, []
            self.sink(self.head + ",".join(done) + "]}]}]}")

    def shutdown(self) -> None:
        self.flush()
        close = getattr(self.sink, "close", None)
        if close is not None:
            close()


class OtlpHttpSink:
    """POSTs OTLP/JSON to the collector from a daemon thread; never blocks the event loop."""

    def __init__(self, endpoint: str, timeout: float = 5.0):
        self.endpoint = endpoint
        self.timeout = timeout
        self.queue: queue.Queue = queue.Queue(MAX_QUEUED)
        self.dropped = 0
        self.thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        self.thread.start()

    def __call__(self, payload: str) -> None:
        try:
            self.queue.put_nowait(payload)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        failing = False
        while True:
            payload = self.queue.get()
            if payload is None:
                return
            try:
                req = urllib.request.Request(
                    self.endpoint, data=payload.encode(), method="POST", headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    resp.read()
                failing = False
            except Exception as exc:
                if not failing:  # once per outage, not per batch
                    log.warning("trace export failed: %s (spans are dropped until it answers)", exc)
                failing = True

    def close(self) -> None:
        try:
            self.queue.put(None, timeout=1.0)
            self.thread.join(timeout=self.timeout)
        except queue.Full:
            pass


class LineSink:
    """One OTLP/JSON request per line (the OTLP file exporter's format)."""

    def __init__(self, out):
        self.out = out

    def __call__(self, payload: str) -> None:
        try:
            self.out.write(payload + "\n")
            self.out.flush()
        except (OSError, ValueError):
            pass


def otlp_endpoint(env) -> str:
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if endpoint:
        return endpoint
    return (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4318").rstrip("/") + "/v1/traces"


def from_env(env=None, sink=None) -> Tracer | None:
    """The worker's tracer, or None when OTEL_TRACES_EXPORTER is none (the default)."""
    env = os.environ if env is None else env
    name = (env.get("OTEL_TRACES_EXPORTER") or "none").strip().lower()
    if name not in EXPORTERS:
        raise ValueError(f"OTEL_TRACES_EXPORTER={name!r}: expected one of {', '.join(EXPORTERS)}")
    if name == "none" and sink is None:
        return None
    sampler = (env.get("OTEL_TRACES_SAMPLER") or "parentbased_traceidratio").strip().lower()
    raw = env.get("OTEL_TRACES_SAMPLER_ARG") or "0.1"
    try:
        ratio = float(raw)
    except ValueError:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG={raw!r}: expected a ratio between 0 and 1") from None
    ratio = {"parentbased_always_on": 1.0, "always_on": 1.0, "parentbased_always_off": 0.0, "always_off": 0.0}.get(sampler, ratio)
    if sink is None:
        if name == "otlp":
            sink = OtlpHttpSink(otlp_endpoint(env))
        elif name == "console":
            sink = LineSink(sys.stdout)
        else:
            directory = env.get("OTEL_TRACES_FILE_DIR") or ""
            if not directory:
                raise ValueError("OTEL_TRACES_EXPORTER=file needs OTEL_TRACES_FILE_DIR (a directory)")
            os.makedirs(directory, exist_ok=True)
            sink = LineSink(open(os.path.join(directory, f"gateway-{os.getpid()}.jsonl"), "a"))  # noqa: SIM115
    return Tracer(ratio, sink, service=env.get("OTEL_GATEWAY_SERVICE_NAME") or "gateway")
