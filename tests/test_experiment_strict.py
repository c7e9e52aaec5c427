"""Failures the experiment runner must not hide: runs reused for other settings, settings misread, subsets
averaged into headline numbers, diverged training scored, data substituted or cut, unnamed bad files."""
from __future__ import annotations

import json

from test_plots import write_run

from experiments.plots import main as plots


def test_plots_never_average_runs_scored_on_other_data_sizes(tmp_path, capsys):
    res = tmp_path / "results"
    for seed, bleu in enumerate((50.0, 52.0, 54.0)):
        write_run(res, {"bleu": bleu, "nist": 7.0, "meteor": None, "rouge_l": 60.0, "cider": 1.5},
                  prefix_len=10, seed=seed)
    # the same setting scored on the first 20 test MRs only: not the same measurement
    write_run(res, {"bleu": 10.0, "nist": 1.0, "meteor": None, "rouge_l": 10.0, "cider": 0.1},
              prefix_len=10, seed=3, max_test=20, name="e2e-len10-first20-seed3")
    plots(["--results", str(res), "--plots", str(tmp_path / "plots"), "--report", str(tmp_path / "RESULTS.md")])
    report = (tmp_path / "RESULTS.md").read_text()
    assert "52.0 ± 2.0 (n=3) (len 10)" in report  # the headline: the three full-test runs only
    assert "| e2e-len10-first20 (not compared: {\"max_test\": 20}) | 1 |" in report  # shown on its own
    assert "differ from the compared runs in max_test" in capsys.readouterr().out
