"""`make containers-test`: docker-compose.yml and the project's images, for real, with podman.

1. Tools: podman, runc and debootstrap from Debian's packages (installed when missing, as root),
   podman-compose from the dev requirements; podman's system containers.conf gets
   `default_ulimits = []` and `runtime = "runc"` unless it sets them.
2. Images, all built at once (a few in parallel): a Debian bookworm root filesystem (debootstrap:
   Python 3.11 with its headers) imported as the Python base; the infrastructure stand-ins of
   dev/containers/infra.Containerfile built on it; the project's images built from their own
   Dockerfiles with only PYTHON_IMAGE changed, installing from a wheelhouse the host downloads once
   for every lock file (a pip configuration mounted into the build: no index, the wheelhouse as
   find-links; the locks' hashes still checked). Cached between runs on the same machine, under
   CONTAINERS_CACHE (default ~/.cache/social-containers): the rootfs tarball, the wheelhouse and
   apt's downloaded packages; base and stand-ins also in podman's image store under a hash of their
   inputs, and podman's layer cache, so a warm run rebuilds only what changed. Every network step
   (apt, pip, debootstrap, image builds) is retried.
3. `compose up` in the order docker-compose.yml's depends_on conditions give (podman before 4.6
   cannot wait for health, so this script waits, running `podman healthcheck run` itself: timed
   health checks need systemd), until every long-running container is healthy.
4. The system journey through the containerised gateway's published port: register, follow, post
   with a mention, home feed, follow and mention notifications, account deletion.
5. feed's replicas replaced one at a time with a newly built feed image while a light load runs
   through the gateway: zero failed requests.
6. `compose down`: no container, pod, network or volume of the project left.

Prints the time from `up` to all-healthy, each image's size and each phase's duration.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import infra  # dev/infra.py: free_port
import yaml

from shared.testing import wait_until

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "dev" / "containers"
PROJECT = "socialct"
PREFIX = f"localhost/{PROJECT}"
COMPOSE_FILE = ROOT / "docker-compose.yml"
PODMAN_COMPOSE = str(Path(sys.executable).parent / "podman-compose")
BASE_PACKAGES = "python3.11,python3.11-dev,python3-venv,ca-certificates"
CACHE = Path(os.environ.get("CONTAINERS_CACHE") or Path.home() / ".cache" / "social-containers")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# stand-in (a target of dev/containers/infra.Containerfile) -> the compose variable naming its image
STAND_INS = {
    "postgres": "POSTGRES_IMAGE",
    "redis": "REDIS_IMAGE",
    "pgbouncer": "PGBOUNCER_IMAGE",
    "prometheus": "PROMETHEUS_IMAGE",
    "alertmanager": "ALERTMANAGER_IMAGE",
    "postgres-exporter": "POSTGRES_EXPORTER_IMAGE",
    "redis-exporter": "REDIS_EXPORTER_IMAGE",
}
LOCK_FILES = [
    "services/users/requirements.lock",
    "services/feed/requirements.lock",
    "services/notifications/requirements.lock",
    "gateway/requirements.lock",
    "requirements/build.lock",
]
PROJECT_IMAGES = {
    "users": "services/users/Dockerfile",
    "feed": "services/feed/Dockerfile",
    "notifications": "services/notifications/Dockerfile",
    "gateway": "gateway/Dockerfile",
}
# no Debian package to stand in for them (dev/containers/README.md); the test turns tracing off
# (OTEL_TRACES_EXPORTER=none), so nothing sends to the collector it does not start
NOT_STARTED = {"grafana", "otel-collector", "jaeger"}
PASSWORD = "correct horse battery staple"
TIMINGS: dict[str, float] = {}


def log(message: str) -> None:
    print(f"[containers-test {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(
    cmd: list[str],
    *,
    attempts: int = 1,
    capture: bool = False,
    env: dict | None = None,
    check: bool = True,
    cwd: Path = ROOT,
    timeout: float | None = None,
) -> subprocess.CompletedProcess:
    """Run a command; network steps pass attempts > 1 and are retried with a growing pause."""
    for attempt in range(1, attempts + 1):
        result = subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            text=True,
            timeout=timeout,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
        )
        if result.returncode == 0 or not check:
            return result
        if attempt < attempts:
            log(f"attempt {attempt}/{attempts} failed ({result.returncode}): {' '.join(cmd[:4])} …; retrying")
            time.sleep(10 * attempt)
    detail = (result.stderr or "")[-3000:] if capture else ""
    raise RuntimeError(f"{' '.join(cmd)} exited with {result.returncode}\n{detail}")


def podman(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run(["podman", *args], **kwargs)


@contextlib.contextmanager
def phase(name: str):
    start = time.monotonic()
    log(f"{name} …")
    yield
    TIMINGS[name] = time.monotonic() - start
    log(f"{name}: {TIMINGS[name]:.0f} s")


# --- 1. tools ------------------------------------------------------------------------------------


def ensure_tools() -> None:
    if os.geteuid() != 0:
        raise RuntimeError("runs as root: rootful podman, debootstrap, and apt to install them")
    missing = [tool for tool in ("podman", "debootstrap", "runc") if shutil.which(tool) is None]
    if missing:
        log(f"installing {', '.join(missing)} from Debian's packages")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-q"], attempts=4, env=env)
        # netavark + aardvark-dns: networks with DNS between containers; iptables: published ports
        run(
            ["apt-get", "install", "-y", "-q", "podman", "debootstrap", "runc", "netavark", "aardvark-dns", "iptables"],
            attempts=4,
            env=env,
        )
    # As root without systemd, on a host with cgroups v1 and v2 mounted side by side: podman's default
    # ulimits cannot be applied, and crun refuses hybrid cgroups (runc accepts them).
    configure_podman({"containers": ("default_ulimits", "[]"), "engine": ("runtime", '"runc"')})
    if not Path(PODMAN_COMPOSE).exists():
        raise RuntimeError("podman-compose is installed by `make venv` (requirements/dev.txt)")


def configure_podman(settings: dict[str, tuple[str, str]], conf: Path = Path("/etc/containers/containers.conf")) -> None:
    """Set `key = value` under [section] of the system containers.conf unless the key is already set
    there; the file is written only when something was added (running it again changes nothing)."""
    original = conf.read_text() if conf.exists() else ""
    text = original
    for section, (key, value) in settings.items():
        if any(line.strip().startswith(f"{key} ") or line.strip().startswith(f"{key}=") for line in text.splitlines()):
            continue
        if f"[{section}]" in text:
            text = text.replace(f"[{section}]", f"[{section}]\n{key} = {value}", 1)
        else:
            text += f"\n[{section}]\n{key} = {value}\n"
    if text != original:
        log(f"{conf}: {', '.join(f'{k} = {v}' for k, v in settings.values())}")
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(text)


# --- 2. images -----------------------------------------------------------------------------------


def inputs_hash(*parts: str | Path) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.read_bytes() if isinstance(part, Path) else part.encode())
    return digest.hexdigest()[:12]


def image_exists(ref: str) -> bool:
    return podman("image", "exists", ref, check=False, capture=True).returncode == 0


def retried(what: str, action, attempts: int = 3):
    """A network step: run `action()` up to `attempts` times with a growing pause."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            if attempt == attempts:
                raise
            log(f"{what}: attempt {attempt}/{attempts} failed ({str(exc)[-300:]}); retrying")
            time.sleep(10 * attempt)


