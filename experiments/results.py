"""A run's result files, in one place: written atomically with metrics.json last (it marks the run done),
read back (checked once: a report skips a damaged run with a one-line warning, or fails on it when strict),
and packed to commit (predictions gzipped)."""
from __future__ import annotations

import gzip
import json
import math
import os
import sys
from pathlib import Path
from typing import NamedTuple

from minigpt.io import atomic_write


def remove_leftovers(folder: Path) -> None:
    """Delete the temporary files (`.<name>.*.tmp`, see `atomic_write`) a killed run left under `folder`."""
    for f in folder.rglob(".*.tmp"):
        f.unlink(missing_ok=True)


PREDICTIONS = "predictions.txt"  # a run writes it; committed results keep it gzipped (`pack_predictions`)


def read_predictions(folder: Path) -> list[str] | None:
    """A finished run's test predictions, one per line, from `predictions.txt` or its packed copy
    `predictions.txt.gz`; None when the folder has neither."""
    plain, packed = Path(folder) / PREDICTIONS, Path(folder) / (PREDICTIONS + ".gz")
    if plain.exists():
        return plain.read_text(encoding="utf-8").splitlines()
    if packed.exists():
        try:
            return gzip.decompress(packed.read_bytes()).decode("utf-8").splitlines()
        except (OSError, EOFError, UnicodeDecodeError) as e:  # a cut or damaged copy
            raise ValueError(f"{packed} is not a readable gzip of UTF-8 text ({e}): restore it from git, or "
                             "run the job again (delete its results folder first)") from None
    return None


def pack_predictions(root: Path) -> int:
    """Gzip every `<root>/*/predictions.txt` (a results folder's runs) into `predictions.txt.gz`, which
    `read_predictions` reads the same, and remove the plain file: E2E outputs shrink ~16x, so that a project
    that keeps many runs' results stays small. Written atomically and checked before the plain file goes.
    Returns how many were packed."""
    n = 0
    for plain in sorted(Path(root).glob(f"*/{PREDICTIONS}")):
        data = plain.read_bytes()
        packed = plain.with_name(PREDICTIONS + ".gz")
        atomic_write(packed, lambda t: Path(t).write_bytes(gzip.compress(data, compresslevel=9, mtime=0)))
        if gzip.decompress(packed.read_bytes()) != data:
            raise OSError(f"{packed} does not read back as {plain}: kept the plain file")
        plain.unlink()
        n += 1
    return n


def write_results(out: Path, cfg, predictions: list[str], log_file: Path, metrics: dict) -> None:
    """The results folder's files, metrics.json (which marks the run done) last."""
    out.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out)
    atomic_write(out / "config.json", lambda t: Path(t).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n"))
    atomic_write(out / PREDICTIONS, lambda t: Path(t).write_text("".join(p + "\n" for p in predictions)))
    log_text = log_file.read_text() if log_file.exists() else ""
    atomic_write(out / "log.jsonl", lambda t: Path(t).write_text(log_text))
    atomic_write(out / "metrics.json", lambda t: Path(t).write_text(json.dumps(metrics, indent=2) + "\n"))


# the scores a report reads: each must be a finite number where a run records it
SCORES = ("bleu", "nist", "meteor", "rouge_l", "cider", "accuracy", "macro_f1", "dev_accuracy", "slot_error_rate",
          "bleu_seen", "bleu_unseen")
STRICT = False  # reports: fail on a run folder that cannot be read, instead of skipping it (`--strict`)


class RunRecord(NamedTuple):
    """A finished run as a report reads it: its folder, settings (config.json; None where not asked for) and
    metrics."""
    folder: Path
    config: dict | None
    metrics: dict


def read_json_object(path: Path) -> dict | str:
    """The JSON object in `path`, or why it cannot be read."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return f"no {path.name}"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"{path.name} cannot be read ({type(e).__name__}: {str(e)[:80]}): cut short or not JSON"
    return value if isinstance(value, dict) else f"{path.name} holds a {type(value).__name__}, not an object"


def problem(metrics: dict) -> str | None:
    """Why a run's metrics cannot be reported (a score that is not a finite number), or None."""
    for k in SCORES:
        v = metrics.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            return f"metrics.json has {k} = {v!r}, not a finite number"
    return None


def read_run(folder: Path, need_config: bool = False) -> RunRecord | None:
    """A finished run's record, checked once; None, with a one-line warning naming the folder and why, for one
    that cannot be reported (half-written or foreign metrics.json, no config.json where needed, a NaN score).
    With `STRICT`, such a folder stops the report instead (SystemExit with that line)."""
    metrics = read_json_object(folder / "metrics.json")
    config = read_json_object(folder / "config.json") if need_config else None
    why = next((x for x in (metrics, config) if isinstance(x, str)), None) or problem(metrics)
    if why is None:
        return RunRecord(folder, config, metrics)
    line = f"{folder}: {why}"
    if STRICT:
        raise SystemExit(f"error: {line} (fix or remove that folder, or report without --strict to skip it)")
    print(f"warning: skipped {line}", file=sys.stderr)
    return None


def check_writable(folder: Path, what: str, setting: str) -> None:
    """Refuse, before any training, a folder this run cannot write to (read-only, full, not a folder)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-check-{os.getpid()}.tmp"
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as e:
        raise SystemExit(f"error: cannot write {what} under {folder} ({e.strerror or e}); free some space or give "
                         f"another folder with --{setting}=...") from None
