"""Every relative link in the project's documents resolves: the README, the docs, the studies' reports, the
model cards and the notebooks' text point at files that exist."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".venv", ".cache", ".git", ".pytest_cache", "data", "runs", "results", "node_modules"}  # at the top level
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")


def documents() -> list[Path]:
    """The project's markdown files and notebooks (not what a user's runs or installs put beside them)."""
    found = []
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in SKIP or any(p.startswith(".") for p in rel.parts) or not path.is_file():
            continue
        if path.suffix in (".md", ".ipynb"):
            found.append(path)
    return found


def text_of(path: Path) -> str:
    """A markdown file's text, or a notebook's markdown cells (its outputs are results, not documents)."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return path.read_text(encoding="utf-8")


def broken_links(path: Path) -> list[str]:
    """The relative links in a document whose target is not there (web links and anchors are not checked)."""
    text = re.sub(r"`[^`\n]*`", "", text_of(path))  # code spans are not links
    out = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        if not (path.parent / target.split("#", 1)[0]).exists():
            out.append(target)
    return out


DOCS = documents()


def test_the_documents_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in DOCS}
    assert {"README.md", "experiments/README.md", "studies/README.md", "studies/RESULTS.md",
            "notebooks/04_ablation_curves.ipynb"} <= names


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(path):
    assert not broken_links(path), f"{path.relative_to(ROOT)} links to missing files: {broken_links(path)}"


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "there.md").write_text("x")
    doc = tmp_path / "doc.md"
    doc.write_text("[ok](there.md) [gone](missing/RESULTS.md#top) ![fig](gone.png) [web](https://example.org) "
                   "`[code](not-a-link.md)` [anchor](#section)")
    assert broken_links(doc) == ["missing/RESULTS.md#top", "gone.png"]
