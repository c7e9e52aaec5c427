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


def test_the_table1_report_shows_the_full_budget_arms_the_grids_and_the_papers(tmp_path):
    """A Table 1 from synthetic result files: each full-budget arm at the lr its grid chose on dev loss, with the five
    metrics over its seeds, its share of parameters and each seed's best epoch; the grid arms apart; the papers'
    rows; and the Pareto figure."""
    from experiments.plans import load_plan
    from experiments.plans.spec import eval_name
    from experiments.reports.study import report
    evals = [{"task": "e2e", "method": "lora", "arm": "lora-grid", "lrs": [1e-3, 3e-3], "seeds": [0]},
             {"task": "e2e", "method": "lora", "arm": "lora", "lr_from": "lora-grid", "seeds": [0, 1]}]
    (tmp_path / "plan.json").write_text(json.dumps({"title": "T", "plot": "bars", "report": "table1",
                                                    "sizes": [{"name": "g", "checkpoint": "ckpt"}], "evals": evals}))
    plan = load_plan(tmp_path / "plan.json")
    runs = [(evals[0], 1e-3, 0, 2.0, 40.0, [2.0]), (evals[0], 3e-3, 0, 1.5, 30.0, [1.5]),  # dev loss picks 3e-3
            (evals[1], 3e-3, 0, 1.2, 50.0, [1.4, 1.2, 1.3]), (evals[1], 3e-3, 1, 1.1, 54.0, [1.3, 1.2, 1.1])]
    for ev, lr, seed, dev, bleu, by_epoch in runs:
        d = tmp_path / "results" / eval_name(plan["sizes"][0], ev, lr, seed)
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({
            "best_dev_loss": dev, "dev_loss": by_epoch, "bleu": bleu, "nist": 7.0, "meteor": 40.0, "rouge_l": 60.0,
            "cider": 2.0, "trainable_params": 200, "kept_params": 200, "total_params": 100_000,
            "train_seconds": 100.0, "decode_seconds": 20.0}))
    report(plan, tmp_path)
    text = (tmp_path / "RESULTS.md").read_text()
    table1 = text.split("## Table 1")[1]
    full, grid = table1.split("### The grid arms")
    assert ("| g | LoRA (lora) | 0.003 | 2 | 52.0 ± 2.8 | 7.00 ± 0.00 | 40.0 ± 0.0 | 60.0 ± 0.0 | 2.00 ± 0.00 | – | 0.2 | "
            "0.2 | 2, 3 | 120 ± 0 |") in full
    assert "| g | LoRA (lora-grid) | 0.003 | 1 | 30.0 |" in grid  # the grid's choice: dev loss, not test BLEU
    assert "| Li & Liang | prefix | 70.3 | 8.82 |" in grid and "| LoRA paper | lora | 70.4 |" in grid
    assert (tmp_path / "pareto.png").stat().st_size > 1000
