"""Prometheus metrics of the event backbone. Served by every worker and relay on METRICS_PORT
(shared.events.exposition); in gunicorn processes they join the service's /metrics."""

from prometheus_client import Counter, Histogram

PUBLISHED = Counter("events_published_total", "Events the relay put on a consumer queue", ["type", "consumer"])
RELAY_ERRORS = Counter("events_relay_errors_total", "Relay cycles that failed (broker or database down)")
RELAY_LAG = Histogram(
    "events_relay_lag_seconds",
    "From the event's commit (occurred_at) to its publication",
    ["type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
HANDLED = Counter(
    "events_handled_total",
    "Events a consumer took, by outcome: applied, duplicate (inbox hit), retry (handler failed, "
    "retried later), dead (given up and dead-lettered)",
    ["type", "outcome"],
)
FAILED = Counter("events_failed_total", "Handler runs that raised (every failed attempt)", ["type"])
DEAD_LETTERS = Counter("events_dead_letters_total", "Events or tasks given up on and recorded as dead letters", ["type"])
HANDLER_SECONDS = Histogram(
    "events_handler_duration_seconds",
    "Time to apply one event (inbox + handlers + commit)",
    ["type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
CONSUME_LAG = Histogram(
    "events_consume_lag_seconds",
    "From the event's commit (occurred_at) to its handling start",
    ["type"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
REDELIVERED = Counter(
    "events_redelivered_total",
    "Relay: events published again because their consumer had not acknowledged them within "
    "EVENTS_REDELIVER_AFTER_SECONDS (message lost in transit, or consumer down)",
    ["type", "consumer"],
)
