import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from shared import testing as polling
from shared.events import Event, envelope_to
from shared.testing import ServiceProcess, django_db_setup  # noqa: F401  (django_db_setup: run migrations on the bootstrapped database)

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def users_url():
    """The real users service (gunicorn), as notifications meets it in production."""
    env = {
        **os.environ,
        "DATABASE_URL": os.environ["USERS_DATABASE_URL"],
        "DJANGO_SETTINGS_MODULE": "users_service.settings",
        "GUNICORN_WORKERS": "1",
        "THROTTLE_REGISTER_IP": "100000/min",
    }
    cwd = ROOT / "services" / "users"
    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=cwd, env=env, check=True)
    users = ServiceProcess(cwd, "users", env, quiet=False)
    try:
        yield users.url
    finally:
        users.stop()


@pytest.fixture(autouse=True)
def _services_wired(settings, users_url):
    from notifications.actors import users_client

    from shared.auth import key_source

    settings.USERS_URL = users_url
    settings.JWKS_URL = f"{users_url}/.well-known/jwks.json"
    users_client.cache_clear()
    key_source.cache_clear()
    yield
    users_client.cache_clear()
    key_source.cache_clear()


class RegisteredUser:
    def __init__(self, body: dict):
        self.id = int(body["user"]["id"])
        self.username = body["user"]["username"]
        self.access = body["access"]


@pytest.fixture
def register(users_url):
    """Register a real account with the users service; returns its id, name and access token."""

    def make(prefix: str = "u", display_name: str = "") -> RegisteredUser:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        response = httpx.post(
            f"{users_url}/api/v1/auth/register",
            json={
                "username": name,
                "email": f"{name}@example.com",
                "password": "correct horse battery staple",
                "display_name": display_name or name.upper(),
            },
            timeout=10,
        )
        assert response.status_code == 201, response.text
        return RegisteredUser(response.json())

    return make


@pytest.fixture
def client_for():
    from rest_framework.test import APIClient

    def make(user: RegisteredUser):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {user.access}")
        return client

    return make


@pytest.fixture
def deliver(django_capture_on_commit_callbacks):
    """Hand an event to the consumer exactly as the worker does (inbox + handlers), commit hooks run."""
    from shared.events.inbox import dispatch

    def run(type_: str, data: dict, *, event_id: uuid.UUID | None = None, producer: str = "users") -> tuple[bool, dict]:
        from django.utils import timezone

        envelope = envelope_to(
            Event(
                id=event_id or uuid.uuid4(),
                type=type_,
                version=1,
                occurred_at=timezone.now(),
                producer=producer,
                data=data,
                request_id="req-test",
            )
        )
        with django_capture_on_commit_callbacks(execute=True):
            applied = dispatch(envelope)
        return applied, envelope

    return run


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05):
    """`shared.testing.wait_until`, positional arguments as this suite's tests pass them."""
    return polling.wait_until(predicate, timeout=timeout, interval=interval)
