"""A study and its plan: where the plan is, what it must hold, and the names of its models and runs."""
from __future__ import annotations

import json
import os
from pathlib import Path


STUDIES = Path("studies")  # one folder per study, relative to the project root (where commands run)


def plan_file(study: str | os.PathLike) -> Path:
    """A study's plan: `<folder>/plan.json` for a study folder, `studies/<name>/plan.json` for a bare name
    that is no folder here, or the plan file itself."""
    path = Path(study)
    if path.is_dir():
        return path / "plan.json"
    if path.suffix != ".json" and len(path.parts) == 1:
        return STUDIES / path / "plan.json"
    return path


def load_plan(study: str | os.PathLike) -> dict:
    """A study's plan (see `plan_file`), checked; SystemExit naming the file when it cannot be used."""
    path = plan_file(study)
    if not path.is_file() and not Path(study).exists():
        known = sorted(p.parent.name for p in STUDIES.glob("*/plan.json"))
        raise SystemExit(f"no study {str(study)!r}: {path} does not exist; the studies here: "
                         f"{', '.join(known) or 'none (run from the project folder)'}, or give a plan file")
    try:
        plan = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"plan {path} cannot be read: {e}") from None
    check_fields(plan, path)
    pretrained = any(not (size.get("checkpoint") or size.get("adapt")) for size in plan["sizes"])
    for key in ("mixture", "pretrain") if pretrained else ():
        if key not in plan:
            raise SystemExit(f"plan {path} has no {key!r} entry (a size without a checkpoint is pretrained)")
    names = [s["name"] for s in plan["sizes"]]
    if len(set(names)) != len(names):
        raise SystemExit(f"plan {path}: size names must differ, got {names}")
    arms = [(ev["task"], arm(ev)) for ev in plan["evals"]]
    if len(set(arms)) != len(arms):
        raise SystemExit(f"plan {path}: two evaluations of one task share an arm name; give each its own \"arm\"")
    for ev in plan["evals"]:
        if ev.get("lr_from"):
            ev["lrs"] = lr_source(plan, ev, path)["lrs"]
    return plan


def check_fields(plan, path) -> None:
    """Refuse a plan whose entries miss a field or have one of the wrong type, naming the entry and the field."""
    def need(ok: bool, where: str, what: str) -> None:
        if not ok:
            raise SystemExit(f"plan {path}: {where} needs {what}")
    number = (int, float)
    need(isinstance(plan, dict), "the file", "a JSON object with \"sizes\" and \"evals\"")
    for key in ("sizes", "evals"):
        need(isinstance(plan.get(key), list) and plan[key], f"{key!r}", "a non-empty list")
    for i, size in enumerate(plan["sizes"]):
        need(isinstance(size, dict) and isinstance(size.get("name"), str) and size["name"], f"sizes[{i}]",
             "an object with a \"name\" (text)")
    for i, ev in enumerate(plan["evals"]):
        where = f"evals[{i}]"
        need(isinstance(ev, dict), where, "an object")
        for key in ("task", "method"):
            need(isinstance(ev.get(key), str), where, f"a {key!r} (text)")
        need(isinstance(ev.get("seeds"), list) and ev["seeds"] and all(isinstance(x, int) and not isinstance(x, bool)
             and x >= 0 for x in ev["seeds"]), where, "\"seeds\": a non-empty list of integers >= 0")
        need(ev.get("lr_from") is not None or (isinstance(ev.get("lrs"), list) and ev["lrs"] and all(
             isinstance(x, number) and not isinstance(x, bool) and x > 0 for x in ev["lrs"])), where,
             "\"lrs\": a non-empty list of numbers > 0 (or \"lr_from\": an arm whose grid chooses its lr)")
        need(isinstance(ev.get("args", {}), dict), where, "\"args\" as an object of settings")


