"""What makes two runs the same run: equal settings (every one that can change a number,
`ExperimentConfig.settings`) and the same model and data files (sha256 of their contents).

A results folder records its run in `config.json` (and the files' fingerprints in `metrics.json`); a runs
folder, which holds the training state, in `run.json`. A run reuses finished results or resumes training
state only when the record matches; a folder under its name that holds another run is refused, with the
settings that differ.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from minigpt.io import atomic_write
from minigpt.weights import weight_files

from .config import BOOKKEEPING, REFERENCE, ConfigError, ExperimentConfig, default_values, read_json
from . import tasks
from .data import dataset_dir, listing_sha256
from .results import remove_leftovers

RECORD = "run.json"
@dataclass
class RunId:
    """A run's settings (all but bookkeeping) and its inputs' fingerprints ("model", "data" -> sha256, or
    None where there is no local file to hash, or a record made before fingerprints were kept)."""
    settings: dict
    inputs: dict

    def differences(self, recorded: RunId) -> list[str]:
        """'lr 0.001 -> 0.05' for each setting in which `recorded` (a folder's record) differs from this run;
        inputs are compared where both have a fingerprint. A local model whose files are the same as the
        recorded one's is the same model, wherever its folder now is (a checkpoint moved is not another run)."""
        same_model = self.inputs.get("model") is not None and recorded.inputs.get("model") == self.inputs["model"]
        out = [f"{k} {json.dumps(recorded.settings.get(k))} -> {json.dumps(v)}" for k, v in self.settings.items()
               if recorded.settings.get(k) != v and not (k == "model" and same_model)]
        return out + [f"the {k} files changed" for k, v in self.inputs.items()
                      if None not in (v, recorded.inputs.get(k)) and recorded.inputs[k] != v]


def identify(cfg: ExperimentConfig, model: str | Path | None = None) -> RunId:
    """This run's identity (`model`: its base's folder, once resolved; default: the setting); FileNotFoundError
    when its data cannot be found."""
    task = tasks.get(cfg.task)
    data = dataset_dir(task.dataset, cfg.data_dir)
    return RunId(cfg.settings(), {"model": model_sha256(cfg.model if model is None else model),
                                  "data": listing_sha256(data, task.files)})


def model_sha256(model: str | Path) -> str | None:
    """sha256 over a local checkpoint's config.json and weight files; None for a hub id (its name says it)."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return None
    files = [f for f in (folder / "config.json", *weight_files(folder)) if f.is_file()]
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def recorded_settings(config: dict) -> dict:
    """The settings of a recorded config.json; a setting it lacks (older than the setting) has its default."""
    defaults = {k: v for k, v in default_values().items() if k not in BOOKKEEPING}
    return {**defaults, **{k: v for k, v in config.items() if k in defaults}}


def refuse(folder: Path, diffs: list[str], cfg: ExperimentConfig) -> None:
    results, runs = Path(cfg.results_dir) / cfg.run_name, Path(cfg.runs_dir) / cfg.run_name
    raise SystemExit(f"error: {folder} holds another run under the name {cfg.run_name} ({'; '.join(diffs)}); "
                     f"give this one its own name (--name=..., with make ARGS=--name=...), or delete {results} "
                     f"and {runs} to replace that run")


def read_record(path: Path) -> dict:
    try:
        return read_json(path)
    except ConfigError as e:
        raise SystemExit(f"error: {e}; delete that folder to start the run over") from None


def finished_metrics(out: Path, this: RunId, cfg: ExperimentConfig) -> dict | None:
    """The metrics in results folder `out` if it holds this run, finished; None if it holds nothing yet.
    A folder holding another run is refused."""
    if not (out / "config.json").exists():
        if (out / "metrics.json").exists():
            refuse(out, ["it has metrics.json but no config.json"], cfg)
        return None
    metrics = read_record(out / "metrics.json") if (out / "metrics.json").exists() else None
    recorded = RunId(recorded_settings(read_record(out / "config.json")), (metrics or {}).get("inputs", {}))
    diffs = this.differences(recorded)
    if diffs:
        refuse(out, diffs, cfg)
    return metrics


def claim_run_dir(run_dir: Path, this: RunId, cfg: ExperimentConfig) -> None:
    """Make `run_dir` this run's: refuse training state that another run (or an unrecorded one) left there,
    remove temporary files a kill left behind, and record this run's identity."""
    if (run_dir / RECORD).exists():
        record = read_record(run_dir / RECORD)
        diffs = this.differences(RunId(recorded_settings(record.get("settings", {})), record.get("inputs", {})))
        if diffs:
            refuse(run_dir, diffs, cfg)
    elif (run_dir / "state.pt").exists():
        refuse(run_dir, [f"its training state has no {RECORD} saying which settings made it"], cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_leftovers(run_dir)
    atomic_write(run_dir / RECORD, lambda t: Path(t).write_text(json.dumps(asdict(this), indent=2) + "\n"))


def reference_run(this: RunId, reference: Path | None = None, skip: Path | None = None) -> tuple[Path, dict] | None:
    """The shipped run with this run's settings, model and data: (folder, metrics), or None if there is none.
    Looked for in `reference` (default REFERENCE, the studies): its run folders and its studies'
    (`<study>/results/<run>`; the study `reference` first), the folder `skip` (the run itself) aside."""
    reference = REFERENCE if reference is None else reference
    configs = sorted([*reference.glob("*/config.json"), *reference.glob("*/results/*/config.json")],
                     key=lambda c: (c.parent.parent.parent.name != "reference", c))  # the reference study first
    for config in configs:
        folder, metrics = config.parent, config.parent / "metrics.json"
        if not metrics.is_file() or (skip is not None and folder.resolve() == skip.resolve()):
            continue
        try:
            settings = recorded_settings(json.loads(config.read_text()))
            if any(settings.get(k) != v for k, v in this.settings.items() if k != "model"):
                continue  # read the metrics (and the model's fingerprint in them) only for runs with these settings
            m = json.loads(metrics.read_text())
        except (OSError, ValueError):
            continue  # a damaged reference file is no reference
        if not this.differences(RunId(settings, m.get("inputs", {}))):
            return folder, m
    return None
