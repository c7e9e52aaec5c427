"""A run's result files, in one place: written atomically with metrics.json last (it marks the run done),
read back, and packed to commit (predictions gzipped)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

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
