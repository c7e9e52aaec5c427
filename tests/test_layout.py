"""The project's layout: code in the packages, results in studies/, and code a reader can take in piece by piece."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = ("minigpt", "prefix", "experiments", "bench", "notebooks", "course")
MAX_LINES = 60


def functions(path: Path) -> list[tuple[str, int]]:
    """(name, lines) of every function and method in a Python file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def long_functions(paths) -> list[str]:
    return [f"{p.relative_to(ROOT) if p.is_relative_to(ROOT) else p}:{name} ({n} lines)"
            for p in paths for name, n in functions(p) if n > MAX_LINES]


def test_no_function_is_longer_than_60_lines():
    paths = [p for package in CODE for p in sorted((ROOT / package).rglob("*.py"))]
    assert len(paths) > 40
    assert long_functions(paths) == []


def test_a_long_function_is_found(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES))
    (tmp_path / "m.py").write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}")
    assert long_functions([tmp_path / "m.py"]) == [f"{tmp_path / 'm.py'}:long ({MAX_LINES + 1} lines)"]


def test_no_results_are_kept_under_the_code():
    """Runs, reports and figures live in studies/<study>/; the library and the experiments' code hold code and
    its settings (bench/ keeps the benchmark's own results beside it)."""
    kept = [p for package in ("minigpt", "prefix", "experiments") for pattern in ("*/metrics.json", "*.png", "RESULTS.md", "plan.json")
            for p in (ROOT / package).rglob(pattern)]
    assert kept == []
    studies = {p.parent.name for p in (ROOT / "studies").glob("*/plan.json")}
    assert {"fulldata", "lowdata", "webnlg", "findings", "adaptation", "scale"} <= studies
