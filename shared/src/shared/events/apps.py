from django.apps import AppConfig
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
