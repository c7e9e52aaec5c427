"""Where offline data lives: a user-given directory, then $DATA_DIR, then `data/`, then `../shared/data`."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def data_dirs(user_dir: str | os.PathLike | None = None) -> list[Path]:
    """Candidate data directories, most specific first (duplicates removed)."""
    dirs = [Path(user_dir).expanduser()] if user_dir else []
    if os.environ.get("DATA_DIR"):
        env = Path(os.environ["DATA_DIR"]).expanduser()
        if not env.is_dir():  # a typo must not silently mean "the other copy"
            raise FileNotFoundError(f"DATA_DIR={os.environ['DATA_DIR']} is not a folder; point it at a data folder "
                                    "or unset it")
        dirs.append(env)
    for root in (Path.cwd(), PROJECT_ROOT):
        dirs += [root / "data", root.parent / "shared" / "data"]
    seen, out = set(), []
    for d in dirs:
        key = d.resolve() if d.exists() else d
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def find_data(relpath: str, user_dir: str | os.PathLike | None = None) -> Path | None:
    """First `<dir>/<relpath>` that exists among `data_dirs(user_dir)`, else None.

    """
    for d in data_dirs(user_dir):
        if (d / relpath).exists():
            return d / relpath
    return None
