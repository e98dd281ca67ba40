"""OpenTelemetry tracing for every service process: one setup, chosen by the environment.

    OTEL_TRACES_EXPORTER      none (default) | otlp | console | file
    OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT   the collector (OTLP/HTTP, :4318)
    OTEL_TRACES_FILE_DIR      `file`: one JSON-lines file per process in this directory
    OTEL_TRACES_SAMPLER       parentbased_traceidratio (default) | parentbased_always_on |
                              parentbased_always_off | traceidratio | always_on | always_off
    OTEL_TRACES_SAMPLER_ARG   the ratio, 0..1 (default 0.1)
    OTEL_SERVICE_NAME         the resource's service.name (default: the service)
    OTEL_BSP_*                the batch span processor (the SDK reads them)

`setup()` is called where each process kind starts serving, after any fork: a gunicorn worker
loading its WSGI app (`<svc>_service/wsgi.py`), a Celery pool process (`worker_process_init`),
the outbox relay (`events_relay`). With the exporter `none` it installs nothing: no SDK, no
instrumentation, the API's no-op tracer. Otherwise it installs the SDK's tracer provider
(parent-based sampling: the gateway decides per request, the services follow its `traceparent`)
and the Django, WSGI, httpx, Celery, psycopg2 and redis instrumentations.

Events carry the trace across the outbox: `publish()` stores the current `traceparent` with the
row (`traceparent()`), the relay publishes each row inside that context (`remote_parent()`), so
the Celery instrumentation's publish span and the consumer's task span join the request's trace.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

logger = logging.getLogger("shared.tracing")

EXPORTERS = ("none", "otlp", "console", "file")
_state: dict[str, object] = {"service": None}


def exporter_name() -> str:
    name = (os.environ.get("OTEL_TRACES_EXPORTER") or "none").strip().lower()
    if name not in EXPORTERS:
        raise ValueError(f"OTEL_TRACES_EXPORTER={name!r}: expected one of {', '.join(EXPORTERS)}")
    return name


def enabled() -> bool:
    return _state["service"] is not None


def sampler_from_env():
    from opentelemetry.sdk.trace import sampling

    name = (os.environ.get("OTEL_TRACES_SAMPLER") or "parentbased_traceidratio").strip().lower()
    raw = os.environ.get("OTEL_TRACES_SAMPLER_ARG") or "0.1"
    try:
        ratio = float(raw)
    except ValueError:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG={raw!r}: expected a ratio between 0 and 1") from None
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG={raw!r}: expected a ratio between 0 and 1")
    samplers = {
        "parentbased_traceidratio": lambda: sampling.ParentBased(sampling.TraceIdRatioBased(ratio)),
        "parentbased_always_on": lambda: sampling.ParentBased(sampling.ALWAYS_ON),
        "parentbased_always_off": lambda: sampling.ParentBased(sampling.ALWAYS_OFF),
        "traceidratio": lambda: sampling.TraceIdRatioBased(ratio),
        "always_on": lambda: sampling.ALWAYS_ON,
        "always_off": lambda: sampling.ALWAYS_OFF,
    }
    if name not in samplers:
        raise ValueError(f"OTEL_TRACES_SAMPLER={name!r}: expected one of {', '.join(samplers)}")
    return samplers[name]()


def _exporter(name: str, service: str):
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    def one_line(span) -> str:
        return span.to_json(indent=None) + "\n"

    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if name == "console":
        return ConsoleSpanExporter(out=sys.stdout, formatter=one_line)
    directory = os.environ.get("OTEL_TRACES_FILE_DIR") or ""
    if not directory:
        raise ValueError("OTEL_TRACES_EXPORTER=file needs OTEL_TRACES_FILE_DIR (a directory)")
    os.makedirs(directory, exist_ok=True)
    out = open(os.path.join(directory, f"{service}-{os.getpid()}.jsonl"), "a", buffering=1)  # noqa: SIM115 - the process's
    return ConsoleSpanExporter(out=out, formatter=one_line, service_name=service)


def setup(service: str, *, django: bool = False, celery: bool = False) -> bool:
    """Install tracing in this process (once; call it after the fork). Returns whether it is on."""
    if _state["service"] is not None:
        return True
    name = exporter_name()
    if name == "none":
        return False
    # the current HTTP and database semantic conventions (http.request.method, url.path,
    # http.response.status_code, db.system.name, ...) rather than the instrumentations' old names
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http,database")
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME") or service,
            "service.namespace": "social",
            "service.instance.id": f"{os.uname().nodename}-{os.getpid()}",
            "process.pid": os.getpid(),
        }
    )
    provider = TracerProvider(resource=resource, sampler=sampler_from_env())
    provider.add_span_processor(BatchSpanProcessor(_exporter(name, service)))
    trace.set_tracer_provider(provider)
    _instrument(django=django, celery=celery)
    _state["service"] = service
    logger.info(
        "tracing on",
        extra={
            "exporter": name,
            "sampler": os.environ.get("OTEL_TRACES_SAMPLER") or "parentbased_traceidratio",
            "ratio": os.environ.get("OTEL_TRACES_SAMPLER_ARG") or "0.1",
        },
    )
    return True


def _instrument(*, django: bool, celery: bool) -> None:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.psycopg2 import Psycopg2Instrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    HTTPXClientInstrumentor().instrument()
    Psycopg2Instrumentor().instrument(skip_dep_check=True)  # psycopg2-binary provides psycopg2
    RedisInstrumentor().instrument()
    if django:
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        # adds its middleware first in settings.MIDDLEWARE: call before the WSGI handler loads it
        DjangoInstrumentor().instrument(is_sql_commentor_enabled=False)
    if celery:
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        CeleryInstrumentor().instrument()


def traceparent() -> str:
    """The W3C traceparent of the current span ('' when none is recording), for storing with an event."""
    if _state["service"] is None:
        return ""
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent", "")


@contextlib.contextmanager
def remote_parent(value: str) -> Iterator[None]:
    """Run the block in the context a stored traceparent names (no-op when tracing is off or none)."""
    if not value or _state["service"] is None:
        yield
        return
    from opentelemetry import context
    from opentelemetry.propagate import extract

    token = context.attach(extract({"traceparent": value}))
    try:
        yield
    finally:
        context.detach(token)


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) in hex of the span in progress, for log lines; None outside any span."""
    if _state["service"] is None:
        return None
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
