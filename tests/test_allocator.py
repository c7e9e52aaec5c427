"""keep_freed_memory: freed memory is reused by the next allocation instead of page-faulting afresh."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = """
import resource, sys, torch
from minigpt.fast.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def step():  # page faults of a step-like pattern: activations made, used, then all freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    xs = [torch.ones(10 << 20) for _ in range(5)]  # 40 MB each: above glibc's largest automatic mmap threshold
    del xs
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
step()
print(sum(step() for _ in range(5)))
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], cwd=ROOT, capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux only")
def test_kept_memory_is_reused_without_page_faults():
    assert faults("default") > 5 * 50_000  # 5 steps of 200 MB = 51,200 pages, fresh from the system each step
    assert faults("keep") < 100_000  # mostly the same memory, step after step (measured 30,720-71,680)
