"""Checks `make` runs before a slow step, so a missing prerequisite is named with its fix.

    python dev/preflight.py python     # the interpreter that will create .venv
    python dev/preflight.py compiler   # a C compiler and Python headers for the gateway build

Standard library only, and written for any Python 3.6+: the first check runs with whichever
interpreter `make` found, before the virtualenv exists.
"""

import os
import shutil
import sys
import sysconfig

SUPPORTED = [(3, 11)]  # requirements are pinned and tested on 3.11 only (Django 5.2 LTS)


def check_python() -> list[str]:
    found = sys.version_info[:2]
    problems = []
    if found not in SUPPORTED:
        wanted = " or ".join(f"{major}.{minor}" for major, minor in SUPPORTED)
        problems.append(
            f"Python {wanted} is required, but {sys.executable} is Python {found[0]}.{found[1]}. Install it "
            "(Debian/Ubuntu: `apt-get install python3.11 python3.11-venv`) or name it: "
            "`make run PY=/path/to/python3.11`."
        )
    else:
        try:
            import ensurepip  # noqa: F401 - Debian splits venv's pip bootstrap into python3.X-venv
            import venv  # noqa: F401
        except ImportError:
            problems.append(
                f"{sys.executable} cannot create virtualenvs (no `venv`/`ensurepip`): "
                f"`apt-get install python{found[0]}.{found[1]}-venv`."
            )
    return problems


def check_compiler() -> list[str]:
    if os.environ.get("GATEWAY_PURE_PYTHON") == "1":
        return []
    problems = []
    candidates = []
    for name in ((sysconfig.get_config_var("CC") or "cc").split()[0], "cc", "gcc"):
        if name not in candidates:
            candidates.append(name)
    if not any(shutil.which(name) for name in candidates):
        named = " or ".join(f"`{name}`" for name in candidates)
        problems.append(
            f"no C compiler ({named}) on PATH: the gateway's data path is compiled with Cython. "
            "Install one (Debian/Ubuntu: `apt-get install gcc`), or run the gateway uncompiled "
            "(slower): `GATEWAY_PURE_PYTHON=1 make run`."
        )
    header = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    if not os.path.exists(header):
        problems.append(
            f"no Python headers ({header} is missing): the gateway's Cython build needs them. Install them "
            "(Debian/Ubuntu: `apt-get install python3.11-dev`), or run the gateway uncompiled (slower): "
            "`GATEWAY_PURE_PYTHON=1 make run`."
        )
    return problems


def main(argv: list[str]) -> int:
    checks = {"python": check_python, "compiler": check_compiler}
    if len(argv) != 1 or argv[0] not in checks:
        print(f"usage: preflight.py {{{','.join(checks)}}}", file=sys.stderr)
        return 2
    problems = checks[argv[0]]()
    for problem in problems:
        print("make: " + problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
