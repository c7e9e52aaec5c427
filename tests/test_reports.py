"""Plots and RESULTS.md are built from result files alone: synthetic results give the expected table."""
from __future__ import annotations

import json

from experiments.config import load_config
from experiments.reports.sweeps import main as plots


def write_run(root, metrics, **settings):
    cfg = load_config(overrides=settings)
    d = root / cfg.run_name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(cfg.to_dict()))
    machine = {"platform": "test", "processor": "x86_64", "cpus": 2, "gpu": None, "torch": "2.13", "threads": 2}
    (d / "metrics.json").write_text(json.dumps({**metrics, "trainable_params": 1000, "commit": "abc1234",
                                                "machine": machine}))


def test_plots_and_report_from_result_files(tmp_path):
    res = tmp_path / "results"
    for seed, bleu in enumerate((50.0, 52.0, 54.0)):  # length 10: mean 52, sd 2
        write_run(res, {"bleu": bleu, "nist": 7.0, "meteor": None, "rouge_l": 60.0, "cider": 1.5},
                  prefix_len=10, seed=seed)
        write_run(res, {"bleu": 40.0 + seed, "nist": 6.0, "meteor": None, "rouge_l": 50.0, "cider": 1.0},
                  prefix_len=10, depth="embedding", reparam="direct", seed=seed)
        write_run(res, {"accuracy": 80.0 + seed, "macro_f1": 79.0, "dev_accuracy": 81.0},
                  task="sst2", prefix_len=10, seed=seed)
        write_run(res, {"accuracy": 70.0, "macro_f1": 69.0, "dev_accuracy": 71.0},
                  task="sst2", prefix_len=10, depth="embedding", reparam="direct", seed=seed)
    # another head is another setting: it must not be averaged into the verbalizer's runs
    write_run(res, {"accuracy": 50.0, "macro_f1": 49.0, "dev_accuracy": 51.0}, task="sst2", prefix_len=10,
              head="linear", seed=0)
    plots(["--results", str(res), "--report", str(tmp_path / "mine" / "RESULTS.md")])
    for task in ("e2e", "sst2"):  # beside the report, named after its folder
        for name in ("length", "depth", "reparam"):
            assert (tmp_path / "mine" / f"mine-{task}-{name}.png").stat().st_size > 1000
    assert (tmp_path / "mine" / "mine-depth-gap.png").stat().st_size > 1000  # E2E beside SST-2
    report = (tmp_path / "mine" / "RESULTS.md").read_text()
    assert "![e2e length](mine-e2e-length.png)" in report
    assert "52.0 ± 2.0 (n=3) (len 10)" in report  # E2E every layer, from the three seeds above
    assert "| 10 | 11.0 | 11.0 |" in report  # depth gap: E2E 52 - 41, SST-2 81 - 70
    assert "at 0 of 1 lengths the SST-2 gap is the larger one" in report
    assert "not run" in report  # no fine-tuning runs were written
