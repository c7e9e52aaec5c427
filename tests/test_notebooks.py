"""The teaching notebooks run top to bottom, offline, and are committed with their outputs.

Each `notebooks/*.ipynb` is executed in fast mode (NOTEBOOK_FAST=1: fewer steps, same lessons) in a fresh
kernel of this interpreter, from `notebooks/`; any cell that raises fails the test, with the cell's
traceback. The committed files must hold the outputs of a full run (`make notebooks`), so that they read
well on a web page, and stay small.
"""
from __future__ import annotations

import nbformat
import pytest

from notebooks.execute import execute, notebook_paths

PATHS = notebook_paths()
CELL_TIMEOUT = 300  # seconds per cell; a whole notebook takes ~10-30 s in fast mode on a laptop CPU
MAX_BYTES = 1_000_000


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def errors(nb) -> list[str]:
    return [f"{o.ename}: {o.evalue}" for c in code_cells(nb) for o in c.outputs if o.output_type == "error"]


EXPECTED = ["01_attention_with_a_prefix.ipynb", "02_gpt2_from_scratch.ipynb", "03_prefix_tuning.ipynb",
            "04_ablation_curves.ipynb", "05_what_a_prefix_learns.ipynb"]


def test_the_notebooks_are_found():
    names = [p.name for p in PATHS]
    assert all(n in names for n in EXPECTED), names


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom_in_fast_mode(path):
    nb = execute(path, fast=True, timeout=CELL_TIMEOUT)  # raises CellExecutionError at the first failing cell
    assert not errors(nb)
    assert [c.execution_count for c in code_cells(nb)] == list(range(1, len(code_cells(nb)) + 1))


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_notebook_is_committed_with_full_outputs(path):
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size:,} bytes: shrink its figures"
    nb = nbformat.read(path, as_version=4)
    rerun = f"run `make notebooks` (python notebooks/execute.py {path.stem}) and commit {path.name}"
    counts = [c.execution_count for c in code_cells(nb)]
    assert counts == list(range(1, len(counts) + 1)), f"{path.name} was not saved from one top-to-bottom run: {rerun}"
    assert nb.metadata.get("notebook_fast") is False, f"{path.name} holds fast-mode outputs: {rerun}"
    assert not errors(nb), f"{path.name} was saved with errors {errors(nb)}: {rerun}"
    assert any(c.outputs for c in code_cells(nb)), f"{path.name} has no outputs: {rerun}"


def test_a_fast_run_never_writes_over_the_committed_notebooks(tmp_path, monkeypatch):
    from notebooks import execute as ex
    committed = PATHS[0].read_bytes()
    monkeypatch.setattr(ex, "execute", lambda path, **kw: nbformat.read(path, as_version=4))  # the saving alone
    monkeypatch.setattr(ex, "FAST_OUT", tmp_path / "fast")
    ex.main(["--fast", PATHS[0].stem])
    assert (tmp_path / "fast" / PATHS[0].name).exists() and PATHS[0].read_bytes() == committed
    ex.main([PATHS[0].stem, "--out", str(tmp_path / "mine")])
    assert (tmp_path / "mine" / PATHS[0].name).exists() and PATHS[0].read_bytes() == committed
