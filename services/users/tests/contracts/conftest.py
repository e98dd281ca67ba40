import os
import sys
from pathlib import Path

import pytest

from shared.testing import ServiceProcess

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "contracts"))  # broker.py: the repository as the contract broker

# the Pact FFI reports usage to a metrics server unless told not to: tests make no outside calls
os.environ["PACT_DO_NOT_TRACK"] = "true"


@pytest.fixture(scope="module")
def users_url(django_db_setup):
    """The real users service (gunicorn, production config) on the migrated test database; the
    verifier replays the consumers' requests at it over HTTP."""
    users = ServiceProcess(ROOT / "services" / "users", "users", {**os.environ, "GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "4"})
    try:
        yield users.url
    finally:
        users.stop()
