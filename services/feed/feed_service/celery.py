"""feed's Celery app (queue "feed"): event handlers (user.*), fan-out and timeline upkeep.

    celery -A feed_service worker -Q feed      celery -A feed_service beat

Configuration (late acks, reject on worker lost, prefetch 1, time limits below the visibility
timeout, JSON only) is shared.events.celery_config's, the same for every service.
"""

from shared.events.celery_app import make_celery

app = make_celery("feed")
