# The Celery app loads with Django, so tasks enqueued from web processes use this service's broker.
from notifications_service.celery import app as celery_app

__all__ = ["celery_app"]
