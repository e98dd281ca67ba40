"""The embedded Postgres and Redis of `make run` / `make test` (dev/infra.py), started for real.

As root, Postgres runs as an unprivileged user that cannot enter a checkout under a 0700
directory (root's home, `mktemp -d`): the binaries and data then live in a per-checkout runtime
directory instead, and the checkout's own directories keep their modes. Failures to start name
their cause and fix (dev/preflight.py for what `make` needs before that).
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg2
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "dev"))
import infra  # noqa: E402
import preflight  # noqa: E402

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the Postgres user switch happens only when run as root")


@pytest.fixture
def private_dir():
    """A directory only its owner can enter, like root's home or `mktemp -d`."""
    path = Path(tempfile.mkdtemp(prefix="private-clone-"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def runtime_parent(monkeypatch):
    """SOCIAL_RUNTIME_DIR for this test alone, so it never touches the checkout's real runtime dir."""
    path = Path(tempfile.mkdtemp(prefix="social-runtime-test-", dir="/var/tmp" if Path("/var/tmp").is_dir() else None))
    os.chmod(path, 0o755)
    monkeypatch.setenv("SOCIAL_RUNTIME_DIR", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _modes(top: Path) -> dict[Path, int]:
    return {p: stat.S_IMODE(p.stat().st_mode) for p in [top, *top.rglob("*")] if p.is_dir() and not p.is_symlink()}


def _sql(url: str, query: str):
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(query)
        return cur.fetchone()[0] if cur.description else None


@as_root
def test_postgres_starts_as_root_from_a_checkout_in_a_private_directory(private_dir, runtime_parent):
    clone = private_dir / "clone"
    site = clone / ".venv" / "lib" / "python3.11" / "site-packages"  # the wheel's layout, in the private checkout
    real_site = infra.pg_install_dir().parent.parent
    for part in ["pgserver/pginstall", *(p.name for p in real_site.glob("pgserver*.libs"))]:
        shutil.copytree(real_site / part, site / part, symlinks=True)
    install = site / "pgserver" / "pginstall"
    datadir = clone / ".run" / "postgres"
    pg_ids = infra._pg_ids()
    assert not infra.can_traverse(install / "bin", *pg_ids), "premise: the Postgres user cannot reach the clone"
    before = _modes(private_dir)

    server = infra.start_postgres(datadir, infra.free_port(), pg_install=install)
    try:
        assert _sql(server.url, "select 1") == 1
        data_directory = Path(_sql(server.url, "show data_directory"))
        assert data_directory == server.datadir
        assert data_directory.is_relative_to(infra.runtime_dir()) and infra.runtime_dir().parent == runtime_parent
        _sql(server.url, "create table kept (id int)")
    finally:
        server.stop()

    # a second start (the next `make run`) finds the same data again
    again = infra.start_postgres(datadir, infra.free_port(), pg_install=install)
    try:
        assert _sql(again.url, "select count(*) from kept") == 0
    finally:
        again.stop()

    assert _modes(private_dir) == before, "the checkout's directories keep their modes"
    assert not datadir.exists()
    infra.clean_runtime_dir()  # `make clean`
    assert not infra.runtime_dir().exists()


@as_root
def test_embedded_in_a_private_directory_throws_its_data_away_when_ephemeral(private_dir, runtime_parent, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    run_dir = private_dir / "run"
    run_dir.mkdir()
    with infra.embedded(run_dir, ephemeral=True) as (database_url, redis_url):
        assert _sql(database_url, "select 1") == 1
        import redis

        assert redis.Redis.from_url(redis_url).ping()
        relocated = Path(_sql(database_url, "show data_directory"))
        assert relocated.is_relative_to(infra.runtime_dir())
    assert not relocated.exists()
    assert stat.S_IMODE(private_dir.stat().st_mode) == 0o700


@as_root
def test_runtime_dir_made_by_someone_else_is_refused(runtime_parent):
    planted = infra.runtime_dir()
    planted.mkdir()
    os.chmod(planted, 0o777)
    with pytest.raises(infra.InfraError, match="not a root-owned directory"):
        infra._private_runtime_dir()


@as_root
def test_can_traverse_follows_the_mode_bits(private_dir):
    uid, gid = infra._pg_ids()
    inner = private_dir / "inner"
    inner.mkdir()
    assert infra.can_traverse(private_dir, 0, 0)
    assert not infra.can_traverse(inner, uid, gid)
    os.chmod(private_dir, 0o711)
    assert infra.can_traverse(inner, uid, gid)


def _occupied_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


def test_a_port_in_use_is_named_with_the_fix(tmp_path):
    sock, port = _occupied_port()
    with sock:
        with pytest.raises(infra.InfraError, match=rf"port {port} .*already in use.*REDIS_URL"):
            infra.start_redis(tmp_path / "redis", port)
        with pytest.raises(infra.InfraError, match=rf"port {port} .*already in use.*DATABASE_URL"):
            infra.start_postgres(tmp_path / "postgres", port)


def test_make_run_with_its_postgres_port_taken_says_so_without_a_traceback():
    try:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 15432))
        sock.listen()
    except OSError:
        pytest.skip("port 15432 is in use here (a `make run` is up), which is the case this test creates")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    with sock:
        result = subprocess.run(
            [sys.executable, str(ROOT / "dev" / "run.py"), "--quiet"], env=env, capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 1
    assert "port 15432" in result.stderr and "DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_preflight_names_a_wrong_python_and_the_fix(monkeypatch):
    monkeypatch.setattr(sys, "version_info", (3, 12, 1, "final", 0))
    [problem] = preflight.check_python()
    assert "Python 3.11 is required" in problem and "3.12" in problem and "PY=" in problem


def test_preflight_names_a_missing_compiler_and_the_fix(monkeypatch):
    monkeypatch.delenv("GATEWAY_PURE_PYTHON", raising=False)
    result = subprocess.run(
        [sys.executable, str(ROOT / "dev" / "preflight.py"), "compiler"],
        env={**os.environ, "PATH": "/nonexistent"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "no C compiler" in result.stderr and "apt-get install gcc" in result.stderr
    assert "GATEWAY_PURE_PYTHON=1" in result.stderr


def test_preflight_passes_on_this_machine():
    for check in ("python", "compiler"):
        result = subprocess.run([sys.executable, str(ROOT / "dev" / "preflight.py"), check], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_a_server_restarts_on_its_port_while_its_old_connections_wait_out_time_wait(tmp_path):
    import redis

    port = infra.free_port()
    server = infra.start_redis(tmp_path / "redis", port)
    client = redis.Redis(port=port)
    assert client.ping()
    server.stop()  # the server closes first: its side of the connection is now in TIME_WAIT
    client.close()
    again = infra.start_redis(tmp_path / "redis", port)
    try:
        assert redis.Redis(port=port).ping()
    finally:
        again.stop()
