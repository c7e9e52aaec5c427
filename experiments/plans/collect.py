"""A study's finished runs, read from its result files, and each arm's lr chosen on dev loss."""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from ..runid import read_predictions
from ..tasks import PRIMARY
from .spec import arm, fmt_lr, model_dir, run_name


def e2e_slot_errors(folder: Path) -> float | None:
    """Slot error rate (%) of the E2E test predictions in a run's results folder (experiments/slots.py), or
    None without them (or with fewer than the whole test set)."""
    outputs = read_predictions(folder)
    if outputs is None:
        return None
    from ..slots import corpus_slot_errors, e2e_test
    tables = e2e_test()[0]
    return corpus_slot_errors(outputs, tables)["slot_error_rate"] if len(outputs) == len(tables) else None


def mean_of(values: list) -> float | None:
    """The mean of the values that were recorded (None if none was)."""
    known = [v for v in values if v is not None]
    return statistics.mean(known) if known else None


def collect(plan: dict, out: Path) -> dict:
    """Every finished run, and per (size, task, method) the lr chosen on mean best dev loss (over the seeds
    that every lr has); its test scores over all of its seeds are reported."""
    runs, table = [], []
    for size in plan["sizes"]:
        metrics_file = model_dir(out, size) / "pretrain_metrics.json"
        pre = json.loads(metrics_file.read_text()) if metrics_file.exists() else None
        for ev in plan["evals"]:
            if ev.get("only") and size["name"] not in ev["only"]:
                continue
            by_lr = {}
            for lr in ev["lrs"]:
                for seed in ev["seeds"]:
                    f = out / "results" / run_name(plan, size, ev, lr, seed, out) / "metrics.json"
                    if f.exists():
                        m = json.loads(f.read_text())
                        row = {"size": size["name"], "task": ev["task"], "method": ev["method"], "arm": arm(ev),
                               "lr": lr,
                               "seed": seed, "best_dev_loss": m.get("best_dev_loss"),
                               "score": m.get(PRIMARY[ev["task"]][0]), "metrics": m}
                        if ev["task"] == "e2e":  # slot errors, from the run's predictions
                            row["slot_error_rate"] = e2e_slot_errors(f.parent)
                        runs.append(row)
                        by_lr.setdefault(lr, []).append(row)
            finite = {lr: rows for lr, rows in by_lr.items()
                      if all(r["best_dev_loss"] is not None and math.isfinite(r["best_dev_loss"]) for r in rows)}
            if not finite:
                continue
            # compare learning rates on the seeds they all have, so that no lr wins by a luckier seed
            common = set.intersection(*({r["seed"] for r in rows} for rows in finite.values()))
            lr = min(finite, key=lambda k: statistics.mean(r["best_dev_loss"] for r in finite[k]
                                                           if not common or r["seed"] in common))
            scores = [r["score"] for r in finite[lr]]
            spent = [(r["metrics"].get("train_tokens"), r["metrics"].get("train_seconds")) for r in finite[lr]]
            sers = [r["slot_error_rate"] for r in finite[lr] if r.get("slot_error_rate") is not None]
            table.append({"size": size["name"], "task": ev["task"], "method": ev["method"], "arm": arm(ev),
                          "seeds": [r["seed"] for r in finite[lr]],
                          "non_embedding_params": (pre or {}).get("non_embedding_parameters"),
                          "chosen_lr": lr, "lrs_tried": sorted(by_lr), "n": len(scores),
                          "mean": statistics.mean(scores), "sd": statistics.stdev(scores) if len(scores) > 1 else None,
                          "scores": scores, "dev_loss": statistics.mean(r["best_dev_loss"] for r in finite[lr]),
                          "train_tokens": mean_of([t for t, _ in spent]),
                          "train_seconds": mean_of([sec for _, sec in spent]),
                          "slot_error_rate": statistics.mean(sers) if sers else None,
                          # trained while training, and kept to deploy (a prefix: its table after materialize())
                          **{k: next((r["metrics"][k] for r in finite[lr] if r["metrics"].get(k) is not None), None)
                             for k in ("trainable_params", "kept_params")},
                          # WebNLG: test BLEU on the categories seen in training and on the unseen ones
                          **{k: mean_of([r["metrics"].get(k) for r in finite[lr]]) for k in ("bleu_seen", "bleu_unseen")
                             if ev["task"] == "webnlg"},
                          # what the choice compared: each lr's mean dev loss over the seeds every lr has
                          "dev_loss_by_lr": {fmt_lr(k): statistics.mean(r["best_dev_loss"] for r in v
                                                                        if not common or r["seed"] in common)
                                             for k, v in finite.items()}})
    return {"runs": runs, "table": table}


def at_edge(row: dict) -> bool:
    """Whether the dev loss chose the smallest or largest lr of a grid of several: a lr beyond it may be
    better, and the grid should be widened before the arm is compared."""
    tried = row["lrs_tried"]
    return len(tried) > 1 and row["chosen_lr"] in (min(tried), max(tried))


def model_summary(size: dict, folder: Path) -> dict | None:
    """What a model's own training run recorded (pretraining, continued pretraining or adaptation)."""
    f = folder / "pretrain_metrics.json"
    if not f.exists():
        return None
    m = json.loads(f.read_text())
    c = json.loads((folder / "config.json").read_text())
    non_embedding = m.get("non_embedding_parameters",
                          m["parameters"] - c["n_embd"] * (c["vocab_size"] + c["n_positions"]))
    adapted = folder / "adaptation.json"
    return {"name": size["name"], "non_embedding_parameters": non_embedding, "parameters": m["parameters"],
            "tokens_seen": m["tokens_seen"], "train_seconds": m["train_seconds"],
            "val_loss_by_source": m.get("val_loss_by_source") or {"validation": m["val_loss"]}, "gpu": m.get("gpu"),
            "adapted_on": json.loads(adapted.read_text())["tasks"] if adapted.exists() else None,
            "given": bool(size.get("checkpoint"))}  # an existing checkpoint: the plan did not make it
