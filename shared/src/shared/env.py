"""Configuration from environment variables, with safe production defaults.

Dev mode (`DJANGO_DEV=1`, set by the local launcher and the test runner) only relaxes what a
laptop needs: DEBUG-free but permissive ALLOWED_HOSTS and a generated secret. Production
refuses to start without the secrets it needs.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs, unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

TRUE = {"1", "true", "yes", "on"}


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name)
    if value is None or value == "":
        if default is None:
            raise ImproperlyConfigured(f"environment variable {name} is required")
        return default
    return value


# What a secret must not look like outside dev mode: the examples and dev values that are public.
PLACEHOLDER_MARKERS = ("change-me", "changeme", "change_me", "placeholder", "not-for-production", "example", "secret-here")
MIN_SECRET_LENGTH = 32


def env_secret(name: str, dev_default: str | None) -> str:
    """A secret from the environment. Dev mode may fall back to `dev_default`; production refuses a
    missing secret, one shorter than MIN_SECRET_LENGTH, or a published placeholder (`change-me…`,
    the dev values) with ImproperlyConfigured, so a deployment cannot start on a public default."""
    if dev_mode():
        return env_str(name, dev_default)
    value = env_str(name)
    lowered = value.lower()
    if any(marker in lowered for marker in PLACEHOLDER_MARKERS):
        raise ImproperlyConfigured(f"environment variable {name} holds a placeholder value; set a real secret")
    if len(value) < MIN_SECRET_LENGTH:
        raise ImproperlyConfigured(f"environment variable {name} must be at least {MIN_SECRET_LENGTH} characters")
    return value


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    return default if value is None or value == "" else value.strip().lower() in TRUE


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value is None or value == "" else int(value)


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return default if value is None or value == "" else float(value)


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default or " ").split(",") if item.strip()]


def dev_mode() -> bool:
    return env_bool("DJANGO_DEV")


def database_from_url(url: str) -> dict:
    """A Django DATABASES entry from a postgresql:// URL.

    Connections are persistent (CONN_MAX_AGE) and health-checked before reuse; behind
    PgBouncer in transaction pooling mode (`PGBOUNCER=1`) server-side cursors are disabled,
    since a cursor cannot outlive the transaction that owns the server connection.
    """
    parts = urlparse(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ImproperlyConfigured(f"DATABASE_URL must be postgresql://, got {parts.scheme!r}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    options = {"connect_timeout": int(query.pop("connect_timeout", "3")), "application_name": env_str("SERVICE_NAME", "django")}
    options.update(query)
    return {
        "ENGINE": "shared.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "CONN_MAX_AGE": env_int("DB_CONN_MAX_AGE", 60),
        "CONN_HEALTH_CHECKS": True,
        "DISABLE_SERVER_SIDE_CURSORS": env_bool("PGBOUNCER"),
        "OPTIONS": options,
    }
