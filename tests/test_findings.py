"""The findings table: each verdict follows from the runs' scores, missing runs say so, lrs come from dev loss."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.plans import eval_name
from experiments.reports import figure, findings
from experiments.reports.findings import Arm, Plan, at_least, higher


def write_runs(root: Path, plan_name: str, arm: str, task: str, scores: dict, dev: dict, size: str | None = None,
               extra: dict | None = None, whole_grid: bool = True) -> None:
    """Result files as experiments.run writes them: scores[lr] = test score per seed, dev[lr] = best dev loss.
    With `whole_grid`, the first seed also runs the plan's other lrs, scoring 0 with a worse dev loss (so the
    arm's lr is chosen among those given)."""
    plan = Plan(plan_name, root)
    size_spec = next(s for s in plan.plan["sizes"] if size in (None, s["name"]))
    ev = next(e for e in plan.plan["evals"] if (e.get("arm") or e["method"]) == arm and e["task"] == task)
    metric = {"e2e": "bleu", "webnlg": "bleu", "sst2": "accuracy"}[task]
    if whole_grid:
        worse = max(dev.values()) + 1.0
        scores = {**{lr: [0.0] for lr in ev["lrs"] if lr not in scores}, **scores}
        dev = {**{lr: worse for lr in ev["lrs"] if lr not in dev}, **dev}
    for lr, per_seed in scores.items():
        for seed, score in enumerate(per_seed):
            folder = plan.out / "results" / eval_name(size_spec, ev, lr, seed)
            folder.mkdir(parents=True)
            metrics = {metric: score, "best_dev_loss": dev[lr], **(extra or {})}
            (folder / "metrics.json").write_text(json.dumps(metrics))


def row(root: Path, start: str) -> findings.Row:
    return next(r for r in findings.rows(root) if r.finding.startswith(start))


def test_verdicts_follow_the_difference_and_its_standard_error():
    a, b = Arm("a", 1e-3, [60.0, 61.0, 62.0, 61.0, 60.5]), Arm("b", 1e-3, [50.0, 51.0, 52.0, 50.5, 51.5])
    assert higher(a, b).startswith("reproduced") and higher(b, a).startswith("opposite")
    noisy = Arm("c", 1e-3, [40.0, 70.0, 55.0, 45.0, 65.0])  # 4 points above b, but far within its noise
    assert higher(noisy, b).startswith("not reproduced")
    close = Arm("d", 1e-3, [51.0, 52.0, 53.0])  # under 3 points from b with 3 seeds: the protocol wants 5
    assert higher(close, b).startswith("not settled")
    assert at_least(b, a).startswith("not reproduced") and at_least(a, b).startswith("reproduced")


def test_every_row_says_not_run_without_results(tmp_path):
    rows = findings.rows(tmp_path)
    assert len(rows) == 35 and all(r.ours.startswith("not run yet") and r.verdict == "–" for r in rows)
    text = findings.markdown(tmp_path)
    assert "python -m experiments.plans run fulldata" in text


def test_the_lr_is_chosen_on_dev_loss_and_the_verdict_uses_that_lrs_seeds(tmp_path):
    # at lr 0.03 fine-tuning scores higher on test, but its dev loss is worse: 0.0001 is chosen
    write_runs(tmp_path, "fulldata", "prefix", "e2e", {0.001: [60.0, 61.0, 59.5]}, {0.001: 1.5})
    write_runs(tmp_path, "fulldata", "finetune", "e2e", {0.0001: [50.0, 51.0, 50.5], 0.0003: [70.0, 71.0, 70.5]},
               {0.0001: 1.4, 0.0003: 1.6})
    r = row(tmp_path, "1. prefix ≥ fine-tuning, full data, 2 epochs (E2E")
    assert "lr 0.0001" in r.ours and "50.5 ± 0.5 (n=3: 50.0, 51.0, 50.5; lr 0.0001" in r.ours and r.verdict.startswith("reproduced (+9.7")
    # 1e-4 is the smallest lr fine-tuning tried: a smaller one might do better, and the row says so
    assert r.ours.count("at the grid's edge") == 1 and "lr 0.0001, at the grid's edge" in r.ours
    assert row(tmp_path, "1. prefix ≥ fine-tuning, full data, 2 epochs (SST-2").ours.startswith("not run yet")


