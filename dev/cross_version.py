"""Cross-version system test: one service at a time, in both directions (docs/releasing.md).

For each component (users, feed, notifications, gateway) with last release tag T:
  - T of that component with the working tree of the others, and
  - the working tree of that component with the others' last releases,
each as the real processes of `make run` (gunicorn replicas, Celery workers, relays, beats, the
gateway) on a fresh database, through the system journey: register, post, follow (the earlier post
backfilled into the follower's feed), post with a mention, the follower's feed, like,
notifications (follow, like, mention), mark read, delete.

A release runs from a `git worktree` of its tag under .run/cross-version/<tag>, its own `shared` first
on PYTHONPATH; when the tag's locked requirements are those of the working tree, it runs with this
.venv, else with a venv built once per set of locked requirements (.run/cross-version/venv-<hash>:
releases whose locks are the same share it). An old gateway runs as plain Python
(GATEWAY_PURE_PYTHON=1: the worktree has no compiled extension).
Combinations whose code is identical (a component unchanged since its release runs the same code
either way) run once. A clone without the tags finds each release from its commit ("Release feed 1.0.0").
A component never released is an error, never a skip.

    python dev/cross_version.py            # `make cross-version` (called by .ci/run)
    python dev/cross_version.py --list     # the combinations, without running them
    python dev/cross_version.py --only "with notifications-v1.0.0" [--only …] [--port-offset 23000]
                                           # only the combinations whose line contains the text
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import infra
import release
import stack

from shared.testing import wait_until

ROOT = stack.ROOT
COMPONENTS = ["users", "feed", "notifications", "gateway"]
WORK = ROOT / ".run" / "cross-version"
# what a release's virtualenv is built from: identical to the working tree's -> reuse .venv
LOCKED = [
    "requirements",
    "services/users/requirements.txt",
    "services/feed/requirements.txt",
    "services/notifications/requirements.txt",
    "services/users/requirements.lock",
    "services/feed/requirements.lock",
    "services/notifications/requirements.lock",
    "gateway/requirements.lock",
]
PASSWORD = "correct horse battery staple"


class CrossVersionError(Exception):
    pass


def last_tags() -> dict[str, str]:
    """{component: its last release's tag name} (git_ref gives the ref to check out)."""
    tags, missing = {}, []
    for name in COMPONENTS:
        try:
            version = release.last_release(ROOT, name)
        except release.ReleaseError:
            missing.append(name)
            continue
        tags[name] = release.tag_name(name, version)
    if missing:
        raise CrossVersionError(
            f"no release of {', '.join(missing)} (looked for tags <component>-v<version> and commits "
            f'"Release <component> <version>"): the cross-version test runs each component\'s last release; make '
            f"the first ones with `make release SERVICE=<component>` (docs/releasing.md); a shallow clone needs "
            f"its history (`git fetch --unshallow`)"
        )
    return tags


def git_ref(tag: str) -> str:
    """The git ref of a release tag name: the tag, or in a clone without tags its release commit."""
    name, _, version = tag.rpartition("-v")
    return release.ref(ROOT, name, version)


def combinations(tags: dict[str, str]) -> list[tuple[str, dict[str, str]]]:
    """(description, {component: tag or "current"}) for each component in both directions; combinations
    running identical code (a component unchanged since its tag is the same code either way) once."""
    unchanged = {name for name, tag in tags.items() if not release.changed_since(ROOT, name, git_ref(tag))}
    out: list[tuple[str, dict[str, str]]] = []
    seen: set[tuple] = set()
    for name in COMPONENTS:
        for combo in (
            {n: tags[n] if n == name else "current" for n in COMPONENTS},
            {n: "current" if n == name else tags[n] for n in COMPONENTS},
        ):
            # an unchanged component runs from this checkout: the same code as its tag, no worktree
            combo = {n: "current" if n in unchanged else v for n, v in combo.items()}
            key = tuple(sorted(combo.items()))
            if key in seen:
                continue
            seen.add(key)
            changed = [n for n, v in combo.items() if v == "current" and n not in unchanged]
            released = [tags[n] for n in COMPONENTS if n not in changed]
            label = (
                f"working tree of {', '.join(changed)} with {', '.join(released)}"
                if changed
                else f"every component as released ({', '.join(released)})"
            )
            out.append((label, combo))
    return out


def worktree(tag: str) -> Path:
    path = WORK / tag
    commit = release.git(ROOT, "rev-list", "-n", "1", git_ref(tag))
    if path.exists() and release.git(path, "rev-parse", "HEAD", check=False) == commit:
        return path
    WORK.mkdir(parents=True, exist_ok=True)
    release.git(ROOT, "worktree", "prune")
    if path.exists():
        release.git(ROOT, "worktree", "remove", "--force", str(path))
    release.git(ROOT, "worktree", "add", "--detach", str(path), commit)
    return path


def locks_key(ref: str) -> str:
    """What a release's venv is built from, as a short hash: the blobs of its locked requirement
    files (`git ls-tree`), so releases with the same locks get the same key."""
    listing = release.git(ROOT, "ls-tree", "-r", ref, "--", *LOCKED)
    return hashlib.sha256(listing.encode()).hexdigest()[:12]


def python_for(tag: str, tree: Path) -> tuple[str, dict[str, str]]:
    """(interpreter, extra environment) to run a release from its worktree. The release's own `shared`
    comes first on PYTHONPATH either way (a shared venv's editable install points at one release)."""
    env = {"PYTHONPATH": str(tree / "shared" / "src")}
    same = subprocess.run(["git", "diff", "--quiet", git_ref(tag), "--", *LOCKED], cwd=ROOT).returncode == 0
    if same:
        return sys.executable, env
    venv = WORK / f"venv-{locks_key(git_ref(tag))}"
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        print(f"  {tag}: its locked requirements differ from the working tree's: building {venv} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", "requirements/dev.txt"],
            cwd=tree,
            check=True,
        )
        (venv / ".installed").touch()
    else:
        print(f"  {tag}: its locked requirements differ from the working tree's: running with {venv}", flush=True)
    return str(python), env


