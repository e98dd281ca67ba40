"""Where pact files live and how a consumer's suite keeps the committed one current.

The files in contracts/pacts/ play the broker's role: users' suite verifies every one of them, so
they must be exactly what the consumer's contract tests define. A consumer suite builds its whole
pact (every interaction its tests exercise) and calls `assert_committed`; with PACT_UPDATE=1 in the
environment it rewrites the committed file instead. Imported by the consumers' tests/contracts/
conftest.py (it puts this folder on sys.path); needs only pact-python.
"""

from __future__ import annotations

import difflib
import json
import os
import tempfile
from pathlib import Path

from pact import Pact

PACT_DIR = Path(__file__).resolve().parent / "pacts"  # HTTP: <consumer>-<provider>.json
MESSAGE_DIR = Path(__file__).resolve().parent / "messages"  # events: <consumer>-<producer>.json
UPDATE_ENV = "PACT_UPDATE"


def _contract(data: dict) -> dict:
    """The pact without the tool versions the FFI stamps in (metadata.pactRust): a patch release of
    the FFI must not make a contract look changed. Everything else is compared."""
    data = json.loads(json.dumps(data))
    data.get("metadata", {}).pop("pactRust", None)
    return data


def _render(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generate(pact: Pact) -> tuple[str, str]:
    """(file name, text) of the pact as the FFI writes it, normalised: sorted keys, no tool versions."""
    name = f"{pact.consumer}-{pact.provider}.json"
    with tempfile.TemporaryDirectory(prefix="pact-") as tmp:
        pact.write_file(tmp, overwrite=True)
        data = json.loads((Path(tmp) / name).read_text())
    return name, _render(_contract(data))


def assert_committed(pact: Pact, directory: Path = PACT_DIR) -> Path:
    """Fail unless contracts/<pacts|messages>/<consumer>-<provider>.json is exactly this pact; PACT_UPDATE=1 rewrites it."""
    name, text = generate(pact)
    path = directory / name
    if os.environ.get(UPDATE_ENV) == "1":
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path
    committed = path.read_text() if path.exists() else ""
    if committed != text:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(True), text.splitlines(True), f"committed {path.name}", f"generated {path.name}", n=2
            )
        )
        raise AssertionError(
            f"contracts/{directory.name}/{name} is not what {pact.consumer}'s contract tests define. If the change is "
            f"intended, regenerate it ({UPDATE_ENV}=1 .venv/bin/python dev/testrun.py {pact.consumer} -- -k contract), "
            f"review the diff and commit it with the change; {pact.provider}'s suite verifies the committed file.\n{diff}"
        )
    return path
