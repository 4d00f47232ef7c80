"""The documentation site (mkdocs.yml: the guide pages of docs/ and the API reference rendered from
the docstrings) builds in strict mode, and strict mode fails on a broken link, anchor or API reference.

mkdocs and mkdocstrings come with the dev extra; without them the tests are skipped.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "mkdocs.yml"
#: The public packages, each with its API page (docs/api/<name>.md renders ``widealign.<name>``):
#: ``testing`` (the helpers for testing a rule of one's own) as soon as it exists.
PUBLIC = ["rules", "models", "train", "diagnostics", "data"]
PUBLIC += ["testing"] if importlib.util.find_spec("widealign.testing") else []

pytest.importorskip("mkdocs", reason="the docs site needs the dev extra (mkdocs)")
pytest.importorskip("mkdocstrings_handlers.python", reason="the docs site needs the dev extra (mkdocstrings)")


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def test_the_site_builds_in_strict_mode_with_every_guide_page_and_api_page(tmp_path):
    done = build(CONFIG, tmp_path / "site")
    assert done.returncode == 0, done.stderr
    guides = sorted(p.stem for p in (ROOT / "docs").glob("*.md") if p.stem != "index")
    for page in guides:  # every guide page is in the site (omitted_files would warn otherwise)
        assert (tmp_path / "site" / page / "index.html").is_file(), page
    assert (tmp_path / "site" / "index.html").is_file()
    for package in PUBLIC:  # rendered from the docstrings: the package's public names have anchors
        html = (tmp_path / "site" / "api" / package / "index.html").read_text()
        module = __import__(f"widealign.{package}", fromlist=["__all__"])
        anchors = set(re.findall(rf'id="widealign\.{package}\.(?:\w+\.)?(\w+)"', html))
        missing = sorted(set(module.__all__) - anchors)
        assert missing == [], f"widealign.{package}: {missing}"


def test_a_broken_link_anchor_or_api_reference_fails_the_build(tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    with open(docs / "install.md", "a") as page:
        page.write("\n[gone](no-such-page.md) [anchor](method.md#no-such-section) [api][widealign.no_such]\n")
    text = CONFIG.read_text().replace("docs_dir: docs", f"docs_dir: {docs}")
    config = tmp_path / "mkdocs.yml"
    config.write_text(text.replace("paths: [src]", f"paths: [{ROOT / 'src'}]"))
    done = build(config, tmp_path / "site")
    assert done.returncode != 0
    assert "no-such-page.md" in done.stderr
    assert "#no-such-section" in done.stderr
    assert "widealign.no_such" in done.stderr
