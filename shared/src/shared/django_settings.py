"""The settings every service shares, built from the environment.

A service's settings.py is a few lines: `globals().update(service_settings("feed", ...))`
then whatever is its own. Only what an API service needs is installed: no admin, sessions,
messages, auth or staticfiles apps, and no middleware that would only serve them.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.utils import get_random_secret_key

from shared import redis_clients
from shared.env import database_from_url, dev_mode, env_float, env_int, env_list, env_secret, env_str
from shared.jsonlog import logging_config


def service_settings(service: str, *, base_dir: Path, apps: list[str]) -> dict:
    dev = dev_mode()
    redis_url = env_str("REDIS_URL", "redis://127.0.0.1:6379/0" if dev else None)
    secret = env_secret("DJANGO_SECRET_KEY", get_random_secret_key() if dev else None)
    dev_keys = Path(base_dir).resolve().parent.parent / ".run" / "keys"
    return {
        "SERVICE_NAME": service,
        "BASE_DIR": base_dir,
        "SECRET_KEY": secret,
        "DEBUG": False,  # never: tracebacks are not an API; dev mode changes nothing here
        "ALLOWED_HOSTS": env_list("ALLOWED_HOSTS", "*" if dev else "localhost"),
        "INSTALLED_APPS": ["rest_framework", "drf_spectacular", "shared.platform", *apps],
        "MIDDLEWARE": [
            # outermost: compresses the final body, after no-store is known (shared.compression)
            "shared.compression.CompressionMiddleware",
            "shared.security.SecurityHeadersMiddleware",
            "shared.requestid.RequestIdMiddleware",
            "shared.observability.MetricsMiddleware",
            "shared.problems.BodySizeLimitMiddleware",
            # innermost: ETags of the view's identity body, If-None-Match → 304 (shared.conditional)
            "shared.conditional.ConditionalGetMiddleware",
        ],
        # gzip of public JSON responses (shared.compression; figures in docs/decisions.md)
        "COMPRESS_MIN_BYTES": env_int("COMPRESS_MIN_BYTES", 1024),
        "COMPRESS_LEVEL": env_int("COMPRESS_LEVEL", 6),
        "ROOT_URLCONF": f"{service}_service.urls",
        "WSGI_APPLICATION": f"{service}_service.wsgi.application",
        "DATABASES": {
            "default": database_from_url(
                env_str("DATABASE_URL", f"postgresql://{service}@127.0.0.1:15432/social" if dev else None)
            )
        },
        "DEFAULT_AUTO_FIELD": "django.db.models.BigAutoField",
        "USE_TZ": True,
        "TIME_ZONE": "UTC",
        "LANGUAGE_CODE": "en-us",
        "USE_I18N": False,
        "APPEND_SLASH": False,
        "DATA_UPLOAD_MAX_MEMORY_SIZE": env_int("MAX_BODY_BYTES", 64 * 1024),
        "REDIS_URL": redis_url,
        # the revocation set of access tokens (shared.revocation): one Redis for every service and the gateway
        "REVOCATION_REDIS_URL": env_str("REVOCATION_REDIS_URL", "") or redis_url,
        "CACHES": {
            "default": {
                # Django's Redis cache with shared.redis_clients' timeouts, failing open (a miss) when Redis is away
                "BACKEND": "shared.redis_clients.RedisCache",
                "LOCATION": redis_url,
                "KEY_PREFIX": service,
                "TIMEOUT": 300,
                "OPTIONS": redis_clients.connection_options(),
            }
        },
        "REST_FRAMEWORK": {
            "DEFAULT_AUTHENTICATION_CLASSES": ["shared.auth.AccessTokenAuthentication"],
            "DEFAULT_PERMISSION_CLASSES": ["shared.auth.IsEndUser"],
            "DEFAULT_PARSER_CLASSES": ["shared.parsers.JSONParser"],
            "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
            "EXCEPTION_HANDLER": "shared.problems.exception_handler",
            "UNAUTHENTICATED_USER": None,
            "DEFAULT_SCHEMA_CLASS": "shared.openapi.AutoSchema",
            # throttles key clients by shared.client_ip (the gateway's X-Client-IP), never by X-Forwarded-For
            "NUM_PROXIES": 0,
        },
        # docs/api-schema.md: views declare their contract with @extend_schema and shared.openapi
        "SPECTACULAR_SETTINGS": {
            "TITLE": f"{service} service",
            "VERSION": "1.0.0",
            "SERVE_INCLUDE_SCHEMA": False,
            "COMPONENT_SPLIT_REQUEST": True,
        },
        # peers whose X-Client-IP is believed (the gateway's addresses, CIDRs): shared/client_ip.py
        "TRUSTED_GATEWAY_PEERS": env_str("TRUSTED_GATEWAY_PEERS", "127.0.0.1/32,::1/128"),
        "JWT_ISSUER": env_str("JWT_ISSUER", "social-users"),
        "JWT_AUDIENCE": env_str("JWT_AUDIENCE", "social-api"),
        "JWKS_URL": env_str("JWKS_URL", "http://127.0.0.1:8100/.well-known/jwks.json"),
        # service credentials (shared.service_keys): this service's Ed25519 keys and every service's
        # public keys; dev mode defaults to keys generated under .run/keys on first use. Outside dev
        # mode only the processes that call another service or serve /internal/ (API replicas,
        # workers) need them, so they are checked where they are used, not here.
        "SERVICE_SIGNING_KEYS": env_str(
            "SERVICE_SIGNING_KEYS", f"{service}-dev={dev_keys / f'service-{service}.pem'}" if dev else ""
        ),
        "SERVICE_PUBLIC_KEYS": env_str("SERVICE_PUBLIC_KEYS", str(dev_keys / "service-keys.json") if dev else ""),
        "SLOW_QUERY_MS": env_float("SLOW_QUERY_MS", 30.0),
        "SLOW_REQUEST_MS": env_float("SLOW_REQUEST_MS", 100.0),
        "LOGGING": logging_config(service, env_str("LOG_LEVEL", "INFO")),
    }
