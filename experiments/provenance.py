"""What a result was made with: the code's commit, the machine and its CPU, recorded beside every number.

`commit()` is read once per process, when first asked (a run asks as it starts, so that a checkout that moves
on during a long sweep does not change what its runs record); `machine()` and `cpu_name()` describe where a
run ran, `machine_name()` says it in words for reports.
"""
from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path

# what a run's result depends on: code and settings, not the results and reports the runs themselves rewrite
CODE = ("*.py", "experiments/configs", "requirements*.txt", "Makefile")


def git_commit(where: Path = Path(__file__).parent) -> str:
    """HEAD's short hash, "+dirty" when tracked code or configs differ from it (results and reports that the
    runs themselves rewrite, such as a plan's jobs.json, don't count)."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=where, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                *(f":(top){p}" for p in CODE)], capture_output=True, text=True, cwd=where).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):  # a copy of the tree without git: the copier may say
        return os.environ.get("EXPERIMENT_COMMIT", "unknown")


@functools.lru_cache(maxsize=None)
def commit() -> str:
    """The commit of the code this process runs, read the first time it is asked for."""
    return git_commit()


def cpu_name() -> str | None:
    """The CPU's model name ('AMD EPYC ...', 'Intel(R) Xeon(R) ...'; None where /proc/cpuinfo is not) and
    whether it has AMX (bf16 matrix units, which speed up bf16 training), which timings depend on."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), None)
    return None if name is None else name + (" (AMX)" if "amx_bf16" in info else " (no AMX)")


def cpu_description() -> str:
    """'AMD EPYC (no AMX), 2 cores': the CPU in words, for model cards and benchmark records."""
    return f"{cpu_name() or platform.processor() or platform.machine() or 'CPU'}, {os.cpu_count()} cores"


def machine() -> dict:
    """Where a run ran: platform, CPU (with AMX or not), cores, GPU, torch and its threads."""
    import torch
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu": cpu_name(), "cpus": os.cpu_count(), "gpu": gpu, "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def machine_name(m: dict) -> str:
    """'NVIDIA H200', or '2-core AMD EPYC (no AMX), 2 threads' from a run's recorded machine."""
    if m.get("gpu"):
        return m["gpu"]
    return f"{m.get('cpus', '?')}-core {m.get('cpu') or m.get('processor') or 'CPU'}, {m.get('threads', '?')} threads"