def eventually(fetch, until, *, timeout: float = 30.0, what: str = "condition"):
    return wait_until(fetch, until, timeout=timeout, interval=0.2, what=what)


def check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def journey(gateway_url: str) -> None:
    """register, follow, post with a mention, the follower's feed, like, notifications, read, delete."""
    with httpx.Client(base_url=gateway_url + "/api/v1", timeout=10) as api:

        def register(prefix: str) -> tuple[str, dict]:
            name = f"{prefix}_{uuid.uuid4().hex[:8]}"
            r = api.post("/auth/register", json={"username": name, "email": f"{name}@example.com", "password": PASSWORD})
            check(r.status_code == 201, f"register: {r.status_code} {r.text}")
            return name, {"Authorization": f"Bearer {r.json()['access']}"}

        alice, alice_auth = register("alice")
        bob, bob_auth = register("bob")
        carol, carol_auth = register("carol")
        # bob and carol open their (empty) feeds first, as the app does after sign-up: feed 1.0.0
        # could build a timeline from Postgres while a delivery to it was still uncommitted and lose
        # that delivery (fixed since: timelines.store.build_begin, with its own test in feed's suite);
        # the journey checks what the versions say to each other, not that old race
        for auth in (bob_auth, carol_auth):
            r = api.get("/feed", headers=auth)
            check(r.status_code == 200 and r.json()["results"] == [], f"empty feed: {r.status_code} {r.text}")
        check(api.post(f"/users/{alice}/follow", headers=carol_auth).status_code == 201, "carol follows alice")
        r = api.post("/posts", headers=alice_auth, json={"body": "before bob follows"})
        check(r.status_code == 201, f"first post: {r.status_code} {r.text}")
        earlier = r.json()
        # fan-out done (the post is in carol's feed) before bob follows: only the backfill of
        # user.followed by feed can then put it into bob's feed
        eventually(
            lambda: api.get("/feed", headers=carol_auth).json(),
            lambda b: any(p["id"] == earlier["id"] for p in b.get("results", [])),
            what="fan-out to carol",
        )
        r = api.post(f"/users/{alice}/follow", headers=bob_auth)
        check(r.status_code == 201, f"follow: {r.status_code} {r.text}")
        eventually(
            lambda: api.get("/feed", headers=bob_auth).json(),
            lambda b: any(p["id"] == earlier["id"] for p in b.get("results", [])),
            what="the earlier post backfilled into the new follower's feed (user.followed in feed)",
        )
        r = api.post("/posts", headers=alice_auth, json={"body": f"hello @{bob}"})
        check(r.status_code == 201, f"post: {r.status_code} {r.text}")
        post = r.json()
        check(post["mentions"] == [bob] and post["author"]["username"] == alice, f"post: {post}")
        feed = eventually(
            lambda: api.get("/feed", headers=bob_auth).json(),
            lambda b: any(p["id"] == post["id"] for p in b.get("results", [])),
            what="the post in the follower's feed",
        )
        item = next(p for p in feed["results"] if p["id"] == post["id"])
        check(item["author"]["username"] == alice, f"feed item author: {item}")
        r = api.post(f"/posts/{post['id']}/like", headers=bob_auth)
        check(r.status_code in (200, 201), f"like: {r.status_code} {r.text}")
        notes = eventually(
            lambda: api.get("/notifications", headers=alice_auth).json(),
            lambda b: len(b.get("results", [])) >= 3,
            what="alice's two follow and one like notifications",
        )
        check(
            sorted((n["kind"], n["actor"]["username"]) for n in notes["results"])
            == sorted([("follow", carol), ("follow", bob), ("like", bob)]),
            f"alice's notifications: {notes}",
        )
        notes = eventually(
            lambda: api.get("/notifications", headers=bob_auth).json(),
            lambda b: len(b.get("results", [])) >= 1,
            what="bob's mention notification",
        )
        check(
            [(n["kind"], n["actor"]["username"], n["post_id"]) for n in notes["results"]] == [("mention", alice, post["id"])],
            f"bob's notifications: {notes}",
        )
        check(api.get("/notifications/unread-count", headers=alice_auth).json() == {"count": 3}, "unread count")
        check(api.post("/notifications/read", headers=alice_auth, json={"all": True}).status_code == 204, "mark read")
        check(api.delete(f"/posts/{post['id']}", headers=alice_auth).status_code == 204, "delete")
        eventually(
            lambda: api.get("/feed", headers=bob_auth).json(),
            lambda b: all(p["id"] != post["id"] for p in b.get("results", [])),
            what="the deleted post leaves the feed",
        )


