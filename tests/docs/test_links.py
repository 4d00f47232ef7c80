"""Every relative link in README.md and docs/ resolves to a file inside the repository.

The documentation ships with the repository, so a link must not point outside it (``../`` past the
root, an absolute path, ``file:``); a link with ``#anchor`` into a markdown file must name one of
its headings (GitHub's anchor rules) or an explicit ``<a id=...>``. Citations such as
``docs/method.md#align-ada`` in the source tree are checked the same way.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
#: Schemes a link may use to leave the repository (web pages); any other scheme is refused.
WEB_SCHEMES = ("http", "https", "mailto")

_FENCE = re.compile(r"^\s*(```|~~~).*?^\s*\1[^\n]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)")
_REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", re.M)
_EXPLICIT_ANCHOR = re.compile(r"<a\s+(?:id|name)\s*=\s*[\"']([^\"']+)[\"']", re.I)
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")
_CITATION = re.compile(r"\b(docs/[\w./-]+\.md)(?:#([\w-]+))?")


def strip_code(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans (links there are not links)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors a markdown file defines: its headings' slugs (duplicates numbered) and explicit ids."""
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    found: set[str] = set(_EXPLICIT_ANCHOR.findall(text))
    seen: dict[str, int] = {}
    for heading in _HEADING.findall(text):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    """The link targets of a markdown file: inline links, images and reference definitions."""
    text = strip_code(path.read_text(encoding="utf-8"))
    return _INLINE_LINK.findall(text) + _REFERENCE_DEF.findall(text)


def check_target(source: Path, target: str, repo: Path = REPO) -> str | None:
    """Why ``target``, linked from ``source``, is broken, or None if it resolves inside ``repo``."""
    scheme = _SCHEME.match(target)
    if scheme:
        return None if scheme.group(1).lower() in WEB_SCHEMES else f"{target}: not a web link"
    path_part, _, fragment = target.partition("#")
    if path_part.startswith("/"):
        return f"{target}: absolute path (links must be relative to the file)"
    resolved = (source.parent / unquote(path_part)).resolve() if path_part else source.resolve()
    if not resolved.is_relative_to(repo.resolve()):
        return f"{target}: points outside the repository"
    if not resolved.exists():
        return f"{target}: no such file in the repository"
    if fragment and resolved.suffix == ".md" and unquote(fragment) not in anchors(resolved):
        return f"{target}: {resolved.relative_to(repo.resolve())} has no heading with anchor #{fragment}"
    return None


def problems(source: Path, repo: Path = REPO) -> list[str]:
    """Every broken link of one markdown file."""
    broken = (check_target(source, target, repo) for target in links(source))
    return [p for p in broken if p is not None]


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve_inside_repository(doc):
    assert problems(doc) == []


def test_the_method_page_exists_and_is_linked_from_the_readme():
    assert (REPO / "docs" / "method.md").is_file()
    assert any(t.split("#")[0] == "docs/method.md" for t in links(REPO / "README.md"))


def _source_files() -> list[Path]:
    files = [*(REPO / "src").rglob("*.py"), *(REPO / "src").rglob("*.toml"), *(REPO / "tests").rglob("*.py")]
    return sorted(f for f in files if f.resolve() != Path(__file__).resolve())


def test_citations_in_the_source_tree_name_existing_sections():
    broken = []
    for path in _source_files():
        for doc, fragment in _CITATION.findall(path.read_text(encoding="utf-8")):
            target = REPO / doc
            if not target.is_file():
                broken.append(f"{path.relative_to(REPO)}: {doc} does not exist")
            elif fragment and fragment not in anchors(target):
                broken.append(f"{path.relative_to(REPO)}: {doc} has no section #{fragment}")
    assert broken == []


def test_slug_follows_github():
    assert slug("Reference variant, conv net") == "reference-variant-conv-net"
    assert slug("RNN (Add task)") == "rnn-add-task"
    assert slug("Family `lr-sweep`") == "family-lr-sweep"
    assert slug("The reference RNN align-ada at theta_0") == "the-reference-rnn-align-ada-at-theta_0"
    assert slug("See [the docs](other.md) here") == "see-the-docs-here"


def test_checker_reports_each_kind_of_broken_link(tmp_path):
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (tmp_path / "outside.md").write_text("# Outside\n")
    (repo / "docs" / "a.md").write_text("# Title\n\n## Same\n\n## Same\n\n<a id='explicit'></a>\n")
    readme = repo / "README.md"
    readme.write_text(
        "[ok](docs/a.md#title) [dup](docs/a.md#same-1) [id](docs/a.md#explicit) [web](https://x.org)\n"
        "![img](docs/a.md) [self](#top) [up](../outside.md) [abs](/etc/hosts) [gone](docs/b.md)\n"
        "[anchor](docs/a.md#nope) [file](file:///etc/hosts) `[code](../x.md)`\n\n"
        "```\n[fenced](../y.md)\n```\n\n# Top\n\n[ref]: ../outside.md\n"
    )
    found = problems(readme, repo)
    assert [p.split(":")[0] for p in found] == [
        "../outside.md", "/etc/hosts", "docs/b.md", "docs/a.md#nope", "file", "../outside.md",
    ]  # fmt: skip
    assert "outside the repository" in found[0]
    assert "absolute path" in found[1]
    assert "no such file" in found[2]
    assert "#nope" in found[3]
