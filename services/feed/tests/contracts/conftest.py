"""Consumer contract tests: feed's real users client against the Pact mock server, not the real
users service (that is what a contract test is for: users verifies the pact on its own side)."""

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from authors.client import users_client_reset
from pact import Pact

# contracts/pact_files.py (where pacts live, the committed-file check) for the test modules
sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "contracts"))
# the Pact FFI reports usage to a metrics server unless told not to: tests make no outside calls
os.environ["PACT_DO_NOT_TRACK"] = "true"


@pytest.fixture(autouse=True)
def _users():
    """Replaces the suite's autouse fixture that starts a real users process and points feed at it."""
    yield


@pytest.fixture
def users_mock(settings):
    """users_mock(*interactions): a context manager serving those interactions (functions that add
    them to a Pact) as users, with feed's process-wide users client pointed at the mock server.
    Leaving it fails the test if any interaction was not requested or a request matched none."""

    @contextmanager
    def serve(*interactions):
        pact = Pact("feed", "users")
        for define in interactions:
            define(pact)
        with pact.serve(addr="127.0.0.1") as server:
            settings.USERS_URL = str(server.url)
            users_client_reset()
            try:
                yield server
            finally:
                users_client_reset()  # the next test builds its client from the restored settings

    return serve
