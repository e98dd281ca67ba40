import logging

from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.module_loading import autodiscover_modules


class EventsConfig(AppConfig):
    """Install in a service to get its outbox, inbox and dead-letter tables (in its own schema)."""

    name = "shared.events"
    label = "events"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Each app's events.py registers its @handler functions; importing them here means a
        # worker knows every handler before it takes its first message.
        autodiscover_modules("events")
        post_migrate.connect(_register_subscriptions, sender=self, dispatch_uid="events-subscriptions")


def _register_subscriptions(sender=None, **_) -> None:
    """`migrate` is the deploy step that runs before a release's processes start: the consumer's
    subscriptions are in the registry before anything it subscribes to is relayed (the worker
    registers them again when it starts). Best effort here: a broker that cannot be reached does
    not fail the migration (the worker cannot start without it anyway)."""
    from django.conf import settings

    from shared.events.celery_config import celery_config
    from shared.events.subscriptions import register_service

    service = getattr(settings, "SERVICE_NAME", "")
    if not service:
        return
    try:
        register_service(celery_config(service)["broker_url"], service)
    except Exception as exc:
        logging.getLogger("shared.events").warning(
            "event subscriptions not registered at migrate (the worker registers them at start-up)",
            extra={"error": f"{type(exc).__name__}: {exc}"},
        )