def run_one(
    index: int, label: str, combo: dict[str, str], admin_url: str, redis_url: str, offset: int, run_dir: Path
) -> str | None:
    from shared.db_bootstrap import bootstrap

    directory = run_dir / f"combo{index}"
    directory.mkdir()
    os.chmod(directory, 0o755)
    urls = bootstrap(admin_url, f"social_xv{index}", {n: f"{n}-xv" for n in stack.SERVICES})
    roots, pythons, envs = {}, {}, {}
    for name, version in combo.items():
        if version == "current":  # this checkout's shared, whatever the venv's editable install points at
            envs[name] = {"PYTHONPATH": str(ROOT / "shared" / "src")}
            continue
        tree = worktree(version)
        python, env = python_for(version, tree)
        roots[name], pythons[name] = tree, python
        envs[name] = {**env, **({"GATEWAY_PURE_PYTHON": "1"} if name == "gateway" else {})}
    ctx = stack.Context(
        admin_database_url=admin_url,
        redis_url=redis_url.rsplit("/", 1)[0] + f"/{index + 1}",
        service_database_urls=urls,
        run_dir=directory,
        replicas=1,
        port_offset=offset,
        extra_env={"THROTTLE_LOGIN_IP": "1000/min", "THROTTLE_REGISTER_IP": "1000/min"},
        roots=roots,
        pythons=pythons,
        component_env=envs,
    )
    started = time.monotonic()
    print(f"\n[{index}] {label}", flush=True)
    supervisor = stack.Supervisor(stack.plan(ctx), stream_logs=False, log_dir=directory)
    try:
        stack.prepare(ctx)
        supervisor.start_all()
        supervisor.wait_ready(timeout=120)
        journey(f"http://127.0.0.1:{ctx.gateway_port}")
    except Exception as exc:
        logs = "\n".join(
            f"--- {p.name} (last lines)\n"
            + "\n".join((directory / f"{p.name}.log").read_text(errors="replace").splitlines()[-15:])
            for p in supervisor.procs
            if (directory / f"{p.name}.log").exists()
        )
        print(f"[{index}] FAILED after {time.monotonic() - started:.0f}s: {type(exc).__name__}: {exc}\n{logs}", flush=True)
        return f"{label}: {type(exc).__name__}: {exc}"
    finally:
        supervisor.stop_all()
    print(f"[{index}] passed in {time.monotonic() - started:.0f}s", flush=True)
    return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cross_version", description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print the combinations only")
    parser.add_argument(
        "--only",
        action="append",
        metavar="TEXT",
        help="run only the combinations whose line (as --list prints it) contains TEXT; repeatable",
    )
    parser.add_argument(
        "--port-offset", type=int, help="the stack's port offset (a multiple of 500), instead of the first free block"
    )
    args = parser.parse_args(argv)
    try:
        tags = last_tags()
    except CrossVersionError as exc:
        print(f"cross-version: {exc}", file=sys.stderr)
        return 1
    print("cross-version: last releases " + ", ".join(tags.values()), flush=True)
    combos = combinations(tags)
    if args.only:
        combos = [(label, combo) for label, combo in combos if any(text in label for text in args.only)]
        if not combos:
            print(f"cross-version: no combination matches {' or '.join(map(repr, args.only))} (see --list)", file=sys.stderr)
            return 2
    for label, _combo in combos:
        print(f"  run: {label}")
    if args.list:
        return 0
    offset = infra.claim_port_offset(only=args.port_offset)  # the same lock files as tests/conftest.py
    failures = []
    with tempfile.TemporaryDirectory(prefix="social-xv-") as tmp:
        run_dir = Path(tmp)
        os.chmod(run_dir, 0o755)
        with open(run_dir / "infra.log", "w") as log, infra.embedded(run_dir, log=log, ephemeral=True) as (admin, redis):
            for index, (label, combo) in enumerate(combos):
                failure = run_one(index, label, combo, admin, redis, offset, run_dir)
                if failure:
                    failures.append(failure)
    if failures:
        print("\ncross-version: FAILED\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print(f"\ncross-version: {len(combos)} combination(s) passed the journey")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (infra.InfraError, CrossVersionError, release.ReleaseError) as exc:
        print(f"cross-version: {exc}", file=sys.stderr)
        sys.exit(1)
