"""What a process reports about its build: `{"service", "version", "commit", "shared"}`.

- version: the service's `VERSION` file (services/<name>/VERSION, in the image beside the code);
- commit: `BUILD_COMMIT` from the environment (the images bake it: `--build-arg COMMIT=…`), else
  `git rev-parse HEAD` of the checkout the code runs from (development, the cross-version test's
  worktrees), else "unknown";
- shared: the version of the `shared` library the process runs with (shared/src/shared/VERSION)
  and `shared_pinned`, the one the service says it was built with (services/<name>/SHARED_VERSION).

Served by `/health/live` and `/version` (shared.health); docs/releasing.md."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

SHARED_VERSION_FILE = Path(__file__).resolve().parent / "VERSION"


def read_version(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def shared_version() -> str:
    return read_version(SHARED_VERSION_FILE)


def git_commit(directory: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


@functools.cache
def build_info(service: str, service_dir: str) -> dict[str, str]:
    directory = Path(service_dir)
    commit = os.environ.get("BUILD_COMMIT") or git_commit(directory) or "unknown"
    return {
        "service": service,
        "version": read_version(directory / "VERSION"),
        "commit": commit,
        "shared": shared_version(),
        "shared_pinned": read_version(directory / "SHARED_VERSION"),
    }
