"""audit's Celery app (queue "audit"): `celery -A audit_service worker -Q audit`."""

from shared.events.celery_app import make_celery

app = make_celery("audit")
