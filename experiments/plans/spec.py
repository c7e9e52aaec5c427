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
    pretrained = any(not (size.get("checkpoint") or size.get("adapt")) for size in plan.get("sizes", []))
    for key in ("sizes", "evals", *(("mixture", "pretrain") if pretrained else ())):
        if key not in plan:
            raise SystemExit(f"plan {path} has no {key!r} entry")
    names = [s["name"] for s in plan["sizes"]]
    if len(set(names)) != len(names):
        raise SystemExit(f"plan {path}: size names must differ, got {names}")
    arms = [(ev["task"], arm(ev)) for ev in plan["evals"]]
    if len(set(arms)) != len(arms):
        raise SystemExit(f"plan {path}: two evaluations of one task share an arm name; give each its own \"arm\"")
    return plan


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
