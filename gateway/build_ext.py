#!/usr/bin/env python3
"""Compile the gateway's data path (gateway.COMPILED_MODULES: wire.py, proxy.py) with Cython, in place.

    python gateway/build_ext.py          # run by `make` (venv step) and by gateway/Dockerfile

The modules are written in Cython's pure-Python mode (C declarations of wire.py in wire.pxd): the
same files run as plain Python, and compiled their classes become extension types
(docs/gateway.md#compiled-data-path-cython). The build writes gateway/<module>.<abi>.so next to
the sources and gateway/ext.build with gateway.sources_hash() of the sources it was built from:
gateway/__init__.py loads the extensions only when that hash matches the current sources, so an
edited source is never shadowed by a stale build (everything runs as plain Python, with a
warning, until the next build). Outputs are ignored by git.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from gateway import BUILD_STAMP, COMPILED_MODULES, sources_hash  # noqa: E402

MODULES = list(COMPILED_MODULES)


def main() -> int:
    from Cython.Build import cythonize
    from setuptools import Extension, setup

    os.chdir(ROOT)
    exts = [Extension(f"gateway.{name}", [f"gateway/{name}.py"], extra_compile_args=["-O2"]) for name in MODULES]
    built_from = sources_hash()  # what is compiled, read before compiling
    with tempfile.TemporaryDirectory(prefix="gateway-build-") as tmp:
        lib = Path(tmp) / "lib"
        setup(
            name="gateway-ext",
            ext_modules=cythonize(
                exts, language_level=3, quiet=True, build_dir=tmp, compiler_directives={"binding": False, "embedsignature": False}
            ),
            script_args=["-q", "build_ext", "--build-temp", tmp, "--build-lib", str(lib)],
        )
        # os.replace, not a copy over the old file: a running gateway keeps its mapping of the
        # old extension (overwriting a loaded .so in place can crash it); readers never see half
        for built in (lib / "gateway").iterdir():
            os.replace(built, HERE / built.name)
    tmp_stamp = HERE / ".ext.build.tmp"
    tmp_stamp.write_text(built_from + "\n")
    os.replace(tmp_stamp, BUILD_STAMP)
    print(f"gateway: compiled {', '.join(MODULES)} with Cython", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
