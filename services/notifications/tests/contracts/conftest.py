"""Consumer contract tests: notifications' real users client against the Pact mock server, not the
real users service (that is what a contract test is for: users verifies the pact on its own side)."""

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from pact import Pact

# contracts/pact_files.py (where pacts live, the committed-file check) for the test modules
sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "contracts"))
# the Pact FFI reports usage to a metrics server unless told not to: tests make no outside calls
os.environ["PACT_DO_NOT_TRACK"] = "true"


@pytest.fixture(autouse=True)
def _services_wired():
    """Replaces the suite's autouse fixture that starts a real users process and points notifications at it."""
    yield


@pytest.fixture
def users_mock(settings):
    """users_mock(*interactions): a context manager serving those interactions (functions that add
    them to a Pact) as users, with notifications' process-wide users client pointed at the mock
    server. Leaving it fails the test if any interaction was not requested or a request matched none."""
    from notifications.actors import users_client

    @contextmanager
    def serve(*interactions):
        pact = Pact("notifications", "users")
        for define in interactions:
            define(pact)
        with pact.serve(addr="127.0.0.1") as server:
            settings.USERS_URL = str(server.url)
            users_client.cache_clear()
            try:
                yield server
            finally:
                users_client.cache_clear()  # the next test builds its client from the restored settings

    return serve
