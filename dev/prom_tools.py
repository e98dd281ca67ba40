"""promtool and amtool for the alert tests, fetched on first use from Debian's packages.

`make test` (and so CI on a fresh machine) needs `promtool check rules` / `promtool test rules`
(package `prometheus`) and `amtool check-config` (package `prometheus-alertmanager`). Nothing is
installed system-wide and no daemon is started: the package is downloaded with `apt-get download`
(no root needed), unpacked with `dpkg-deb -x`, and only the tool is kept in `.venv/bin/`.
Download failures are retried with backoff; when the package lists are missing and we are root,
`apt-get update` runs once first.

    python dev/prom_tools.py promtool     # prints the path (installs it if needed)

Order of preference: $PROMTOOL / $AMTOOL, the tool on PATH, `.venv/bin/<tool>`, the download.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"promtool": "prometheus", "amtool": "prometheus-alertmanager"}


class Unavailable(Exception):
    """The tool cannot be had here. `apt_missing`: no apt/dpkg at all (a non-Debian machine)."""

    def __init__(self, message: str, *, apt_missing: bool = False):
        super().__init__(message)
        self.apt_missing = apt_missing


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _download(tool: str, package: str, target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix=f"{tool}-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o777)  # apt's sandbox user (_apt) writes the .deb here when we are root
        got = _run(["apt-get", "download", package], cwd=work)
        if got.returncode != 0:
            raise RuntimeError(f"apt-get download {package}: {(got.stderr or got.stdout).strip()[-500:]}")
        debs = sorted(work.glob(f"{package}_*.deb"))
        if not debs:
            raise RuntimeError(f"apt-get download {package} left no .deb")
        unpacked = work / "unpacked"
        got = _run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)])
        if got.returncode != 0:
            raise RuntimeError(f"dpkg-deb -x: {got.stderr.strip()[-500:]}")
        binary = unpacked / "usr" / "bin" / tool
        if not binary.is_file():
            raise RuntimeError(f"{package} has no usr/bin/{tool}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        shutil.copy2(binary, partial)
        partial.chmod(0o755)
        partial.replace(target)


def ensure(tool: str, *, attempts: int = 4) -> Path:
    """The path of a working `tool` (promtool or amtool), downloading it if needed."""
    package = PACKAGES[tool]
    for candidate in (os.environ.get(tool.upper()), shutil.which(tool), str(ROOT / ".venv" / "bin" / tool)):
        if candidate and Path(candidate).is_file() and _run([candidate, "--version"], timeout=30).returncode == 0:
            return Path(candidate)
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise Unavailable(
            f"{tool} not found and this machine has no apt-get/dpkg-deb to fetch Debian's "
            f"{package} package: install {tool} or set {tool.upper()}",
            apt_missing=True,
        )
    target = ROOT / ".venv" / "bin" / tool
    errors: list[str] = []
    updated = False
    for attempt in range(attempts):
        try:
            _download(tool, package, target)
            return target
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            errors.append(str(exc))
            if not updated and os.geteuid() == 0:  # package lists missing or stale (fresh container)
                updated = True
                _run(["apt-get", "update"], timeout=600)
            time.sleep(min(30, 2**attempt))
    raise Unavailable(f"could not fetch {tool} ({package}) after {attempts} attempts: {errors[-1]}")


if __name__ == "__main__":
    try:
        print(ensure(sys.argv[1] if len(sys.argv) > 1 else "promtool"))
    except Unavailable as exc:
        sys.exit(str(exc))
