import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "dev"))
import infra  # noqa: E402

# the Pact FFI reports usage to a metrics server unless told not to: tests make no outside calls
os.environ["PACT_DO_NOT_TRACK"] = "true"


@pytest.fixture(scope="module")
def users_url(django_db_setup):
    """The real users service (gunicorn, production config) on the migrated test database; the
    verifier replays the consumers' requests at it over HTTP."""
    port = infra.free_port()
    env = {**os.environ, "BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "4",
           "SERVICE_NAME": "users", "DJANGO_SETTINGS_MODULE": "users_service.settings"}
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:shared.gunicorn_conf", "users_service.wsgi"],
                            cwd=ROOT / "services" / "users", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        infra.wait_for_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
