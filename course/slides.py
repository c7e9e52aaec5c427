"""Slide decks from the notebooks: `python -m course.slides [NAMES...]` (what `make slides` runs).

Each notebook is copied with every `##` section (and its title) starting a new slide and every other cell
continuing it, then exported by nbconvert as a reveal.js deck to `.cache/slides/<notebook>.slides.html`. The
committed notebooks are not changed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
OUT = NOTEBOOKS.parent / ".cache" / "slides"


def as_slides(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """`nb` with slide metadata: a markdown cell that opens with `#` or `##` starts a slide."""
    for cell in nb.cells:
        first = cell.source.lstrip().split("\n", 1)[0]
        starts = cell.cell_type == "markdown" and (first.startswith("## ") or first.startswith("# "))
        cell.metadata["slideshow"] = {"slide_type": "slide" if starts else "-"}
    return nb


def main(argv: list[str] | None = None) -> None:
    try:
        from nbconvert import SlidesExporter
    except ImportError:
        raise SystemExit("error: nbconvert is not installed: run `make slides` (it installs it), or "
                         "`pip install nbconvert`") from None
    p = argparse.ArgumentParser(prog="python -m course.slides", description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="notebooks (e.g. 01 03; default: all)")
    args = p.parse_args(argv)
    paths = [q for q in sorted(NOTEBOOKS.glob("*.ipynb")) if not args.names or any(q.stem.startswith(n)
                                                                                    for n in args.names)]
    if not paths:
        raise SystemExit(f"error: no notebook in {NOTEBOOKS} starts with {', '.join(args.names)}")
    OUT.mkdir(parents=True, exist_ok=True)
    for path in paths:
        html, _ = SlidesExporter().from_notebook_node(as_slides(nbformat.read(path, as_version=4)))
        target = OUT / f"{path.stem}.slides.html"
        target.write_text(html, encoding="utf-8")
        print(f"{target} ({len(html) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