def test_a_length_curve_still_rising_past_10_is_not_the_papers_plateau(tmp_path):
    means = {1: 20.0, 2: 25.0, 5: 30.0, 10: 35.0, 20: 40.0, 40: 45.0}
    for n, m in means.items():
        write_runs(tmp_path, "findings", f"every-mlp-len{n}", "e2e", {0.001: [m - 0.5, m, m + 0.5]}, {0.001: 1.0})
    r = row(tmp_path, "4. prefix length")
    assert r.verdict.startswith("not reproduced: still rising past 10 (40 vs 10") and "(best: 40)" in r.ours


def test_a_curve_that_stops_at_10_is_the_papers_plateau(tmp_path):
    means = {1: 20.0, 2: 25.0, 5: 30.0, 10: 35.0, 20: 35.5, 40: 34.0}
    for n, m in means.items():
        write_runs(tmp_path, "findings", f"every-mlp-len{n}", "e2e", {0.001: [m - 2, m, m + 2]}, {0.001: 1.0})
    assert row(tmp_path, "4. prefix length").verdict.startswith("reproduced: rises to 10")


def test_stability_compares_spread_over_seeds_and_over_the_lr_grid(tmp_path):
    write_runs(tmp_path, "findings", "every-mlp-len10", "e2e",
               {0.0003: [39.0], 0.001: [40.0, 41.0, 40.5], 0.003: [39.5]}, {0.0003: 1.2, 0.001: 1.0, 0.003: 1.1})
    write_runs(tmp_path, "findings", "every-direct-len10", "e2e",
               {0.03: [10.0], 0.1: [38.0, 30.0, 42.0], 0.3: [5.0]}, {0.03: 1.5, 0.1: 1.1, 0.3: 2.0})
    r = row(tmp_path, "7. MLP reparameterization")
    assert r.verdict.startswith("reproduced: the direct table varies more (sd 6.1 vs 0.5 over seeds, F test p = 0.01)")
    assert "MLP 1.0, direct 33.0" in r.ours  # first seed's BLEU range over the grid


def test_a_spread_as_large_over_seeds_is_no_evidence_of_instability(tmp_path):
    write_runs(tmp_path, "findings", "every-mlp-len10", "e2e", {0.001: [41.4, 41.2, 36.0, 39.3, 40.6]},
               {0.001: 1.0})
    write_runs(tmp_path, "findings", "every-direct-len10", "e2e", {0.1: [39.1, 40.7, 35.5, 41.7, 39.0]}, {0.1: 1.0})
    r = row(tmp_path, "7. MLP reparameterization")
    assert r.verdict.startswith("not reproduced: no difference in spread (sd 2.4 vs 2.2 over seeds, F test p = 0.4")


def test_the_f_test_matches_the_tables():
    from experiments.reports.findings import betainc

    def sf(f, d1, d2):  # P(F > f) for the F distribution with (d1, d2) degrees of freedom
        return betainc(d2 / 2, d1 / 2, d2 / (d2 + d1 * f))
    # upper 5% points of F from the standard tables: F(4,4) 6.388, F(2,2) 19.00, F(1,10) 4.965, F(4,10) 3.478
    for f, d1, d2 in ((6.388, 4, 4), (19.0, 2, 2), (4.965, 1, 10), (3.478, 4, 10)):
        assert abs(sf(f, d1, d2) - 0.05) < 2e-4
    assert abs(sf(1.0, 4, 4) - 0.5) < 1e-9  # equal variances: the median


