"""The API gateway: routing, load balancing, auth at the edge, rate limits (docs/gateway.md).

Run with `python -m gateway` from the repository root.

The data path (COMPILED_MODULES: gateway/wire.py, metrics.py, auth.py, upstream.py, proxy.py) is compiled with Cython by
`make` (gateway/build_ext.py). The extensions are used only when they were built from the current
sources (gateway/ext.build holds sources_hash() of what was compiled), all of them or none:
otherwise, or with GATEWAY_PURE_PYTHON=1, the sources run as plain Python. PROXY_MODE says which,
and why (logged at startup, gateway_proxy_compiled on /metrics).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

_HERE = Path(__file__).resolve().parent
# compiled together, in this order (proxy cimports wire); each has its .py and may have a .pxd
COMPILED_MODULES = ("wire", "metrics", "auth", "upstream", "proxy")
BUILD_STAMP = _HERE / "ext.build"


def sources_hash() -> str:
    """SHA-256 over the sources of every compiled module (.py and .pxd), in COMPILED_MODULES order."""
    digest = hashlib.sha256()
    for name in COMPILED_MODULES:
        for suffix in (".py", ".pxd"):
            path = _HERE / f"{name}{suffix}"
            digest.update(f"{name}{suffix}\0".encode())
            digest.update(path.read_bytes() if path.exists() else b"-")
    return digest.hexdigest()


def _extension_state() -> str | None:
    """None if the compiled modules are current, else why the sources have to run."""
    if os.environ.get("GATEWAY_PURE_PYTHON") == "1":
        return "GATEWAY_PURE_PYTHON=1"
    for name in COMPILED_MODULES:
        if not any((_HERE / f"{name}{suffix}").exists() for suffix in importlib.machinery.EXTENSION_SUFFIXES):
            return "not built (run make)"
    try:
        built_from = BUILD_STAMP.read_text().strip()
    except OSError:
        built_from = ""
    if built_from != sources_hash():
        return "stale build: the sources changed since they were compiled (run make)"
    return None


class _SourceFinder:
    """Running as source: makes `import gateway.<compiled module>` load its .py even where a
    compiled .so sits beside it, and resolves the modules' `from cython.cimports.gateway.<m>
    import ...` (a C-level import when compiled) to the plain module gateway.<m>: Cython's
    pure-Python shim for cython.cimports does not find modules inside a package."""

    _CIMPORTS = f"cython.cimports.{__name__}"

    @classmethod
    def find_spec(cls, name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        package, _, module = name.rpartition(".")
        if package == __name__ and module in COMPILED_MODULES:
            return importlib.util.spec_from_file_location(name, _HERE / f"{module}.py")
        if package == cls._CIMPORTS and module in COMPILED_MODULES:
            return importlib.machinery.ModuleSpec(name, _Alias(f"{__name__}.{module}"))
        return None


class _Alias(importlib.abc.Loader):
    """Loads a module name as another, already importable module (the same object)."""

    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        pass


_why_source = _extension_state()
if _why_source is None:
    PROXY_MODE = "compiled (Cython)"
else:
    PROXY_MODE = f"plain Python ({_why_source})"
    sys.meta_path.insert(0, _SourceFinder)
    # the parent of the cimported names is this package itself (Cython's shim module for
    # cython.cimports cannot be a package's parent: it has no __spec__)
    sys.modules.setdefault(_SourceFinder._CIMPORTS, sys.modules[__name__])
