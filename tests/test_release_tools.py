"""Releases per component, the repository as contract broker, and the cross-version test's
preconditions, each exercised in a throwaway clone of this repository (its tags removed and its
checkout committed with no history, so the clone starts unreleased whatever this checkout has):
`make release`, `make record-deploy`, `make can-i-deploy` as a team would run them
(docs/releasing.md)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


@pytest.fixture
def clone(tmp_path, monkeypatch):
    for var, value in {
        "GIT_AUTHOR_NAME": "release test",
        "GIT_AUTHOR_EMAIL": "release@example.com",
        "GIT_COMMITTER_NAME": "release test",
        "GIT_COMMITTER_EMAIL": "release@example.com",
    }.items():
        monkeypatch.setenv(var, value)
    path = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(path)], check=True)
    tags = subprocess.run(["git", "tag", "--list"], cwd=path, capture_output=True, text=True, check=True).stdout.split()
    if tags:
        subprocess.run(["git", "tag", "-d", *tags], cwd=path, check=True, capture_output=True)
    # the checkout as it is (uncommitted edits and new files too), committed in the clone
    diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=ROOT, capture_output=True, check=True).stdout
    if diff:
        subprocess.run(["git", "apply"], cwd=path, input=diff, check=True)
    untracked = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, untracked):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, path / name)
    # one commit with no history: this repository's own release commits would count as releases
    subprocess.run(["git", "checkout", "-q", "--orphan", "under-test"], cwd=path, check=True)
    subprocess.run(["git", "add", "-A"], cwd=path, check=True)
    subprocess.run(["git", "commit", "-qm", "the checkout under test"], cwd=path, check=True)
    return path


def run(repo: Path, *args: str, ok: bool = True, cwd_contracts: bool = False) -> subprocess.CompletedProcess:
    out = subprocess.run(list(args), cwd=repo / "contracts" if cwd_contracts else repo, capture_output=True, text=True)
    assert (out.returncode == 0) == ok, (args, out.returncode, out.stdout, out.stderr)
    return out


def make(repo: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    return run(repo, "make", "-s", *args, f"PY={PY}", ok=ok)


def git(repo: Path, *args: str) -> str:
    return run(repo, "git", *args).stdout.strip()


def commit_change(repo: Path, path: str, text: str = "\n# a change\n") -> None:
    with open(repo / path, "a") as f:
        f.write(text)
    git(repo, "commit", "-qam", f"change {path}")


def test_release_tags_the_first_version_then_bumps_and_records_it(clone):
    first = make(clone, "release", "SERVICE=users")
    assert "users-v1.0.0" in first.stdout
    assert git(clone, "tag", "--list") == "users-v1.0.0"
    assert git(clone, "log", "-1", "--format=%s") == "Release users 1.0.0"
    assert "## 1.0.0 — " in (clone / "services/users/CHANGELOG.md").read_text()
    assert run(clone, PY, "dev/release.py", "version", "users").stdout.strip() == "1.0.0"

    make(clone, "release", "SERVICE=users", ok=False)  # nothing changed since users-v1.0.0
    commit_change(clone, "services/users/accounts/services.py")
    assert run(clone, PY, "dev/release.py", "version", "users").stdout.strip() == "1.0.0+dev"
    changelog = clone / "services/users/CHANGELOG.md"
    changelog.write_text(changelog.read_text().replace("## Unreleased\n", "## Unreleased\n\n- Profiles: a new field.\n"))
    (clone / "stray.txt").write_text("uncommitted")  # untracked: not part of any release, allowed
    (clone / "services/users/VERSION").write_text("1.0.0\n ")
    make(clone, "release", "SERVICE=users", ok=False)  # a modified tracked file: refused
    git(clone, "checkout", "services/users/VERSION")
    git(clone, "commit", "-qam", "users changelog")
    make(clone, "release", "SERVICE=users", "PART=minor")

    assert (clone / "services/users/VERSION").read_text() == "1.1.0\n"
    assert git(clone, "describe", "--exact-match", "HEAD") == "users-v1.1.0"
    changelog = (clone / "services/users/CHANGELOG.md").read_text()
    assert re.search(r"## Unreleased\n\n## 1\.1\.0 — \d{4}-\d\d-\d\d\n\n- Profiles: a new field\.\n\n## 1\.0\.0", changelog)
    kustomization = (clone / "deploy/k8s/kustomization.yaml").read_text()
    assert "- name: ghcr.io/social/users\n  newTag: 1.1.0" in kustomization
    assert "- name: ghcr.io/social/feed\n  newTag: 1.0.0" in kustomization  # the others keep theirs
    assert "newTag: 1.1.0" in (clone / "deploy/k8s/migrations/kustomization.yaml").read_text()
    assert "ghcr.io/social/users:1.1.0" in (clone / "deploy/k8s/users.yaml").read_text()
    assert "/users:${USERS_TAG:-1.1.0}" in (clone / "docker-compose.yml").read_text()
    assert "/feed:${FEED_TAG:-1.0.0}" in (clone / "docker-compose.yml").read_text()
    assert run(clone, PY, "dev/release.py", "version", "users").stdout.strip() == "1.1.0"


def test_a_shared_release_repins_every_service(clone):
    make(clone, "release", "SERVICE=shared")
    commit_change(clone, "shared/src/shared/ids.py")
    make(clone, "release", "SERVICE=shared", "PART=minor")
    version = (clone / "shared/src/shared/VERSION").read_text().strip()
    assert git(clone, "describe", "--exact-match", "HEAD") == f"shared-v{version}"
    for service in ("users", "feed", "notifications"):
        assert (clone / "services" / service / "SHARED_VERSION").read_text().strip() == version


def _pact(repo: Path, consumer: str) -> Path:
    return repo / "contracts" / "pacts" / f"{consumer}-users.json"


def test_can_i_deploy_answers_from_recorded_verifications_and_deployments(clone):
    for component in ("users", "feed", "notifications", "gateway", "shared"):
        make(clone, "release", f"SERVICE={component}")
    for component in ("users", "feed", "notifications"):
        make(clone, "record-deploy", "ENV=production", f"SERVICE={component}", "VERSION=1.0.0")
    make(clone, "record-deploy", "ENV=production", "SERVICE=feed", "VERSION=9.9.9", ok=False)  # never released
    git(clone, "commit", "-qam", "production runs the first releases")
    # the committed verification record says users 1.0.0 honours both pacts
    assert "yes" in make(clone, "can-i-deploy", "SERVICE=feed", "VERSION=1.0.0").stdout
    assert "yes" in make(clone, "can-i-deploy", "SERVICE=users").stdout
    run(clone, PY, "contracts/broker.py", "check")

    # feed changes what it needs from users: the deployed users 1.0.0 never verified that
    pact = json.loads(_pact(clone, "feed").read_text())
    pact["interactions"][0]["description"] += " (now with a field users does not send)"
    _pact(clone, "feed").write_text(json.dumps(pact, indent=2))
    git(clone, "commit", "-qam", "feed needs more")
    refused = make(clone, "can-i-deploy", "SERVICE=feed", ok=False)
    assert "users 1.0.0 (production) has not verified" in refused.stderr
    assert run(clone, PY, "contracts/broker.py", "check", ok=False).returncode == 1

    # users changes: the working tree is 1.0.0+dev, which has verified nothing yet
    git(clone, "checkout", "-q", "HEAD~1", "--", "contracts/pacts/feed-users.json")
    git(clone, "commit", "-qam", "feed back to its released pact")
    commit_change(clone, "services/users/accounts/selectors.py")
    # a change nobody has verified: drop any +dev record the repository carries from its own
    # working tree's last verification (the clone is of whatever main holds)
    records_path = clone / "contracts/verifications.json"
    records = json.loads(records_path.read_text())
    records["users"].pop("1.0.0+dev", None)
    records_path.write_text(json.dumps(records, indent=2) + "\n")
    git(clone, "commit", "-q", "--allow-empty", "-am", "users changed, not verified yet")
    refused = make(clone, "can-i-deploy", "SERVICE=users", ok=False)
    assert "feed 1.0.0 (production) needs contracts/pacts/feed-users.json" in refused.stderr
    assert "users 1.0.0+dev has not verified" in refused.stderr
    # what users' provider verification records when it passes (broker.record_verified)
    code = (
        "import broker, sys; from pathlib import Path; root = Path(sys.argv[1]); "
        "shas = {}; [shas.setdefault(c.consumer, set()).add(c.sha256) for c in broker.contracts_in_tree(root) "
        "if c.provider == 'users']; "
        "broker.record_verified('users', shas, root)"
    )
    run(clone, PY, "-c", code, str(clone), cwd_contracts=True)
    assert "1.0.0+dev" in json.loads((clone / "contracts/verifications.json").read_text())["users"]
    assert "yes" in make(clone, "can-i-deploy", "SERVICE=users").stdout
    git(clone, "commit", "-qam", "users verified")
    make(clone, "release", "SERVICE=users", "PART=minor")  # the +dev record becomes 1.1.0's
    assert "1.1.0" in json.loads((clone / "contracts/verifications.json").read_text())["users"]
    assert "yes" in make(clone, "can-i-deploy", "SERVICE=users", "VERSION=1.1.0", "ENV=production").stdout


def test_cross_version_fails_clearly_without_release_tags(clone):
    out = run(clone, PY, "dev/cross_version.py", "--list", ok=False)
    assert "no release of users, feed, notifications, gateway" in out.stderr
    assert "make release SERVICE=" in out.stderr
    for component in ("users", "feed", "notifications", "gateway"):
        make(clone, "release", f"SERVICE={component}")
    listed = run(clone, PY, "dev/cross_version.py", "--list").stdout
    assert listed.count("run: ") == 1  # nothing changed since the tags: one combination
    assert "run: every component as released (users-v1.0.0, feed-v1.0.0, notifications-v1.0.0, gateway-v1.0.0)" in listed
    commit_change(clone, "services/feed/posts/services.py")
    listed = run(clone, PY, "dev/cross_version.py", "--list").stdout
    assert listed.count("run: ") == 2  # feed's release with the others, feed's working tree with their releases
    assert "run: working tree of feed with users-v1.0.0, notifications-v1.0.0, gateway-v1.0.0" in listed
    assert "run: every component as released" in listed
    # --only: the combinations whose line contains the text (docs/releasing.md, the break it catches)
    only = run(clone, PY, "dev/cross_version.py", "--list", "--only", "working tree of feed").stdout
    assert only.count("run: ") == 1 and "run: working tree of feed with users-v1.0.0" in only
    nothing = run(clone, PY, "dev/cross_version.py", "--list", "--only", "no such combination", ok=False)
    assert nothing.returncode == 2 and "no combination matches 'no such combination'" in nothing.stderr


def test_releases_with_the_same_locked_requirements_share_one_venv(clone):
    """A release whose locks differ from the working tree's runs in a venv built once per set of locks
    (dev/cross_version.py locks_key), not once per release."""
    for component in ("users", "feed"):
        make(clone, "release", f"SERVICE={component}")
    code = (
        "import sys; sys.path.insert(0, 'dev'); import cross_version as x; "
        "print(x.locks_key('users-v1.0.0'), x.locks_key('feed-v1.0.0'), x.locks_key('HEAD'))"
    )
    users, feed, head = run(clone, PY, "-c", code).stdout.split()
    assert users == feed == head
    commit_change(clone, "services/feed/requirements.txt", "\n# a new pin would go here\n")
    make(clone, "release", "SERVICE=feed")
    users, feed, head = run(clone, PY, "-c", code.replace("feed-v1.0.0", "feed-v1.0.1")).stdout.split()
    assert users != feed == head


def test_a_clone_without_the_tags_finds_the_releases_from_their_commits(clone, tmp_path):
    for component in ("users", "feed", "notifications", "gateway"):
        make(clone, "release", f"SERVICE={component}")
    commit_change(clone, "services/feed/posts/services.py")
    # CI clones the branch: no tags, the release commits in its history
    ci = tmp_path / "ci"
    run(tmp_path, "git", "clone", "-q", "--no-tags", "--branch", "under-test", str(clone), str(ci))
    assert git(ci, "tag", "--list") == ""
    assert run(ci, PY, "dev/release.py", "last-tag", "feed").stdout.strip() == "feed-v1.0.0"
    assert run(ci, PY, "dev/release.py", "version", "feed").stdout.strip() == "1.0.0+dev"
    assert run(ci, PY, "dev/release.py", "version", "users").stdout.strip() == "1.0.0"
    listed = run(ci, PY, "dev/cross_version.py", "--list").stdout
    assert listed.count("run: ") == 2
    assert "run: working tree of feed with users-v1.0.0, notifications-v1.0.0, gateway-v1.0.0" in listed
    # the next release bumps from the one found in the history and says so in its commit
    make(ci, "release", "SERVICE=feed")
    assert git(ci, "log", "-1", "--format=%s") == "Release feed 1.0.1"
    assert git(ci, "tag", "--list") == "feed-v1.0.1"
    # a commit that merely mentions a release is not one
    git(ci, "commit", "-q", "--allow-empty", "-m", "Release notifications 9.9.9 notes, a draft")
    assert run(ci, PY, "dev/release.py", "last-tag", "notifications").stdout.strip() == "notifications-v1.0.0"


def test_the_provider_verification_also_gets_the_deployed_consumers_pacts(clone):
    """What users' verification replays besides the working tree's pacts: each deployed consumer's pact
    as committed at its tag (here feed 1.0.0's, then changed in the working tree); a deployment
    recorded without its tag is an error naming it."""
    make(clone, "release", "SERVICE=feed")
    make(clone, "record-deploy", "ENV=staging", "SERVICE=feed", "VERSION=1.0.0")
    released = _pact(clone, "feed").read_text()
    assert '"description": "a batch' in released
    _pact(clone, "feed").write_text(released.replace('"description": "a batch', '"description": "A batch'))
    git(clone, "commit", "-qam", "feed deployed to staging; its pact changed since")
    code = (
        "import broker, sys, json; from pathlib import Path; root = Path(sys.argv[1]); "
        "print(json.dumps([[e, v, c.consumer, c.path, t] for e, v, c, t in broker.deployed_contracts_for('users', root)]))"
    )
    found = json.loads(run(clone, PY, "-c", code, str(clone), cwd_contracts=True).stdout)
    # feed's HTTP pact and its message (event) pact, both as the tag has them
    assert [row[:4] for row in found] == [
        ["staging", "1.0.0", "feed", "contracts/messages/feed-users.json"],
        ["staging", "1.0.0", "feed", "contracts/pacts/feed-users.json"],
    ]
    assert found[1][4] == released.rstrip("\n")  # the tag's text, not the working tree's
    environments = json.loads((clone / "contracts/environments.json").read_text())
    environments["staging"]["notifications"] = "3.0.0"  # recorded by hand, never released
    (clone / "contracts/environments.json").write_text(json.dumps(environments))
    out = run(clone, PY, "-c", code, str(clone), ok=False, cwd_contracts=True)
    assert (
        "notifications 3.0.0 runs in staging, but notifications 3.0.0 was never released: no tag notifications-v3.0.0"
        in out.stderr
    )