def base_image() -> str:
    """Debian bookworm with Debian's Python 3.11: podman's image store, else the cached rootfs
    tarball, else debootstrap (whose tarball is then cached)."""
    digest = inputs_hash(BASE_PACKAGES)
    ref = f"{PREFIX}/debian-python:bookworm-{digest}"
    if image_exists(ref):
        return ref
    tarball = CACHE / f"rootfs-bookworm-{digest}.tar"
    if not tarball.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="social-rootfs-") as tmp:
            rootfs = Path(tmp) / "rootfs"

            def debootstrap() -> None:
                shutil.rmtree(rootfs, ignore_errors=True)
                run(["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(rootfs)], capture=True)

            retried("debootstrap", debootstrap)
            run(["rm", "-rf", f"{rootfs}/var/cache/apt/archives", f"{rootfs}/var/lib/apt/lists"])
            run(["mkdir", "-p", f"{rootfs}/var/cache/apt/archives/partial", f"{rootfs}/var/lib/apt/lists/partial"])
            partial = tarball.with_suffix(".partial")
            run(["tar", "-C", str(rootfs), "-cf", str(partial), "."])
            partial.rename(tarball)
    podman("import", str(tarball), ref, capture=True)
    return ref


def wheelhouse() -> Path:
    """Every wheel the lock files name, downloaded once on the host (hashes checked) into the cache;
    later runs download only what a changed lock adds."""
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    stamp = wheels / f".complete-{inputs_hash(*(ROOT / lock for lock in LOCK_FILES))}"
    if stamp.exists():  # these lock files' wheels are all there
        return wheels
    # --isolated: the host's own pip configuration (constraints, local indexes) does not apply; PyPI
    # through the host's CA bundle, as the image builds reach it
    cert = ["--cert", str(HOST_CA_BUNDLE)] if HOST_CA_BUNDLE.exists() else []
    for lock in LOCK_FILES:
        download = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--isolated",
            "--disable-pip-version-check",
            "-q",
            "--require-hashes",
            "--only-binary=:all:",
            "--no-deps",
            "--dest",
            str(wheels),
            "-r",
            str(ROOT / lock),
        ]
        # all there already (a warm run): no index asked
        if run([*download, "--no-index", "--find-links", str(wheels)], check=False, capture=True).returncode != 0:
            run([*download, *cert], attempts=3, capture=True)
    stamp.touch()
    return wheels


def build_mounts(wheels: Path, apt_cache: str, certs: bool = True) -> list[str]:
    """Mounted into every RUN of a build (never into the image): the host's CA certificates (TLS
    through an intercepting proxy), the wheelhouse with a pip configuration that installs only from
    it, and a host directory as apt's package cache."""
    pip_conf = CACHE / "pip-wheelhouse.conf"
    pip_conf.write_text("[global]\nno-index = true\nfind-links = /wheels\n")
    archives = CACHE / "apt" / apt_cache
    (archives / "partial").mkdir(parents=True, exist_ok=True)
    mounts = ["-v", f"{wheels}:/wheels:ro", "-v", f"{pip_conf}:/etc/pip.conf:ro", "-v", f"{archives}:/var/cache/apt/archives"]
    return (["-v", "/etc/ssl/certs:/etc/ssl/certs:ro"] if certs else []) + mounts


def stand_in_images(base: str) -> dict[str, str]:
    """One build of infra.Containerfile's shared package stage, then a cheap target per stand-in."""
    files = sorted(path for path in HERE.iterdir() if path.name != "README.md")
    tag = inputs_hash(base, *files)
    refs = {}
    for name in STAND_INS:
        ref = f"{PREFIX}/{name}:{tag}"
        if not image_exists(ref):
            podman(
                "build",
                "-q",
                "--format",
                "docker",
                "--build-arg",
                f"DEBIAN_IMAGE={base}",
                "--target",
                name,
                *build_mounts(CACHE / "wheels", "infra", certs=False),
                "-f",
                str(HERE / "infra.Containerfile"),
                "-t",
                ref,
                str(HERE),
                attempts=3,
                capture=True,
            )
        refs[name] = ref
    return refs


def build_project_image(name: str, base: str, tag: str, *extra: str) -> str:
    """The project's Dockerfile as it is; only PYTHON_IMAGE changes (build_mounts: certificates,
    wheelhouse, apt cache)."""
    ref = f"{PREFIX}/{name}:{tag}"
    podman(
        "build",
        "-q",
        "--format",
        "docker",
        "--build-arg",
        f"PYTHON_IMAGE={base}",
        *build_mounts(CACHE / "wheels", name),
        *extra,
        "-f",
        PROJECT_IMAGES[name],
        "-t",
        ref,
        ".",
        attempts=3,
        capture=True,
    )
    return ref


def build_images() -> tuple[str, dict[str, str], dict[str, str], str]:
    """Base, stand-ins, the project's images and the replacement feed image. The wheelhouse
    download overlaps the base; then the stand-ins and the project images build side by side,
    three at a time (the machine has two cores; a build waits on the network or disk as often)."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        with phase("base image and wheelhouse"):
            wheels = pool.submit(wheelhouse)
            base = base_image()
            wheels.result()
        with phase("stand-in and project images"):
            stand_ins = pool.submit(stand_in_images, base)
            # the gateway first: its build (apt, a C compiler, Cython) is the longest
            order = sorted(PROJECT_IMAGES, key=lambda name: name != "gateway")
            futures = {name: pool.submit(build_project_image, name, base, "test") for name in order}
            # the replacement feed image: the same Dockerfile, a new build once feed's layers are cached
            # (a label makes it a new image)
            new_feed = pool.submit(
                lambda: (
                    futures["feed"].result()
                    and build_project_image("feed", base, "test-next", "--label", f"build={uuid.uuid4().hex}")
                )
            )
            images = {name: future.result() for name, future in futures.items()}
            return base, stand_ins.result(), images, new_feed.result()


def image_size(ref: str) -> int:
    return int(json.loads(podman("image", "inspect", ref, capture=True).stdout)[0]["Size"])


# --- 3. compose up -----------------------------------------------------------------------------


def configs_override(compose: dict, path: Path) -> Path:
    """podman-compose (1.6) ignores the top-level `configs` (Docker Compose mounts them): a second
    compose file bind-mounts each service's configs read-only at their targets, as Docker would."""
    files = {name: config["file"] for name, config in (compose.get("configs") or {}).items()}
    services = {}
    for name, service in compose["services"].items():
        mounts = [f"{files[c['source']]}:{c['target']}:ro" for c in service.get("configs", [])]
        if mounts:
            services[name] = {"volumes": mounts}
    path.write_text(yaml.safe_dump({"services": services}))
    return path


class Compose:
    def __init__(self, env: dict[str, str], workdir: Path):
        self.env = env
        compose = yaml.safe_load(COMPOSE_FILE.read_text())
        self.spec = compose["services"]
        self.services = [name for name in self.spec if name not in NOT_STARTED]
        self.files = [COMPOSE_FILE, configs_override(compose, workdir / "configs-override.yml")]
        self._stop = threading.Event()
        self._checker: threading.Thread | None = None

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        files = [arg for path in self.files for arg in ("-f", str(path))]
        return run([PODMAN_COMPOSE, "-p", PROJECT, *files, *args], env=self.env, check=check, capture=True)

    def containers(self, service: str | None = None, all_states: bool = True) -> list[dict]:
        args = ["ps", "--format", "json", "--filter", f"label=io.podman.compose.project={PROJECT}"]
        if all_states:
            args.insert(1, "-a")
        if service:
            args += ["--filter", f"label=com.docker.compose.service={service}"]
        return json.loads(podman(*args, capture=True).stdout or "[]")

    def has_healthcheck(self, service: str) -> bool:
        check = self.spec.get(service, {}).get("healthcheck")
        return check is not None and not check.get("disable")

    def health_checks(self) -> None:
        """podman's timed health checks need systemd: run the check of each running container that is
        not healthy yet every 2 s (a healthy one is left alone: the test only waits for health, and a
        check is a process started in the container, which the two cores feel)."""

        def check(name: str) -> None:
            with contextlib.suppress(subprocess.TimeoutExpired):  # a slow check counts as a failed one
                podman("healthcheck", "run", name, check=False, capture=True, timeout=30)

        with ThreadPoolExecutor(max_workers=4) as pool:
            while not self._stop.is_set():
                try:
                    names = [
                        c["Names"][0]
                        for c in self.containers(all_states=False)
                        if self.has_healthcheck(c["Labels"].get("com.docker.compose.service", ""))
                        and "(healthy)" not in c.get("Status", "")
                    ]
                    list(pool.map(check, names))
                except Exception as exc:  # the checks must go on; a stuck container shows in wait_for
                    log(f"health checks: {type(exc).__name__} {exc}")
                self._stop.wait(2.0)

    def start_health_checks(self) -> None:
        self._stop.clear()
        self._checker = threading.Thread(target=self.health_checks, daemon=True)
        self._checker.start()

    def stop_health_checks(self) -> None:
        self._stop.set()
        if self._checker:
            self._checker.join(timeout=60)

    def state(self, name: str) -> dict:
        return json.loads(podman("inspect", name, capture=True).stdout)[0]["State"]

    def wait_for(self, service: str, condition: str, deadline: float) -> None:
        names = [c["Names"][0] for c in self.containers(service)]
        assert names, f"no container for {service}"
        for name in names:
            while True:
                state = self.state(name)
                health = (state.get("Health") or state.get("Healthcheck") or {}).get("Status")
                if condition == "service_completed_successfully" and state["Status"] == "exited":
                    if state["ExitCode"] != 0:
                        raise RuntimeError(f"{name} exited with {state['ExitCode']}:\n{self.logs(name)}")
                    break
                if condition == "service_healthy" and health == "healthy":
                    break
                if condition == "service_started" and state["Status"] == "running":
                    break
                if state["Status"] == "exited" and condition != "service_completed_successfully":
                    raise RuntimeError(f"{name} exited with {state['ExitCode']}:\n{self.logs(name)}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name}: not {condition} (state {state['Status']}, health {health})\n{self.logs(name)}")
                time.sleep(0.5)

    def wait_for_container_healthy(self, name: str, deadline: float) -> None:
        while True:
            state = self.state(name)
            if (state.get("Health") or state.get("Healthcheck") or {}).get("Status") == "healthy":
                return
            if state["Status"] == "exited" or time.monotonic() > deadline:
                raise RuntimeError(f"{name} not healthy ({state['Status']}):\n{self.logs(name)}")
            time.sleep(0.5)

    def logs(self, name: str) -> str:
        result = podman("logs", "--tail", "40", name, check=False, capture=True)
        return (result.stdout + result.stderr)[-4000:]

    def up(self, timeout: float = 900.0) -> float:
        """Each service once its depends_on conditions hold (in compose-file order, which lists
        dependencies first); returns the seconds from the first `up` to every container healthy."""
        start = time.monotonic()
        deadline = start + timeout
        self.start_health_checks()
        pending = list(self.services)
        started: set[str] = set()
        while pending:  # in waves: every service whose dependencies have started, started together
            ready = [s for s in pending if all(d in started for d in self.depends_on(s))]
            assert ready, f"unresolvable depends_on among {pending}"
            for service in ready:
                for dependency, condition in self.depends_on(service).items():
                    self.wait_for(dependency, condition, deadline)
            log(f"up: {' '.join(ready)}")
            self("up", "-d", "--no-deps", "--no-build", *ready)
            started.update(ready)
            pending = [s for s in pending if s not in ready]
        for service in self.services:
            if self.spec[service].get("restart") == "no":
                self.wait_for(service, "service_completed_successfully", deadline)
            elif self.has_healthcheck(service):
                self.wait_for(service, "service_healthy", deadline)
        return time.monotonic() - start

    def depends_on(self, service: str) -> dict[str, str]:
        deps = self.spec[service].get("depends_on") or {}
        if isinstance(deps, list):
            return {name: "service_started" for name in deps}
        return {name: spec.get("condition", "service_started") for name, spec in deps.items()}

    def grace(self, service: str) -> int:
        return int(str(self.spec.get(service, {}).get("stop_grace_period", "10s")).rstrip("s"))

    def stop_all(self) -> None:
        """Every running container at once, each with its service's stop_grace_period (as `down`
        does), logging the ones slower than 5 s to stop and the last lines of those slower than 30 s."""

        def stop(container: dict) -> None:
            name = container["Names"][0]
            began = time.monotonic()
            podman(
                "stop",
                "-t",
                str(self.grace(container["Labels"].get("com.docker.compose.service", ""))),
                name,
                check=False,
                capture=True,
            )
            took = time.monotonic() - began
            if took > 5:
                log(f"stopping {name} took {took:.0f} s")
            # past its drain's bound (gateway: drain delay + drain timeout, 32 s of a 45 s grace): what
            # it said while stopping, before `down` removes it (CI keeps only this output)
            if took > 30:
                log(f"--- {name}, last lines:\n{self.logs(name)}")

        running = self.containers(all_states=False)
        with ThreadPoolExecutor(max_workers=max(1, len(running))) as pool:
            list(pool.map(stop, running))

    def down(self) -> None:
        self.stop_health_checks()
        self.stop_all()
        # removed in one podman call (compose's down removes them one by one), the replacement
        # replicas started outside compose included: they carry the project's labels
        stopped = [container["Names"][0] for container in self.containers()]
        if stopped:
            podman("rm", "-f", "-t", "30", *stopped, check=False, capture=True)
        self("down", "-v", check=False)  # and the project's volumes and network
        for kind, name in self.project_objects():
            if kind in ("network", "volume"):
                podman(kind, "rm", "-f", name, check=False, capture=True)

    @staticmethod
    def project_objects() -> list[tuple[str, str]]:
        """Networks, volumes and pods named after the project."""

        def listing(*args: str) -> list[dict]:
            return json.loads(podman(*args, "--format", "json", capture=True).stdout or "[]")

        found = [("network", n["name"]) for n in listing("network", "ls")]
        found += [("volume", v["Name"]) for v in listing("volume", "ls")]
        found += [("pod", p["Name"]) for p in listing("pod", "ps")]
        return [(kind, name) for kind, name in found if name.startswith(PROJECT)]

    def leftovers(self) -> list[str]:
        return [f"container {c['Names'][0]}" for c in self.containers()] + [
            f"{kind} {name}" for kind, name in self.project_objects()
        ]


# --- 4. the journey -------------------------------------------------------------------------------


def eventually(fetch, until, *, timeout: float = 60.0, what: str = "condition"):
    return wait_until(fetch, until, timeout=timeout, interval=0.3, what=what)


def register(api: httpx.Client, prefix: str) -> tuple[str, dict[str, str]]:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    response = api.post("/auth/register", json={"username": name, "email": f"{name}@example.com", "password": PASSWORD})
    assert response.status_code == 201, response.text
    return name, {"Authorization": f"Bearer {response.json()['access']}"}


def journey(api: httpx.Client) -> None:
    alice, alice_auth = register(api, "alice")
    bob, bob_auth = register(api, "bob")
    assert api.post(f"/users/{alice}/follow", headers=bob_auth).status_code == 201
    post = api.post("/posts", headers={**alice_auth, "Idempotency-Key": uuid.uuid4().hex}, json={"body": f"hi @{bob}"})
    assert post.status_code == 201, post.text
    post_id = post.json()["id"]
    eventually(
        lambda: api.get("/feed", headers=bob_auth).json(),
        lambda body: any(p["id"] == post_id for p in body["results"]),
        what="post in bob's home feed",
    )
    notes = eventually(
        lambda: api.get("/notifications", headers=alice_auth).json(),
        lambda body: [n["kind"] for n in body["results"]] == ["follow"],
        what="alice's follow notification",
    )
    assert notes["results"][0]["actor"]["username"] == bob
    notes = eventually(
        lambda: api.get("/notifications", headers=bob_auth).json(),
        lambda body: [n["kind"] for n in body["results"]] == ["mention"],
        what="bob's mention notification",
    )
    assert (notes["results"][0]["actor"]["username"], notes["results"][0]["post_id"]) == (alice, post_id)
    deleted = api.request("DELETE", "/users/me", headers=alice_auth, json={"password": PASSWORD})
    assert deleted.status_code == 204, deleted.text
    eventually(
        lambda: api.get(f"/users/{alice}", headers=bob_auth).status_code,
        lambda status: status == 404,
        what="deleted account's profile",
    )
    login = api.post("/auth/login", json={"username": alice, "password": PASSWORD})
    assert login.status_code == 401, login.text
    eventually(
        lambda: api.get("/feed", headers=bob_auth).json(),
        lambda body: all(p["id"] != post_id for p in body["results"]),
        what="deleted author's post out of the feed",
    )


# --- 5. replace feed under load --------------------------------------------------------------------


class Load:
    """A light, steady load through the gateway: home feed and post reads, one request at a time per
    client, each client its own user, about 8 requests/s each: under the gateway's per-user (20/s)
    and per-IP (50/s) limits, so every response that is not a 200 is a failure. A slow answer is not
    one: the client waits up to a minute (a replica's first requests on a loaded two-core machine
    can take seconds; what counts is that no request is lost or refused)."""

    def __init__(self, base_url: str, clients: int = 2, pause: float = 0.12):
        self.base_url = base_url
        self.clients = clients
        self.pause = pause
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.clients):
            with httpx.Client(base_url=self.base_url, timeout=60) as api:
                _, auth = register(api, f"loader{index}")
                post = api.post("/posts", headers={**auth, "Idempotency-Key": uuid.uuid4().hex}, json={"body": "load"})
                assert post.status_code == 201, post.text
            paths = ["/feed", f"/posts/{post.json()['id']}", "/feed?limit=5"]
            thread = threading.Thread(target=self._client, args=(auth, paths, index), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _client(self, auth: dict[str, str], paths: list[str], index: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=60, headers=auth) as api:
            n = index
            while not self.stop.is_set():
                path = paths[n % len(paths)]
                n += 1
                try:
                    response = api.get(path)
                    outcome = None if response.status_code == 200 else f"{path}: {response.status_code} {response.text[:200]}"
                except httpx.HTTPError as exc:
                    outcome = f"{path}: {type(exc).__name__} {exc}"
                with self._lock:
                    if outcome:
                        self.failures.append(outcome)
                    else:
                        self.ok += 1
                time.sleep(self.pause)

    def wait_for_more(self, requests: int, what: str) -> None:
        target = self.ok + requests
        eventually(lambda: self.ok, lambda ok: ok >= target, what=what)

    def finish(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=90)


def replace_feed(compose: Compose, new_image: str, gateway_url: str) -> tuple[int, int]:
    """Each feed replica in turn: start a clone on the new image (same network alias, so the gateway's
    DNS discovery finds it), wait until healthy, then stop the old one gracefully (SIGTERM, its
    stop_grace_period) and remove it. Returns (requests served, requests failed)."""
    grace = int(str(compose.spec["feed"].get("stop_grace_period", "30s")).rstrip("s"))
    old = [c["Names"][0] for c in compose.containers("feed")]
    assert len(old) >= 2, old
    load = Load(f"{gateway_url}/api/v1")
    load.start()
    try:
        load.wait_for_more(20, "load running")
        for index, name in enumerate(old):
            new = f"{PROJECT}_feed_new_{index + 1}"
            podman("container", "clone", name, new, new_image, capture=True)
            podman("start", new, capture=True)
            compose.wait_for_container_healthy(new, time.monotonic() + 180)
            load.wait_for_more(20, "load after the new replica")
            podman("stop", "-t", str(grace), name, capture=True)
            podman("rm", name, capture=True)
            load.wait_for_more(20, "load after the old replica left")
        images = {
            json.loads(podman("inspect", c["Names"][0], capture=True).stdout)[0]["ImageName"]
            for c in compose.containers("feed", all_states=False)
        }
        assert images == {new_image}, images
    finally:
        load.finish()
    for failure in load.failures[:20]:
        log(f"failed request: {failure}")
    return load.ok, len(load.failures)


# --- main ----------------------------------------------------------------------------------------


def main() -> int:
    total = time.monotonic()
    with phase("tools"):
        ensure_tools()
    with phase("images"):
        base, stand_ins, images, new_feed = build_images()
    for ref in [base, *stand_ins.values(), *images.values()]:
        log(f"image {ref}: {image_size(ref) / 1e6:.0f} MB")

    workdir = Path(tempfile.mkdtemp(prefix="socialct-"))
    key = workdir / "jwt_k1.pem"
    run([sys.executable, "-m", "shared.keygen", str(key)])
    run([sys.executable, "-m", "shared.service_keys", "--kid-suffix", "k1", str(workdir)], capture=True)
    for path in workdir.iterdir():
        path.chmod(0o644)  # the services run as UID 10001; keys are bind-mounted as secret files
    # published ports from infra's range below the kernel's ephemeral ports: one the kernel handed out
    # could be taken by a client socket elsewhere before podman binds it, a minute or more later
    gateway_port = infra.free_port()
    env = {
        **os.environ,
        "PYTHON_IMAGE": base,
        "IMAGE_PREFIX": PREFIX,
        "JWT_KEY_FILE": str(key),
        **{f"{name}_TAG": "test" for name in ("USERS", "FEED", "NOTIFICATIONS", "GATEWAY")},
        "SERVICE_KEYS_DIR": str(workdir),
        **{variable: stand_ins[name] for name, variable in STAND_INS.items()},
        "OTEL_TRACES_EXPORTER": "none",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(48),
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
        "GATEWAY_PUBLISH": f"127.0.0.1:{gateway_port}",
        **{f"{name}_PUBLISH": f"127.0.0.1:{infra.free_port()}" for name in ("PROMETHEUS", "GRAFANA", "ALERTMANAGER")},
    }
    compose = Compose(env, workdir)
    compose.down()  # a previous run that was killed leaves nothing in the way
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    status = 1
    try:
        with phase("compose up"):
            healthy_after = compose.up()
        log(f"up -> all healthy: {healthy_after:.0f} s")
        with phase("journey"), httpx.Client(base_url=f"{gateway_url}/api/v1", timeout=15) as api:
            journey(api)
        with phase("replace feed"):
            served, failed = replace_feed(compose, new_feed, gateway_url)
        log(f"feed replaced one replica at a time: {served} requests served, {failed} failed")
        if failed:
            raise AssertionError(f"{failed} requests failed while feed was replaced")
        status = 0
    except Exception as exc:
        log(f"FAILED: {exc}")
        for container in compose.containers():
            log(f"{container['Names'][0]}: {container.get('State')} {container.get('Status', '')}")
        for container in compose.containers():  # what the project's own processes said (CI keeps only this output)
            name = container["Names"][0]
            if any(f"_{svc}" in name for svc in ("users", "feed", "notifications", "gateway")):
                log(f"--- {name}, last lines:\n{compose.logs(name)}")
    finally:
        with phase("compose down"):
            compose.down()
        shutil.rmtree(workdir, ignore_errors=True)
        left = compose.leftovers()
        if left:
            log(f"left behind: {left}")
            status = 1
        with contextlib.suppress(Exception):
            podman("rmi", new_feed, check=False, capture=True)
    log(f"total {time.monotonic() - total:.0f} s; " + ", ".join(f"{k} {v:.0f} s" for k, v in TIMINGS.items()))
    log("PASSED" if status == 0 else "FAILED")
    return status


if __name__ == "__main__":
    sys.exit(main())
