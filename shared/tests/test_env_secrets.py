"""Production settings refuse placeholder secrets: each service's real settings module, loaded in a
fresh interpreter without DJANGO_DEV, as a container would load it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REAL = "k7Qm2vX9pL4sT8wZ1yB6nC3hJ5fD0gR-" + "a" * 8
LOAD = "import django; django.setup(); from django.conf import settings; print(len(settings.SECRET_KEY))"


def load_settings(service: str, **overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_DEV", "DJANGO_SETTINGS_MODULE"}}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": f"{service}_service.settings",
            "DATABASE_URL": f"postgresql://{service}:pw@127.0.0.1:9/social",  # never connected to
            "REDIS_URL": "redis://127.0.0.1:9/0",
            "USERS_URL": "http://127.0.0.1:9",
            "JWT_SIGNING_KEYS": "k1=/nonexistent.pem",
            "DJANGO_SECRET_KEY": REAL,
            **overrides,
        }
    )
    return subprocess.run(
        [sys.executable, "-c", LOAD], cwd=ROOT / "services" / service, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("service", ["users", "feed", "notifications"])
def test_production_settings_load_with_real_secrets(service):
    result = load_settings(service)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(len(REAL))


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("DJANGO_SECRET_KEY", "change-me-in-production-0123456789abcdef", "placeholder"),
        ("DJANGO_SECRET_KEY", "dev-secret-key-not-for-production-xxxxxxxxxxxxxxxxxxxx", "placeholder"),
        ("DJANGO_SECRET_KEY", "CHANGE-ME", "placeholder"),
        ("DJANGO_SECRET_KEY", "short-but-random-9f3k", "at least 32 characters"),
        ("DJANGO_SECRET_KEY", "", "is required"),
    ],
)
def test_production_settings_refuse_placeholder_secrets(name, value, reason):
    result = load_settings("feed", **{name: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and name in result.stderr and reason in result.stderr