def lr_source(plan: dict, ev: dict, path: Path | str = "the plan") -> dict:
    """The evaluation whose first seed chooses `ev`'s lr: the arm its `"lr_from"` names (a cheap grid, e.g. on
    a subset of the data), or `ev` itself. An evaluation with `lr_from` runs every seed at that lr only."""
    if not ev.get("lr_from"):
        return ev
    found = [e for e in plan["evals"] if e["task"] == ev["task"] and arm(e) == ev["lr_from"] and not e.get("lr_from")]
    if not found:
        raise SystemExit(f"plan {path}: arm {arm(ev)!r} takes its lr from {ev['lr_from']!r}, which is no {ev['task']} "
                         "arm of the plan with its own grid of lrs")
    return found[0]


def flag(k: str, v) -> list[str]:
    """argparse flags for a pretraining setting: booleans are switches."""
    k = "--" + k.replace("_", "-")
    if isinstance(v, bool):
        return [k] if v else []
    return [k, str(v)]


def fmt_lr(lr: float) -> str:
    return f"{lr:g}"


def model_dir(out: Path, size: dict) -> Path:
    """Where a plan's model is: its own checkpoint, or the folder its job writes."""
    return Path(size["checkpoint"]) if size.get("checkpoint") else out / "models" / size["name"]


def model_job(size: dict) -> list[str]:
    """The name of the job that makes the model (none for an existing checkpoint)."""
    if size.get("checkpoint"):
        return []
    return [f"{'adapt' if size.get('adapt') else 'pretrain'}-{size['name']}"]


def arm(ev: dict) -> str:
    """An evaluation's name in results: its "arm" (e.g. "prefix-len20", "embedding-10"), else its method."""
    return ev.get("arm") or ev["method"]


def eval_name(size: dict, ev: dict, lr: float, seed: int) -> str:
    return f"{size['name']}-{ev['task']}-{arm(ev)}-lr{fmt_lr(lr)}-seed{seed}"


def eval_args(plan: dict, ev: dict) -> dict:
    """The settings an evaluation's runs get beyond task, model, method, lr and seed: the plan's `args`, then
    the evaluation's own (which win)."""
    return {**plan.get("args", {}), **ev.get("args", {})}


def eval_command(plan: dict, size: dict, ev: dict, lr: float, seed: int, out: Path, py: str) -> tuple[str, list[str]]:
    """(run name, command) of one run of an evaluation. A plan with `"run_names": "settings"` lets
    experiments.run name its runs from their settings (as `make experiment` does); others name them by
    model, task, arm, lr and seed (`eval_name`)."""
    cmd = [py, "-m", "experiments.run", f"--task={ev['task']}", f"--model={model_dir(out, size)}",
           f"--method={ev['method']}", f"--lr={lr}", f"--seed={seed}", f"--results_dir={out / 'results'}",
           f"--runs_dir={out / 'runs'}"]
    cmd += [f"--{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in eval_args(plan, ev).items()]
    if plan.get("run_names") == "settings":
        from ..config import parse_cli
        return parse_cli(cmd[3:]).run_name, cmd
    name = eval_name(size, ev, lr, seed)
    return name, cmd + [f"--name={name}"]


def run_name(plan: dict, size: dict, ev: dict, lr: float, seed: int, out: Path) -> str:
    """The results folder name of one run of an evaluation (see `eval_command`)."""
    return eval_command(plan, size, ev, lr, seed, out, "python")[0]


def narrow(plan: dict, tasks: list[str] | None = None, sweeps: list[str] | None = None,
           seeds: list[int] | None = None, settings: dict | None = None) -> dict:
    """A copy of the plan with only the evaluations of `tasks` and of `sweeps` (their "sweeps" tags), only
    `seeds`, and `settings` added to every run's (a smaller max_train for a quick pass, another model)."""
    evals = plan["evals"]
    for what, wanted, of in (("task", tasks, lambda e: [e["task"]]), ("sweep", sweeps, lambda e: e.get("sweeps", []))):
        if wanted:
            known = sorted({x for e in evals for x in of(e)})
            unknown = [x for x in wanted if x not in known]
            if unknown:
                raise SystemExit(f"no {what} {', '.join(map(repr, unknown))} in this plan; it has: {', '.join(known) or 'none'}")
            evals = [e for e in evals if set(of(e)) & set(wanted)]
    if seeds:
        evals = [{**e, "seeds": list(seeds)} for e in evals]
    return {**plan, "evals": evals, "args": {**plan.get("args", {}), **(settings or {})}}
