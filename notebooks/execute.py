"""Execute the teaching notebooks top to bottom and save them with their outputs.

    python notebooks/execute.py                  # every notebooks/*.ipynb, full size, saved in place (what
                                                 # `make notebooks` runs, to commit the outputs)
    python notebooks/execute.py --fast 01        # fast mode, saved to .cache/notebooks/ (never over notebooks/)
    python notebooks/execute.py 03 --out mine/   # full size, saved to mine/ (the committed notebook untouched)

Each notebook runs in a fresh kernel of the current interpreter (`python3`, ipykernel's own kernelspec),
with `notebooks/` as its working directory. `--fast` sets NOTEBOOK_FAST=1, the switch every notebook reads
to shrink its loops and timings (what CI runs, through tests/test_notebooks.py); fast-mode outputs are
marked in the notebook's metadata and the tests refuse them committed. A cell that raises stops the run
with the cell and its traceback; the notebook file is then left as it was.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent
FAST_OUT = NOTEBOOKS.parent / ".cache" / "notebooks"  # fast-mode runs land here: committed outputs stay full size


def notebook_paths(names: list[str] | None = None) -> list[Path]:
    """`notebooks/*.ipynb` in order, or the ones named: a file name, with or without `.ipynb`, or its
    start (`01` for `01_attention_with_a_prefix.ipynb`)."""
    every = sorted(NOTEBOOKS.glob("*.ipynb"))
    if not names:
        return every
    paths = []
    for name in names:
        stem = Path(name).name.removesuffix(".ipynb")
        found = [p for p in every if p.stem == stem] or [p for p in every if p.stem.startswith(stem)]
        if len(found) != 1:
            raise FileNotFoundError(f"{name!r} names {len(found)} notebooks in {NOTEBOOKS} "
                                    f"(there are: {', '.join(p.name for p in every)})")
        paths += found
    return paths


def execute(path: Path, *, fast: bool, timeout: int = 600) -> nbformat.NotebookNode:
    """Run the notebook at `path` in a fresh kernel and return it with its outputs (the file is not written).

    Raises nbclient's CellExecutionError on the first cell that fails; `timeout` is per cell, in seconds.
    """
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # timings of an earlier run: only noise in a diff
        cell.metadata.pop("execution", None)
    env = {**os.environ, "NOTEBOOK_FAST": "1" if fast else "0",
           "PYDEVD_DISABLE_FILE_VALIDATION": "1"}  # silence ipykernel's debugger warning about frozen modules
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False, record_timing=False,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute(env=env)
    nb.metadata["notebook_fast"] = fast  # the tests refuse to see fast-mode outputs committed
    return nb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="notebooks to run (default: all of notebooks/*.ipynb)")
    ap.add_argument("--fast", action="store_true", help="NOTEBOOK_FAST=1: fewer steps (CI); saved to --out, by "
                    f"default {FAST_OUT}, never over the committed notebooks")
    ap.add_argument("--out", default=None, help="save the executed notebooks in this folder instead of in place")
    ap.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell (default 600)")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else (FAST_OUT if args.fast else None)
    for path in notebook_paths(args.names):
        start = time.time()
        nb = execute(path, fast=args.fast, timeout=args.timeout)
        target = path if out is None else out / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
        print(f"{path.name}: executed in {time.time() - start:.1f} s, saved to {target} "
              f"({target.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
