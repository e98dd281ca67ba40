import itertools

import pytest
from accounts import services
from rest_framework.test import APIClient

from shared.testing import django_db_setup  # noqa: F401  (run migrations on the bootstrapped database)

_seq = itertools.count(1)
PASSWORD = "correct horse battery staple"


@pytest.fixture
def make_user(db):
    """Create a registered user; returns (user, token pair)."""

    def make(username: str | None = None, *, email: str | None = None, password: str = PASSWORD):
        name = username or f"user{next(_seq)}"
        return services.user_register(username=name, email=email or f"{name}@example.com", password=password)

    return make


@pytest.fixture
def client_for():
    """An API client authenticated as the given user (a real access token)."""

    def make(user):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {services.access_token_issue(user=user)}")
        return client

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice")[0]


@pytest.fixture
def bob(make_user):
    return make_user("bob")[0]


@pytest.fixture
def service_client():
    """A client presenting a real service credential, as feed or notifications would."""
    from shared.testing import service_token

    client = APIClient()
    token = service_token("feed", "users")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["tests.hashers.FastArgon2PasswordHasher"]
