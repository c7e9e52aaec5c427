"""The autograder: each exercise's function is run on random inputs and compared with the project's own
implementation (the same checks as the parity and invariant tests), and the verdict is one line per exercise:
done, not done yet (with the exercise's hint), or wrong (with what differed and a hint) — never a traceback.

    python -m course               # grade every exercise in course/exercises/ (what `make check` runs)
    python -m course 1.1 3.2       # only these
    python -m course --solutions   # the same checks on course/solutions/ (they all pass)
"""
from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import torch


class Wrong(Exception):
    """What an exercise's answer got wrong, in one line."""


@dataclass(frozen=True)
class Exercise:
    id: str  # "1.1": notebook 01, first exercise
    module: str  # the file under course/exercises/ (and course/solutions/)
    function: str
    check: Callable  # (the student's function) -> None, raises Wrong
    hint: str


def close(ours: torch.Tensor, theirs, what: str, atol: float = 1e-5) -> None:
    """`theirs` must be a tensor shaped and valued like `ours`."""
    if not isinstance(theirs, torch.Tensor):
        raise Wrong(f"{what}: expected a tensor, got {type(theirs).__name__}")
    if theirs.shape != ours.shape:
        raise Wrong(f"{what}: expected shape {tuple(ours.shape)}, got {tuple(theirs.shape)}")
    if theirs.dtype == torch.bool or ours.dtype == torch.bool:
        if not torch.equal(theirs.bool(), ours.bool()):
            raise Wrong(f"{what}: {int((theirs.bool() != ours.bool()).sum())} entries differ from the reference")
        return
    diff = (theirs.float() - ours.float()).abs().max().item()
    if not diff <= atol:
        raise Wrong(f"{what}: differs from the reference by up to {diff:.2e} (allowed {atol:g})")


def grade(exercise: Exercise, package: str = "course.exercises") -> tuple[bool, str]:
    """(passed, one line) for one exercise of `package` (course.exercises or course.solutions)."""
    name = f"{exercise.id} {exercise.function}"
    try:
        fn = getattr(importlib.import_module(f"{package}.{exercise.module}"), exercise.function)
        torch.manual_seed(0)
        exercise.check(fn)
    except NotImplementedError as e:
        return False, f"{name}: not done yet. {e}"
    except Wrong as e:
        return False, f"{name}: wrong. {e}. Hint: {exercise.hint}"
    except Exception as e:  # the student's code raised: say where, in one line
        frame = next((f for f in reversed(traceback.extract_tb(e.__traceback__)) if "/course/" in f.filename
                      and not f.filename.endswith("grader.py")), None)
        where = f" (line {frame.lineno} of {frame.filename.split('/course/')[-1]})" if frame else ""
        return False, f"{name}: raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}{where}. " \
                      f"Hint: {exercise.hint}"
    return True, f"{name}: done"


def run(ids: list[str] | None = None, package: str = "course.exercises") -> int:
    """Grade the exercises `ids` (default all); print one line each and a total; return how many failed."""
    from .checks import EXERCISES
    chosen = [e for e in EXERCISES if not ids or e.id in ids]
    unknown = sorted(set(ids or []) - {e.id for e in EXERCISES})
    if unknown:
        raise SystemExit(f"no exercise {', '.join(unknown)}; the exercises: {', '.join(e.id for e in EXERCISES)}")
    torch.set_num_threads(1)  # the checks' tensors are tiny: more threads only wait on each other
    passed = 0
    for exercise in chosen:
        ok, line = grade(exercise, package)
        passed += ok
        print(("PASS " if ok else "FAIL ") + line, flush=True)
    print(f"{passed} of {len(chosen)} exercises done" + ("" if passed == len(chosen) else
          ": edit the functions marked EXERCISE in course/exercises/ and run this again"))
    return len(chosen) - passed


