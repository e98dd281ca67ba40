"""Feed tests run against the real users service: a gunicorn process started once per session
on the users role's database (migrated first), reached over HTTP exactly as in production.
Users and follows are made through users' public API; access tokens are real ones."""

import itertools
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from authors.client import users_client_reset
from django.conf import settings
from rest_framework.test import APIClient

from shared import auth
from shared.testing import ServiceProcess, django_db_setup  # noqa: F401  (django_db_setup: run migrations on the bootstrapped database)

ROOT = Path(__file__).resolve().parents[3]
USERS_DIR = ROOT / "services" / "users"
RUN_ID = uuid.uuid4().hex[:6]
_seq = itertools.count(1)


def users_env() -> dict:
    base = os.environ["REDIS_URL"].rsplit("/", 1)[0]
    return {
        **os.environ,
        "DATABASE_URL": os.environ["USERS_DATABASE_URL"],
        "REDIS_URL": f"{base}/14",
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "8",
        "THROTTLE_REGISTER_IP": "100000/min",
        "THROTTLE_LOGIN_IP": "100000/min",
        "SERVICE_NAME": "users",
        "DJANGO_SETTINGS_MODULE": "users_service.settings",
        # the revocation set is one Redis for every service: users writes where feed checks
        "REVOCATION_REDIS_URL": os.environ["REDIS_URL"],
    }


def UsersProcess() -> ServiceProcess:
    """A real users service (gunicorn) on a free port."""
    return ServiceProcess(USERS_DIR, "users", users_env())


def point_feed_at(url: str) -> None:
    if url == settings.USERS_URL and auth.key_source.cache_info().currsize:
        return
    if auth.key_source.cache_info().currsize:
        auth.key_source()._client.close()  # the JWKS client's pool; a new one is made for the new URL
    settings.USERS_URL = url
    settings.JWKS_URL = url + "/.well-known/jwks.json"
    users_client_reset()
    auth.key_source.cache_clear()


@pytest.fixture(scope="session")
def users_service():
    subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=USERS_DIR, env=users_env(), check=True)
    process = UsersProcess()
    point_feed_at(process.url)
    yield process
    process.stop()
    _http.close()


@pytest.fixture(autouse=True)
def _users(users_service):
    point_feed_at(users_service.url)  # a test may have pointed feed elsewhere
    yield


_http = httpx.Client(timeout=10)


class Person:
    def __init__(self, users_url: str, stem: str):
        self.users_url = users_url
        self.username = f"{stem}_{RUN_ID}_{next(_seq)}"[:30]
        response = _http.post(
            users_url + "/api/v1/auth/register",
            json={
                "username": self.username,
                "email": f"{self.username}@example.com",
                "password": "correct horse battery staple",
                "display_name": stem.title(),
            },
        )
        assert response.status_code == 201, response.text
        body = response.json()
        self.id = int(body["user"]["id"])
        self.access = body["access"]
        self.api = APIClient()
        self.api.credentials(HTTP_AUTHORIZATION=f"Bearer {self.access}")

    def follow(self, other: "Person") -> None:
        response = _http.post(
            f"{self.users_url}/api/v1/users/{other.username}/follow", headers={"Authorization": f"Bearer {self.access}"}
        )
        assert response.status_code == 201, response.text

    def unfollow(self, other: "Person") -> None:
        response = _http.delete(
            f"{self.users_url}/api/v1/users/{other.username}/follow", headers={"Authorization": f"Bearer {self.access}"}
        )
        assert response.status_code == 204, response.text

    def summary(self) -> dict:
        return {
            "id": str(self.id),
            "username": self.username,
            "display_name": self.display_name,
            "avatar_url": "",
            "placeholder": False,
        }

    @property
    def display_name(self) -> str:
        return self.username.split("_")[0].title()


@pytest.fixture
def person(users_service):
    """Register a real user in the users service: person("alice") → Person."""
    return lambda stem="user": Person(users_service.url, stem)


@pytest.fixture
def count_hand_overs(monkeypatch):
    """`count_hand_overs(view)`: the methods of the requests a plain view (feed_service.fastpath.PlainGet)
    hands to its DRF view, in a list that fills as they come."""

    def count(view) -> list[str]:
        calls: list[str] = []
        real = view.drf_view

        def drf_view(request, *args, **kwargs):
            calls.append(request.method)
            return real(request, *args, **kwargs)

        monkeypatch.setattr(view, "drf_view", drf_view)
        return calls

    return count


@pytest.fixture
def redis_commands(monkeypatch):
    """Count the Redis commands (script calls included) sent outside pipelines."""
    import redis

    sent: list[str] = []
    real = redis.Redis.execute_command

    def execute_command(self, *args, **options):
        sent.append(str(args[0]))
        return real(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", execute_command)
    return sent


class RealSession:
    """A session of the real users service (login, logout) for a test user, whose tokens the feed
    process verifies as it would in production."""

    def __init__(self, users_url: str, person):
        self.users_url = users_url
        login = httpx.post(
            users_url + "/api/v1/auth/login",
            json={"username": person.username, "password": "correct horse battery staple"},
        )
        assert login.status_code == 200, login.text
        self.tokens = login.json()
        person.api.credentials(HTTP_AUTHORIZATION=f"Bearer {self.tokens['access']}")

    def logout(self) -> None:
        response = httpx.post(
            self.users_url + "/api/v1/auth/logout",
            headers={"Authorization": f"Bearer {self.tokens['access']}", "Idempotency-Key": str(uuid.uuid4())},
            json={"refresh": self.tokens["refresh"]},
        )
        assert response.status_code in (200, 204), response.text


@pytest.fixture
def real_session(users_service):
    """`real_session(person)`: log the person in on the real users service and use its access token."""
    return lambda person: RealSession(users_service.url, person)
