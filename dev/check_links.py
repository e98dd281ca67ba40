"""Check the links in the repository's Markdown files: `make lint` runs it.

A relative link must name a file or directory inside the repository (a link that leaves it, such as
`../shared/API.md`, is broken for everyone who clones it), and a `#fragment` must name a heading of
the target Markdown file, slugged as GitHub does. Links to other sites are not fetched (CI has no
network); only their shape is checked. Every other tracked text file (code comments, alert rules'
runbook URLs, Makefile) is searched for repository paths of Markdown files (`docs/faults.md#…`),
which must exist and name a heading, as links do.

    python dev/check_links.py            # every tracked *.md; exit 1 and one line per broken link
    python dev/check_links.py README.md  # only these files
"""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^[ \t]{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
# a repository-relative path of a Markdown file mentioned in code or configuration, with its fragment
MENTION = re.compile(r"(?<![\w/.-])((?:[\w-]+/)*[\w.-]+\.md)(?:#([\w-]+))?")
# files whose Markdown paths are examples, not references (the checker's own tests)
NOT_REFERENCES = {"tests/test_link_check.py"}
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.I)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, markup and punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set(HTML_ANCHOR.findall(text))
    for heading in HEADING.findall(text):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return frozenset(found)


def targets(text: str) -> list[tuple[int, str]]:
    """(line, target) of every link outside code blocks and code spans."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    text = CODE_SPAN.sub(lambda m: " " * len(m.group(0)), text)
    found = [(m.start(), m.group(1)) for m in INLINE.finditer(text)]
    found += [(m.start(), m.group(1)) for m in REFERENCE.finditer(text)]
    return sorted((text.count("\n", 0, start) + 1, target) for start, target in found)


def problem(source: Path, target: str, root: Path = ROOT) -> str | None:
    parts = urlsplit(target)
    if parts.scheme in ("http", "https"):
        return None if parts.netloc else "a web link without a host"
    if parts.scheme == "mailto":
        return None
    if parts.scheme:
        return f"scheme {parts.scheme!r} is not a link a reader can follow"
    path = unquote(parts.path)
    resolved = (source.parent / path).resolve() if path else source
    if root not in (resolved, *resolved.parents):
        return "leaves the repository"
    if not resolved.exists():
        return "no such file"
    fragment = unquote(parts.fragment)
    if fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
        return f"no heading #{fragment} in {resolved.relative_to(root)}"
    if fragment and resolved.suffix != ".md" and not re.fullmatch(r"L\d+(-L\d+)?", fragment):
        return f"#{fragment}: only Markdown headings and #L<line> can be linked"
    return None


def check(files: list[Path], root: Path = ROOT) -> list[str]:
    broken = []
    for source in files:
        for line, target in targets(source.read_text(encoding="utf-8")):
            why = problem(source, target, root)
            if why:
                broken.append(f"{source.relative_to(root)}:{line}: {target}: {why}")
    return broken


def check_mentions(files: list[Path], root: Path = ROOT) -> list[str]:
    """Markdown paths named in other files: relative to the repository root, as they are written."""
    broken = []
    for source in files:
        try:
            text = source.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        for match in MENTION.finditer(text):
            path, fragment = match.groups()
            if "/" not in path or path.startswith(("http", "../")):
                continue  # a bare name (README.md) is prose, not a path to check
            target = root / path
            line = text.count("\n", 0, match.start()) + 1
            if not target.exists():
                broken.append(f"{source.relative_to(root)}:{line}: {path}: no such file")
            elif fragment and fragment not in anchors(target):
                broken.append(f"{source.relative_to(root)}:{line}: {path}#{fragment}: no such heading")
    return broken


def tracked(*patterns: str) -> list[Path]:
    listed = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / name for name in listed.stdout.splitlines()]


def main(argv: list[str]) -> int:
    if argv:
        files = [Path(a).resolve() for a in argv]
        broken = check([f for f in files if f.suffix == ".md"])
        broken += check_mentions([f for f in files if f.suffix != ".md"])
    else:
        files = tracked()
        broken = check([f for f in files if f.suffix == ".md"])
        broken += check_mentions(
            [f for f in files if f.suffix != ".md" and f.is_file() and str(f.relative_to(ROOT)) not in NOT_REFERENCES]
        )
    for line in broken:
        print(line)
    if broken:
        print(f"check_links: {len(broken)} broken link(s) in {len(files)} file(s)", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
