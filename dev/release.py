"""Releases per component: each service, the gateway and the `shared` library has its own version
(one file), changelog and tag `<component>-v<version>` (docs/releasing.md). Standard library only.

    python dev/release.py release users [--part patch|minor|major]   # `make release SERVICE=users PART=minor`
    python dev/release.py version users      # the working tree's version: 1.2.0, or 1.2.0+dev if changed since its tag
    python dev/release.py last-tag users     # the newest users-v* tag (exit 1 with the reason when there is none)

A clone without the tags (CI clones the branch) finds the releases from their commits, whose subject
`release` writes as "Release <component> <version>".

A release: refuses a dirty tree; bumps VERSION (the first release of a component, with no tag yet,
releases the version in the file as it is); moves the changelog's "Unreleased" notes (or, when
there are none, the subjects of the commits that touched the component since its last tag) under
the new version; re-pins the shared version (a service: the shared it is built with; shared: every
service, which the next build will use); sets the image tag in deploy/k8s and docker-compose.yml;
renames the broker's verification results of `<old>+dev` to the new version (contracts/broker.py);
commits and tags (annotated). Pushing the commit and the tag is the releaser's step.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("users", "feed", "notifications")


@dataclass(frozen=True)
class Component:
    name: str
    paths: tuple[str, ...]  # what its release is built from (a change here makes the tree "+dev")
    version_file: str
    changelog: str
    image: str | None  # ghcr.io/social/<image>, tagged with the version


COMPONENTS: dict[str, Component] = {
    # a service's release is built from its directory and shared's code (not shared's changelog)
    **{
        s: Component(
            s, (f"services/{s}", "shared/src", "shared/pyproject.toml"), f"services/{s}/VERSION", f"services/{s}/CHANGELOG.md", s
        )
        for s in SERVICES
    },
    "gateway": Component("gateway", ("gateway",), "gateway/VERSION", "gateway/CHANGELOG.md", "gateway"),
    "shared": Component("shared", ("shared",), "shared/src/shared/VERSION", "shared/CHANGELOG.md", None),
}
VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


class ReleaseError(Exception):
    pass


def git(root: Path, *args: str, check: bool = True) -> str:
    out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise ReleaseError(f"git {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout.strip()


def component(name: str) -> Component:
    if name not in COMPONENTS:
        raise ReleaseError(f"unknown component {name!r}; one of {', '.join(COMPONENTS)}")
    return COMPONENTS[name]


def parse(version: str) -> tuple[int, int, int]:
    m = VERSION_RE.match(version)
    if not m:
        raise ReleaseError(f"{version!r} is not a version MAJOR.MINOR.PATCH")
    return int(m[1]), int(m[2]), int(m[3])


def file_version(root: Path, name: str) -> str:
    return (root / component(name).version_file).read_text().strip()


def tag_name(name: str, version: str) -> str:
    return f"{name}-v{version}"


def releases(root: Path, name: str) -> dict[str, str]:
    """Released versions of the component, oldest first, each with the git ref it was released at:
    its tag `<name>-v<version>`, or, where the clone lacks the tag (a CI clone of the branch alone),
    the commit `release` made, whose subject is "Release <name> <version>", in HEAD's history."""
    found: dict[str, str] = {}
    log = git(root, "log", "--format=%H %s", "--fixed-strings", f"--grep=Release {name} ", "HEAD", check=False)
    subject = re.compile(rf"Release {re.escape(name)} (\d+\.\d+\.\d+)")
    for line in log.splitlines():  # newest first: a version released twice keeps its newest commit
        sha, _, text = line.partition(" ")
        if m := subject.fullmatch(text):
            found.setdefault(m[1], sha)
    for tag in git(root, "tag", "--list", f"{name}-v*").split():
        version = tag[len(name) + 2 :]
        if VERSION_RE.match(version):
            found[version] = tag
    return {v: found[v] for v in sorted(found, key=parse)}


def tags(root: Path, name: str) -> list[str]:
    """Released versions of the component, oldest first."""
    return list(releases(root, name))


def ref(root: Path, name: str, version: str) -> str:
    """The git ref `name` `version` was released at (its tag, else its release commit)."""
    try:
        return releases(root, name)[version]
    except KeyError:
        raise ReleaseError(
            f"{name} {version} was never released: no tag {tag_name(name, version)} and no commit "
            f'"Release {name} {version}" in the history (a shallow clone needs `git fetch --unshallow`)'
        ) from None


def last_release(root: Path, name: str) -> str:
    """The newest released version; a clear error when the component has never been released."""
    released = tags(root, name)
    if not released:
        raise ReleaseError(
            f'no release of {name} in {root} (neither a tag {name}-v* nor a commit "Release {name} X.Y.Z" in '
            f"the history): the first releases are made with `make release SERVICE={name}` (docs/releasing.md); "
            f"a shallow clone needs its history (`git fetch --unshallow`)"
        )
    return released[-1]


def changed_since(root: Path, name: str, ref: str) -> bool:
    """Whether the component's files in the working tree differ from `ref`."""
    out = subprocess.run(["git", "diff", "--quiet", ref, "--", *component(name).paths], cwd=root)
    return out.returncode != 0


def current_version(root: Path, name: str) -> str:
    """The version the working tree *is*: VERSION when that version is not released yet or the tree
    is exactly its tag (for the component's paths), else VERSION+dev (changed since the release)."""
    version = file_version(root, name)
    released = releases(root, name)
    if version in released and changed_since(root, name, released[version]):
        return f"{version}+dev"
    return version


