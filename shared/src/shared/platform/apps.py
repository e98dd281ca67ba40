from django.apps import AppConfig


class PlatformConfig(AppConfig):
    """Installed in every service by `service_settings`; its migrations create the platform tables
    in the service's own schema."""

    name = "shared.platform"
    label = "platform"
    default_auto_field = "django.db.models.BigAutoField"
