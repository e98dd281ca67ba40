"""feed's Celery app: `celery -A feed_service worker -Q feed`.

Late acks + reject on worker lost: a task whose worker dies is redelivered, and every task is
idempotent, so redelivery is safe. Prefetch 1 so a long fan-out does not hold queued work hostage.
Time limits stay below the broker's visibility timeout, so a stuck task is killed before Redis
would hand it to a second worker.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feed_service.settings")

app = Celery("feed")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_default_queue="feed",
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_time_limit=300,
    task_soft_time_limit=240,
    broker_transport_options={"visibility_timeout": 600},
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
)
app.autodiscover_tasks(["timelines"])
