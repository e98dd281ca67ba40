"""The username rule and mention syntax, written once (users validates registrations with it, feed
finds mentions with it, both describe it in OpenAPI with it)."""

from __future__ import annotations

import re

USERNAME_MIN_LENGTH = 3
USERNAME_MAX_LENGTH = 30  # also the column's max_length in users and in feed's mentions
_CHARS = "A-Za-z0-9_"
_NAME = f"[{_CHARS}]{{{USERNAME_MIN_LENGTH},{USERNAME_MAX_LENGTH}}}"
USERNAME_PATTERN = f"^{_NAME}$"  # OpenAPI / JSON Schema form
USERNAME_RE = re.compile(_NAME, re.ASCII)
USERNAME_HELP = f"{USERNAME_MIN_LENGTH}–{USERNAME_MAX_LENGTH} characters: letters, digits and underscores."

MAX_MENTIONS = 100
# @name not preceded by a name character or @ (so e-mail addresses are not mentions), not followed by one
MENTION_RE = re.compile(f"(?<![{_CHARS}@])@({_NAME})(?![{_CHARS}])", re.ASCII)


def is_username(value: str) -> bool:
    return USERNAME_RE.fullmatch(value) is not None


def mention_candidates(body: str) -> list[str]:
    """Distinct @names in order of first appearance, case-insensitively, at most MAX_MENTIONS."""
    seen: dict[str, str] = {}
    for name in MENTION_RE.findall(body):
        seen.setdefault(name.lower(), name)
    return list(seen.values())[:MAX_MENTIONS]
