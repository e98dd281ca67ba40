"""Domain code speaks the domain's language: services and selectors raise `shared.errors` and never
import the HTTP layer (DRF exceptions, `shared.problems`, Django's HTTP module). The mapping to
status codes lives in `shared.problems` alone (docs/decisions.md#domain-errors)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HTTP_MODULES = ("rest_framework", "shared.problems", "django.http")


def domain_modules() -> list[Path]:
    return sorted(p for pattern in ("services/*/*/services.py", "services/*/*/selectors.py") for p in ROOT.glob(pattern))


def http_imports(path: Path) -> list[str]:
    """`line: module` for each import of the HTTP layer in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
        found += [f"{node.lineno}: {n}" for n in names if any(n == m or n.startswith(m + ".") for m in HTTP_MODULES)]
    return found


def test_there_are_domain_modules_to_check():
    assert len(domain_modules()) >= 10


def test_services_and_selectors_do_not_import_the_http_layer():
    offenders = {str(path.relative_to(ROOT)): lines for path in domain_modules() if (lines := http_imports(path))}
    assert offenders == {}


def test_the_check_sees_each_kind_of_http_import(tmp_path):
    bad = tmp_path / "services.py"
    bad.write_text(
        "from rest_framework.exceptions import NotFound\nimport django.http\n"
        "from shared.problems import Problem\nfrom shared.errors import NotFound as Missing\n"
    )
    assert http_imports(bad) == ["1: rest_framework.exceptions", "2: django.http", "3: shared.problems"]
