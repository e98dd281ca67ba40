from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_partitions(sender, using="default", **kwargs):
    from notifications.partitions import partitions_ensure

    partitions_ensure()


class NotificationsConfig(AppConfig):
    name = "notifications"

    def ready(self) -> None:
        # every `migrate` tops up the partitions ahead (the scheduled task does it in between)
        post_migrate.connect(_ensure_partitions, sender=self, dispatch_uid="notification-partitions")
