"""User-written text that other people see: display names and post bodies.

- `display_text_problem(value)`: why a short display text (a display name) is refused, or None.
  Refused: control characters (Cc), format characters (Cf: bidi overrides and isolates such as
  U+202E, zero-width spaces and joiners, BOM), line/paragraph separators, surrogates, private-use
  and unassigned code points. One exception: U+200D ZERO WIDTH JOINER between two symbols, which
  joins emoji sequences (a family emoji is one character to the reader).
- `is_invisible(value)`: True when nothing of the text would be seen (whitespace, format
  characters, combining marks alone, Hangul fillers, the blank braille pattern…). A post of only
  these is refused.
- `nfc(value)`: the canonical composition every stored display text is normalised to, so that
  two spellings of "é" are one name.
- `skeleton(value)`: NFKC + casefold, for comparing a display name with usernames ("ＡＬＩＣＥ" is
  "alice").
"""

from __future__ import annotations

import unicodedata

ZWJ = "\u200d"
# Letters that render as nothing (category Lo, so not caught by category alone).
BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me", "Cn"})


def nfc(value: str) -> str:
    return unicodedata.normalize("NFC", value)


def skeleton(value: str) -> str:
    return unicodedata.normalize("NFKC", value).casefold()


def _joins_emoji(value: str, index: int) -> bool:
    if index == 0 or index == len(value) - 1:
        return False
    before, after = value[index - 1], value[index + 1]
    if before == "\ufe0f" and index >= 2:  # a variation selector after the symbol
        before = value[index - 2]
    return unicodedata.category(before) in ("So", "Sk") and unicodedata.category(after) == "So"


def display_text_problem(value: str) -> str | None:
    for index, char in enumerate(value):
        category = unicodedata.category(char)
        if char == ZWJ and _joins_emoji(value, index):
            continue
        if category in REFUSED_CATEGORIES or char in BLANK_LETTERS:
            name = unicodedata.name(char, "")
            label = f"U+{ord(char):04X}" + (f" {name}" if name else "")
            return f"Must not contain control, formatting or invisible characters ({label})."
    return None


def is_invisible(value: str) -> bool:
    return all(
        char.isspace()
        or unicodedata.category(char) in INVISIBLE_CATEGORIES
        or char in BLANK_LETTERS
        or "\ufe00" <= char <= "\ufe0f"
        for char in value
    )
