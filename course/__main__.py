"""`python -m course [IDS...] [--solutions]`: grade the exercises (see course/grader.py)."""
from __future__ import annotations

import argparse

from .grader import run


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m course", description="Grade the exercises in course/exercises/.")
    p.add_argument("ids", nargs="*", help="exercises to grade, e.g. 1.1 3.2 (default: all)")
    p.add_argument("--solutions", action="store_true", help="grade course/solutions/ instead (they all pass)")
    args = p.parse_args(argv)
    failed = run(args.ids, "course.solutions" if args.solutions else "course.exercises")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
