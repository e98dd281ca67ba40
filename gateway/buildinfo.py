"""The gateway's build: its `VERSION` file (gateway/VERSION) and commit (`BUILD_COMMIT` baked into
the image, else `git rev-parse HEAD` of the checkout, else "unknown"). Served on the admin port at
`/health/live` and `/version` (docs/releasing.md)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _commit() -> str:
    if os.environ.get("BUILD_COMMIT"):
        return os.environ["BUILD_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


@functools.cache
def info() -> dict[str, str]:
    try:
        version = (HERE / "VERSION").read_text().strip() or "unknown"
    except OSError:
        version = "unknown"
    return {"service": "gateway", "version": version, "commit": _commit()}


@functools.cache
def info_json(**extra: str) -> bytes:
    return json.dumps({**extra, **info()}).encode()
