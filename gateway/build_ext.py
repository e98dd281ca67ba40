#!/usr/bin/env python3
"""Compile the gateway's data path (gateway/proxy.py) with Cython, in place.

    python gateway/build_ext.py          # run by `make` (venv step) and by gateway/Dockerfile

proxy.py is written in Cython's pure-Python mode: the same file runs as plain Python, and compiled
its classes become extension types (docs/gateway.md#hot-path). The build writes
gateway/proxy.<abi>.so next to the source and gateway/proxy.build with the SHA-256 of the source
it was built from: gateway/__init__.py loads the extension only when that hash matches the
current proxy.py, so an edited source is never shadowed by a stale build (it runs as plain Python,
with a warning, until the next build). Outputs are ignored by git.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODULES = ["proxy"]


def source_hash(name: str) -> str:
    return hashlib.sha256((HERE / f"{name}.py").read_bytes()).hexdigest()


def main() -> int:
    from Cython.Build import cythonize
    from setuptools import Extension, setup

    os.chdir(ROOT)
    exts = [Extension(f"gateway.{name}", [f"gateway/{name}.py"], extra_compile_args=["-O2"]) for name in MODULES]
    hashes = {name: source_hash(name) for name in MODULES}  # what is compiled, read before compiling
    with tempfile.TemporaryDirectory(prefix="gateway-build-") as tmp:
        lib = Path(tmp) / "lib"
        setup(
            name="gateway-ext",
            ext_modules=cythonize(exts, language_level=3, quiet=True, build_dir=tmp,
                                  compiler_directives={"binding": False, "embedsignature": False}),
            script_args=["-q", "build_ext", "--build-temp", tmp, "--build-lib", str(lib)],
        )
        # os.replace, not a copy over the old file: a running gateway keeps its mapping of the
        # old extension (overwriting a loaded .so in place can crash it); readers never see half
        for built in (lib / "gateway").iterdir():
            os.replace(built, HERE / built.name)
    for name in MODULES:
        tmp_stamp = HERE / f".{name}.build.tmp"
        tmp_stamp.write_text(hashes[name] + "\n")
        os.replace(tmp_stamp, HERE / f"{name}.build")
    print(f"gateway: compiled {', '.join(MODULES)} with Cython", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
