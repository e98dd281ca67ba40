from prometheus_client import Counter

PUBLISHED = Counter("events_published_total", "Events the relay put on a consumer queue", ["type", "consumer"])
RELAY_ERRORS = Counter("events_relay_errors_total", "Relay cycles that failed (broker or database down)")
HANDLED = Counter("events_handled_total", "Events a consumer took", ["type", "outcome"])
DEAD_LETTERS = Counter("events_dead_letters_total", "Events or tasks given up on and recorded as dead letters",
                       ["type"])
