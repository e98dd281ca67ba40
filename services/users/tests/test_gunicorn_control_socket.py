"""gunicorn's control socket (gunicornc) is off in the production config unless
GUNICORN_CONTROL_SOCKET gives the master a path of its own: by default every gunicorn 25+ master
takes over ~/.gunicorn/gunicorn.ctl, so the masters of one machine would replace each other's."""

import os
import stat
from pathlib import Path

from shared.testing import ServiceProcess, wait_until

USERS_DIR = Path(__file__).resolve().parents[1]


def _env(home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "GUNICORN_CONTROL_SOCKET")}
    return {**env, "HOME": str(home), "GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "1", **extra}


def test_no_control_socket_by_default(tmp_path):
    users = ServiceProcess(USERS_DIR, "users", _env(tmp_path))
    try:
        assert users.proc.poll() is None
        assert not (tmp_path / ".gunicorn").exists()
    finally:
        users.stop()


def test_a_control_socket_at_the_path_given(tmp_path):
    path = tmp_path / "users.ctl"
    users = ServiceProcess(USERS_DIR, "users", _env(tmp_path, GUNICORN_CONTROL_SOCKET=str(path)))
    try:
        wait_until(lambda: path.exists(), timeout=10, what="the control socket")
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert not (tmp_path / ".gunicorn").exists()
    finally:
        users.stop()