def test_unseen_categories_use_the_runs_unseen_bleu(tmp_path):
    write_runs(tmp_path, "webnlg", "prefix", "webnlg", {0.001: [40.0, 41.0, 42.0]}, {0.001: 1.0},
               extra={"bleu_unseen": 30.0, "bleu_seen": 50.0})
    write_runs(tmp_path, "webnlg", "finetune", "webnlg", {0.0001: [45.0, 46.0, 47.0]}, {0.0001: 1.0},
               extra={"bleu_unseen": 20.0, "bleu_seen": 60.0})
    r = row(tmp_path, "3. extrapolation")
    assert "30.0" in r.ours and "20.0" in r.ours and r.verdict.startswith("reproduced (+10.0")
    assert row(tmp_path, "3. ... while close").verdict.startswith("not reproduced")


def texts(ax) -> str:
    return " ".join(t.get_text() for t in ax.texts)


def test_the_figure_says_which_panels_have_no_runs_and_how_to_make_them(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    fig = figure.figure(findings.load(tmp_path))
    axes = fig.axes
    assert len(axes) == 8 and all("no arm finished yet" in texts(ax) for ax in axes)
    assert "plans run lowdata" in texts(axes[2]) and "plans run webnlg" in texts(axes[3])
    assert not any(p.get_height() for ax in axes for p in ax.patches)  # no bar drawn from nothing


def test_the_figure_draws_each_arm_at_its_dev_chosen_lr_with_every_seed(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    write_runs(tmp_path, "fulldata", "prefix", "e2e", {0.001: [50.0, 52.0, 45.0]}, {0.001: 1.5})
    write_runs(tmp_path, "fulldata", "finetune", "e2e", {0.0001: [60.0, 61.0, 62.0], 0.0003: [70.0, 71.0, 72.0]},
               {0.0001: 1.4, 0.0003: 1.6})
    e2e, sst2, low = figure.figure(findings.load(tmp_path)).axes[:3]
    assert [round(p.get_height(), 3) for p in e2e.patches] == [49.0, 61.0]  # the means at the chosen lrs
    labels = e2e.get_legend_handles_labels()[1]
    assert "prefix (lr 0.001; n=3)" in labels and any(lab.startswith("fine-tuning (lr 0.0001, edge; n=3)")
                                                    for lab in labels)
    seeds = sorted(float(y) for line in e2e.lines for y in line.get_ydata() if line.get_marker() == "o")
    assert seeds == [45.0, 50.0, 52.0, 60.0, 61.0, 62.0]  # each seed, the collapsed 45 too; not the 0.0003 runs
    assert "finished yet" not in texts(e2e) and "finished yet" in texts(sst2) and "finished yet" in texts(low)


def test_each_finding_has_a_figure_of_its_own_with_the_same_arms_and_legible_labels(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    write_runs(tmp_path, "fulldata", "prefix", "e2e", {0.001: [50.0, 52.0, 45.0]}, {0.001: 1.5})
    plans = findings.load(tmp_path)
    whole = figure.figure(plans)
    own = figure.finding_figure("full data", plans)
    assert len(own.axes) == 2
    heights = [[round(p.get_height(), 3) for p in ax.patches] for ax in own.axes]
    assert heights == [[round(p.get_height(), 3) for p in ax.patches] for ax in whole.axes[:2]] == [[49.0], []]
    for name in figure.PANELS:
        fig = figure.finding_figure(name, plans)
        texts_and_legends = [t for ax in fig.axes for t in ax.texts + ([ax.get_legend()] if ax.get_legend() else [])]
        assert all(ax.title.get_fontsize() >= 11 for ax in fig.axes), name
        assert all(t.get_fontsize() >= 8 for t in texts_and_legends if hasattr(t, "get_fontsize")), name
        assert fig.dpi >= 100 and fig.get_figwidth() >= 7, name  # not shrunk to fit eight panels
        assert texts_and_legends, name  # a legend or the "no arm finished yet" note
    with pytest.raises(ValueError, match="the panels are: full data"):
        figure.finding_figure("nonsense", plans)


def test_an_arm_counts_only_once_its_first_seed_has_run_its_whole_grid(tmp_path):
    write_runs(tmp_path, "fulldata", "prefix", "e2e", {0.001: [60.0, 61.0, 59.5]}, {0.001: 1.5})
    write_runs(tmp_path, "fulldata", "finetune", "e2e", {0.0001: [50.0, 51.0, 50.5]}, {0.0001: 1.4},
               whole_grid=False)  # 3e-4 and 1e-3 not run yet: its lr is not chosen, whatever its seeds say
    r = row(tmp_path, "1. prefix ≥ fine-tuning, full data, 2 epochs (E2E")
    assert r.ours == "not finished yet (finetune)" and r.verdict == "–"  # the prefix arm is complete
    assert row(tmp_path, "1. prefix ≥ fine-tuning, full data, 2 epochs (SST-2").ours.startswith("not run yet")


def test_an_arm_with_fewer_seeds_than_planned_says_how_many_ran(tmp_path):
    write_runs(tmp_path, "findings", "every-mlp-len10", "e2e", {0.001: [40.0, 41.0, 42.0]}, {0.001: 1.0})
    write_runs(tmp_path, "findings", "infix-mlp-len10", "e2e", {0.001: [30.0, 31.0, 32.0]}, {0.001: 1.0})
    r = row(tmp_path, "6. prefix > infix, length 10")
    assert r.ours.count("3 of 5 seeds run") == 2 and r.verdict.startswith("reproduced (+10.0")


def test_an_arm_still_learning_when_its_budget_ended_says_so(tmp_path):
    write_runs(tmp_path, "fulldata", "prefix", "e2e", {0.001: [40.0, 41.0, 42.0]}, {0.001: 2.0},
               extra={"dev_loss": [3.0, 2.5, 2.0]})  # fell 20% in the last epoch: stopped by the budget
    write_runs(tmp_path, "fulldata", "finetune", "e2e", {0.0003: [60.0, 61.0, 62.0]}, {0.0003: 1.0},
               extra={"dev_loss": [1.2, 1.0, 1.005]})  # rose at the end: it had converged
    r = row(tmp_path, "1. prefix ≥ fine-tuning, full data, 2 epochs (E2E")
    assert r.ours.count("dev loss still falling at the end in 3 of 3") == 1
    assert r.ours.index("still falling") < r.ours.index(" vs ")  # said of the prefix, not of fine-tuning
    assert not findings.still_learning([2.0, 1.995]) and not findings.still_learning([2.0])  # under 1%; one eval


def test_table1_compares_full_budget_arms_at_the_lr_their_grids_chose(tmp_path):
    write_runs(tmp_path, "table1", "prefix-grid", "e2e", {1e-3: [40.0]}, {1e-3: 1.5}, size="gutenberg")
    write_runs(tmp_path, "table1", "lora-grid", "e2e", {1e-2: [45.0]}, {1e-2: 1.4}, size="gutenberg")
    start = "10. prefix vs LoRA, q and v, rank 4 (shipped base"
    assert row(tmp_path, start).ours.startswith("not finished yet (gutenberg prefix, gutenberg lora)")
    write_runs(tmp_path, "table1", "prefix", "e2e", {1e-3: [60.0, 61.0, 62.0]}, {1e-3: 1.2}, size="gutenberg",
               whole_grid=False)
    write_runs(tmp_path, "table1", "lora", "e2e", {1e-2: [58.0, 59.0, 60.0]}, {1e-2: 1.3}, size="gutenberg",
               whole_grid=False)
    r = row(tmp_path, start)
    assert "61.0 ± 1.0 (n=3: 60.0, 61.0, 62.0; lr 0.001)" in r.ours and r.verdict == "not in the paper: +2.0, se 0.8"
    # LoRA's grid chose its largest lr: the full-budget arm inherits the warning
    assert "59.0 ± 1.0 (n=3: 58.0, 59.0, 60.0; lr 0.01, at the grid's edge)" in r.ours
    assert row(tmp_path, "10. prefix vs LoRA, q and v, rank 4 (shared").ours.startswith("not run yet")
