"""docs/events.md shows the catalogue and the consumers' contracts as they are: both tables are
rendered from the code and the committed pacts, and must be identical to the document."""

import sys
from pathlib import Path

from shared.events.catalogue import render_markdown

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "contracts"))


def block(name: str) -> str:
    text = (ROOT / "docs" / "events.md").read_text()
    start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
    return text[text.index(start) + len(start) : text.index(end)]


def test_the_catalogue_table_is_rendered_from_the_catalogue():
    assert block("catalogue") == render_markdown(), "regenerate it: python -m shared.events.catalogue"


def test_the_consumers_table_is_rendered_from_the_committed_message_contracts():
    from event_contracts import consumers_table

    assert block("consumers") == consumers_table()
