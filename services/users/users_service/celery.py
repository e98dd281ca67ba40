"""The users service's Celery app (queue "users"): runs its scheduled upkeep (outbox pruning).

celery -A users_service worker -Q users      celery -A users_service beat
"""

from shared.events.celery_app import make_celery

app = make_celery("users")
