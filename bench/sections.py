"""Tables kept between `<!-- BEGIN NAME -->` and `<!-- END NAME -->` markers of a Markdown file, so that
benchmark scripts rewrite their own part and leave the hand-written text around it alone."""
from __future__ import annotations

from pathlib import Path

from minigpt.io import atomic_write


def write_section(md: Path, name: str, text: str) -> None:
    """Replace what `md` holds between its NAME markers by `text` (a new file gets just the section);
    written whole to a temporary file, then renamed, so an interruption leaves the old file."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    old = md.read_text() if md.exists() else f"# Benchmark results\n\n{begin}\n{end}\n"
    if begin not in old or end not in old:
        raise SystemExit(f"{md} has no {begin} ... {end} section to write into")
    new = old.split(begin)[0] + begin + "\n" + text + "\n" + end + old.split(end)[1]
    atomic_write(md, lambda tmp: Path(tmp).write_text(new))