def bump(version: str, part: str) -> str:
    major, minor, patch = parse(version)
    return {"major": f"{major + 1}.0.0", "minor": f"{major}.{minor + 1}.0", "patch": f"{major}.{minor}.{patch + 1}"}[part]


UNRELEASED = "## Unreleased"


def update_changelog(path: Path, version: str, notes: list[str], today: str) -> None:
    text = path.read_text() if path.exists() else f"# Changelog\n\n{UNRELEASED}\n"
    if UNRELEASED not in text:
        text = text.rstrip("\n") + f"\n\n{UNRELEASED}\n"
    head, rest = text.split(UNRELEASED, 1)
    following = re.search(r"^## ", rest, re.M)
    tail = rest[following.start() :] if following else ""
    body = "\n".join(notes).strip()
    path.write_text(f"{head}{UNRELEASED}\n\n## {version} — {today}\n\n{body}\n\n{tail}".rstrip("\n") + "\n")


def unreleased_notes(path: Path) -> list[str]:
    if not path.exists() or UNRELEASED not in path.read_text():
        return []
    rest = path.read_text().split(UNRELEASED, 1)[1]
    following = re.search(r"^## ", rest, re.M)
    return [line for line in (rest[: following.start()] if following else rest).strip().splitlines()]


def set_image_tags(root: Path, image: str, version: str) -> list[str]:
    """The image's tag in the kustomizations, the manifests and docker-compose.yml's default."""
    changed = []
    k8s = [p for p in (root / "deploy" / "k8s").rglob("*.yaml")]
    for path in k8s:
        text = path.read_text()
        new = re.sub(rf"(- name: ghcr\.io/social/{image}\n\s+newTag: )\S+", rf"\g<1>{version}", text)
        new = re.sub(rf"(image: ghcr\.io/social/{image}:)[\w.+-]+", rf"\g<1>{version}", new)
        if new != text:
            path.write_text(new)
            changed.append(str(path.relative_to(root)))
    compose = root / "docker-compose.yml"
    text = compose.read_text()
    new = re.sub(rf"(/{image}:\$\{{{image.upper()}_TAG:-)[^}}]+\}}", rf"\g<1>{version}}}", text)
    if new != text:
        compose.write_text(new)
        changed.append("docker-compose.yml")
    return changed


def rename_dev_verifications(root: Path, name: str, old: str, new: str) -> bool:
    """The broker's results recorded for the unreleased tree (`old+dev`) are those of the release."""
    path = root / "contracts" / "verifications.json"
    if not path.exists():
        return False
    data = json.loads(path.read_text())
    results = data.get(name, {})
    key = f"{old}+dev"
    if key not in results:
        return False
    merged = {c: sorted(set(results.get(new, {}).get(c, [])) | set(shas)) for c, shas in results.pop(key).items()}
    results[new] = {**results.get(new, {}), **merged}
    data[name] = dict(sorted(results.items()))
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return True


def release(root: Path, name: str, part: str, today: str | None = None) -> str:
    comp = component(name)
    if git(root, "status", "--porcelain", "--untracked-files=no"):
        raise ReleaseError("the working tree has uncommitted changes: commit or stash them first")
    today = today or datetime.date.today().isoformat()
    current = file_version(root, name)
    released = tags(root, name)
    if not released:
        version = current  # the first release: the version in the file, as it is
        log_range = "HEAD"
    else:
        last = released[-1]
        if not changed_since(root, name, ref(root, name, last)):
            raise ReleaseError(f"{name} has not changed since {tag_name(name, last)}: nothing to release")
        version = bump(max(current, last, key=parse), part)
        log_range = f"{ref(root, name, last)}..HEAD"
    if version in released:
        raise ReleaseError(f"{name} {version} is released already ({tag_name(name, version)})")
    changelog = root / comp.changelog
    notes = unreleased_notes(changelog)
    if not notes:
        subjects = git(root, "log", "--no-merges", "--format=%s", log_range, "--", *comp.paths).splitlines()
        notes = [f"- {s}" for s in subjects[:200]] if released else [f"- First release of {name} as a component of its own."]
    (root / comp.version_file).write_text(version + "\n")
    update_changelog(changelog, version, notes, today)
    touched = [comp.version_file, comp.changelog]
    shared = file_version(root, "shared")
    for service in SERVICES if name == "shared" else (name,) if name in SERVICES else ():
        pin = root / "services" / service / "SHARED_VERSION"
        pin.write_text((version if name == "shared" else shared) + "\n")
        touched.append(str(pin.relative_to(root)))
    if comp.image:
        touched += set_image_tags(root, comp.image, version)
    if released and rename_dev_verifications(root, name, current, version):
        touched.append("contracts/verifications.json")
    git(root, "add", "--", *sorted(set(touched)))
    git(root, "commit", "-q", "-m", f"Release {name} {version}", "-m", "\n".join(notes))
    git(root, "tag", "-a", tag_name(name, version), "-m", f"{name} {version}")
    return version


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="release", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT)
    sub = parser.add_subparsers(dest="command", required=True)
    rel = sub.add_parser("release")
    rel.add_argument("component")
    rel.add_argument("--part", choices=["patch", "minor", "major"], default="patch")
    for command in ("version", "last-tag"):
        sub.add_parser(command).add_argument("component")
    args = parser.parse_args(argv)
    try:
        if args.command == "release":
            version = release(args.root, args.component, args.part)
            print(
                f"released {args.component} {version}: commit and tag {tag_name(args.component, version)} "
                f"made; push them (git push --follow-tags)"
            )
        elif args.command == "version":
            print(current_version(args.root, args.component))
        else:
            print(tag_name(args.component, last_release(args.root, args.component)))
    except ReleaseError as exc:
        print(f"release: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
