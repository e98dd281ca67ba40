"""The notifications service's Celery app (queue "notifications"): event handlers, push
delivery, partition upkeep.

    celery -A notifications_service worker -Q notifications      celery -A notifications_service beat
"""

from datetime import timedelta

from celery.schedules import crontab

from shared.env import env_int
from shared.events.celery_app import make_celery

app = make_celery("notifications")
app.conf.beat_schedule.update(
    {
        "notification-partitions": {
            "task": "notifications.partitions_maintain",
            "schedule": crontab(minute=7, hour="*/6"),
            "options": {"queue": "notifications"},
        },
        "push-sweep": {
            "task": "devices.push_sweep",
            "schedule": timedelta(seconds=env_int("PUSH_SWEEP_SECONDS", 30)),
            "options": {"queue": "notifications"},
        },
    }
)
