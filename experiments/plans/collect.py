"""A study's finished runs, read from its result files, and each arm's lr chosen on dev loss."""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from .. import tasks
from ..results import read_run
from .spec import arm, eval_args, fmt_lr, model_dir, run_name

# the settings that say what data an arm trains on and for how long (not how its method is set up)
BUDGET = ("max_train", "train_sample", "epochs", "batch_size", "warmup_steps", "patience", "max_dev")


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
            by_lr = finished_runs(plan, size, ev, out)
            runs += [r for rows in by_lr.values() for r in rows]
            row = chosen(ev, size, by_lr, pre)
            if row is not None:
                # what the arm's data and budget are, to pair it with the fine-tuning arm of the same ones
                table.append({**row, "budget": {k: v for k, v in eval_args(plan, ev).items() if k in BUDGET}})
    return {"runs": runs, "table": table}


def finished_runs(plan: dict, size: dict, ev: dict, out: Path) -> dict[float, list[dict]]:
    """lr -> the evaluation's finished runs at that lr, each with its score and the task's report columns
    scored again from its predictions where the task does so (E2E: slot errors)."""
    task, by_lr = tasks.get(ev["task"]), {}
    for lr in ev["lrs"]:
        for seed in ev["seeds"]:
            f = out / "results" / run_name(plan, size, ev, lr, seed, out) / "metrics.json"
            record = read_run(f.parent) if f.exists() else None
            if record is not None:
                m = record.metrics
                row = {"size": size["name"], "task": ev["task"], "method": ev["method"], "arm": arm(ev), "lr": lr,
                       "seed": seed, "best_dev_loss": m.get("best_dev_loss"), "score": m.get(task.metric[0]),
                       "metrics": m, **(task.rescore(f.parent) if task.rescore else {})}
                by_lr.setdefault(lr, []).append(row)
    return by_lr


def chosen(ev: dict, size: dict, by_lr: dict[float, list[dict]], pre: dict | None) -> dict | None:
    """The arm's row of the table: its lr chosen on the mean best dev loss over the seeds every lr has (None
    while no lr has finished runs with a finite dev loss), with its test scores over all of that lr's seeds."""
    finite = {lr: rows for lr, rows in by_lr.items()
              if all(r["best_dev_loss"] is not None and math.isfinite(r["best_dev_loss"]) for r in rows)}
    if not finite:
        return None
    # compare learning rates on the seeds they all have, so that no lr wins by a luckier seed
    common = set.intersection(*({r["seed"] for r in rows} for rows in finite.values()))

    def dev_loss(rows: list[dict]) -> float:
        return statistics.mean(r["best_dev_loss"] for r in rows if not common or r["seed"] in common)
    lr = min(finite, key=lambda k: dev_loss(finite[k]))
    rows = finite[lr]
    scores = [r["score"] for r in rows]
    return {"size": size["name"], "task": ev["task"], "method": ev["method"], "arm": arm(ev),
            "seeds": [r["seed"] for r in rows], "non_embedding_params": (pre or {}).get("non_embedding_parameters"),
            "chosen_lr": lr, "lrs_tried": sorted(by_lr), "n": len(scores),
            # the grid (an arm whose lr comes from another's grid runs at that lr only)
            "lrs_planned": sorted(by_lr if ev.get("lr_from") else ev["lrs"]), "mean": statistics.mean(scores),
            "sd": statistics.stdev(scores) if len(scores) > 1 else None, "scores": scores,
            "dev_loss": statistics.mean(r["best_dev_loss"] for r in rows),
            "lr_from": ev.get("lr_from"),  # the arm whose grid chose this arm's lr (None: its own)
            "best_epochs": [best_epoch(r["metrics"]) for r in rows],
            "steps": mean_of([r["metrics"].get("steps") for r in rows]),  # optimizer steps, early stopping included
            "train_tokens": mean_of([r["metrics"].get("train_tokens") for r in rows]),
            "train_seconds": mean_of([r["metrics"].get("train_seconds") for r in rows]),
            # the task's report columns (E2E: slot errors; WebNLG: BLEU on seen and unseen categories)
            **{k: mean_of([r.get(k, r["metrics"].get(k)) for r in rows]) for k in tasks.get(ev["task"]).columns},
            # trained while training, and kept to deploy (a prefix: its table after materialize())
            **{k: next((r["metrics"][k] for r in rows if r["metrics"].get(k) is not None), None)
               for k in ("trainable_params", "kept_params")},
            # what the choice compared: each lr's mean dev loss over the seeds every lr has
            "dev_loss_by_lr": {fmt_lr(k): dev_loss(v) for k, v in finite.items()}}


def best_epoch(m: dict) -> int | None:
    """The epoch (from 1) whose dev loss was the best, which early stopping kept (None if not recorded)."""
    losses = m.get("dev_loss") or []
    return 1 + min(range(len(losses)), key=losses.__getitem__) if losses else None


def at_edge(row: dict) -> bool:
    """Whether the dev loss chose the smallest or largest lr of a whole grid of several: a lr beyond it may be
    better, and the grid should be widened before the arm is compared. A grid still running is not at an
    edge yet (`unfinished_grid`)."""
    tried = row["lrs_tried"]
    return len(tried) > 1 and not unfinished_grid(row) and row["chosen_lr"] in (min(tried), max(tried))


def unfinished_grid(row: dict) -> str:
    """'2 of 4 lrs' while some lrs of the arm's grid have no finished run yet (its choice may change), else ''."""
    planned = row.get("lrs_planned") or row["lrs_tried"]  # (rows collected before plans were recorded)
    return f"{len(row['lrs_tried'])} of {len(planned)} lrs" if len(row["lrs_tried"]) < len(planned) else ""


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
