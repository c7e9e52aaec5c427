"""Files that are never half-written: `atomic_write` (a temporary file, then a rename) and `load_state`
(a training state read back, or an error that says which file is damaged and what to do)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as it is: missing, extra or mis-shaped weights, or no files."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path) then rename onto `path`, so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; results are ordinary files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_state(path: Path, map_location=None) -> dict:
    """A training-state file written by `torch.save`, or an error naming it when it is cut short or corrupt."""
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # a cut zip archive, a damaged pickle, an unreadable file
        first = str(e).splitlines()[0][:200] if str(e) else ""
        raise CheckpointError(f"{path} cannot be read ({type(e).__name__}: {first}); it is incomplete or corrupt: "
                              "delete it to start that run afresh") from None


class ProcessLock:
    """One process at a time per run (or plan): an exclusive `flock` on `path`, which holds the holder's pid and
    command. A second process is refused with a one-line SystemExit naming the holder; the kernel releases the
    lock when the holder ends, however it ends (even `kill -9`), so a stale file never blocks anything.

        with ProcessLock(run_dir / "lock", f"run {name}"):
            ...train...
    """

    def __init__(self, path: Path, what: str):
        self.path, self.what, self.fh = Path(path), what, None

    def __enter__(self) -> "ProcessLock":
        import fcntl
        import sys
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise SystemExit(f"error: {self.what} is already running ({holder}; lock {self.path}); wait for it "
                             "to end, or stop it, before starting it again") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}: {' '.join(sys.argv)[:300]}")
        fh.flush()
        self.fh = fh
        return self

    def __exit__(self, *exc) -> None:
        if self.fh is not None:
            self.fh.close()  # closing releases the lock; the file stays (an unlocked file blocks nothing)
            self.fh = None
