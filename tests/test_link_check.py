"""dev/check_links.py, which `make lint` runs: broken links and stale doc references fail it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "dev"))
import check_links  # noqa: E402


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_headings_are_slugged_as_github_does():
    assert check_links.slug("Redis clients: `shared.redis_clients`") == "redis-clients-sharedredis_clients"
    assert check_links.slug("Closed gap: kombu's fetch — the ledger") == "closed-gap-kombus-fetch--the-ledger"
    assert check_links.slug("See [the API](api.md) (v1)") == "see-the-api-v1"


def test_each_kind_of_broken_link_is_reported_with_its_line(tmp_path):
    write(tmp_path / "docs" / "ops.md", "# Operations\n\n## Outbox lagging\n\n## Outbox lagging\n")
    readme = write(
        tmp_path / "README.md",
        "\n".join(
            [
                "[ok](docs/ops.md#outbox-lagging) [second heading of the same name](docs/ops.md#outbox-lagging-1)",
                "[gone](docs/missing.md)",
                "[outside](../shared/API.md)",
                "[anchor](docs/ops.md#no-such-heading)",
                "`[in code](nowhere.md)` and [web](https://example.org/x)",
                "```",
                "[in a fence](nowhere.md)",
                "```",
                "[ref]: docs/also-missing.md",
            ]
        ),
    )
    assert check_links.check([readme], root=tmp_path) == [
        "README.md:2: docs/missing.md: no such file",
        "README.md:3: ../shared/API.md: leaves the repository",
        "README.md:4: docs/ops.md#no-such-heading: no heading #no-such-heading in docs/ops.md",
        "README.md:9: docs/also-missing.md: no such file",
    ]


def test_doc_references_in_code_must_exist(tmp_path):
    write(tmp_path / "docs" / "ops.md", "# Operations\n\n## Outbox lagging\n")
    code = write(
        tmp_path / "relay.py",
        '"""See docs/ops.md#outbox-lagging and docs/ops.md#gone;\ndocs/old.md is history; README.md is prose."""\n',
    )
    assert check_links.check_mentions([code], root=tmp_path) == [
        "relay.py:1: docs/ops.md#gone: no such heading",
        "relay.py:2: docs/old.md: no such file",
    ]


def test_the_repository_has_no_broken_links():
    result = subprocess.run([sys.executable, str(ROOT / "dev" / "check_links.py")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
