"""The API gateway: routing, load balancing, auth at the edge, rate limits (docs/gateway.md).

Run with `python -m gateway` from the repository root.

The data path (gateway/proxy.py) is compiled with Cython by `make` (gateway/build_ext.py). The
extension is used only when it was built from the current proxy.py (gateway/proxy.build holds the
source's SHA-256); otherwise, or with GATEWAY_PURE_PYTHON=1, the source runs as plain Python.
PROXY_MODE says which, and why (logged at startup, gateway_proxy_compiled on /metrics).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def _extension_state() -> str | None:
    """None if the compiled proxy is current, else why the source has to run."""
    if os.environ.get("GATEWAY_PURE_PYTHON") == "1":
        return "GATEWAY_PURE_PYTHON=1"
    if not any((_HERE / f"proxy{suffix}").exists() for suffix in importlib.machinery.EXTENSION_SUFFIXES):
        return "not built (run make)"
    try:
        built_from = (_HERE / "proxy.build").read_text().strip()
    except OSError:
        built_from = ""
    if built_from != hashlib.sha256((_HERE / "proxy.py").read_bytes()).hexdigest():
        return "stale build: proxy.py changed since it was compiled (run make)"
    return None


class _SourceProxyFinder:
    """Makes `import gateway.proxy` load proxy.py even where a compiled proxy.*.so sits beside it."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "gateway.proxy":
            return importlib.util.spec_from_file_location(name, _HERE / "proxy.py")
        return None


_why_source = _extension_state()
if _why_source is None:
    PROXY_MODE = "compiled (Cython)"
else:
    PROXY_MODE = f"plain Python ({_why_source})"
    sys.meta_path.insert(0, _SourceProxyFinder)
