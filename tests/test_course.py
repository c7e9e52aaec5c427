"""The course's autograder: every solution passes, every untouched exercise fails with its own message, and
the usual mistakes are named in one line with a hint (never a traceback)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from course.checks import EXERCISES
from course.grader import grade

ROOT = Path(__file__).resolve().parents[1]
BY_ID = {e.id: e for e in EXERCISES}


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.id)
def test_every_solution_passes(exercise):
    assert grade(exercise, "course.solutions") == (True, f"{exercise.id} {exercise.function}: done")


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.id)
def test_every_untouched_exercise_fails_with_its_own_message(exercise):
    ok, line = grade(exercise)
    owner = next(e.id for e in EXERCISES if (e.module, e.function) == (exercise.module, exercise.function))
    own = "not answered yet: " if exercise.module == "questions" else f"EXERCISE {owner}: "  # 3.4 grades 3.3's loop
    assert not ok and line.startswith(f"{exercise.id} {exercise.function}: not done yet. {own}")
    assert "\n" not in line and "Traceback" not in line


def wrong(exercise_id: str, fn) -> str:
    """The one line the grader gives for `fn` as the answer to an exercise."""
    from course import grader
    module = type(sys)("course.exercises.fake")
    setattr(module, BY_ID[exercise_id].function, fn)
    sys.modules["course.exercises.fake"] = module
    try:
        exercise = BY_ID[exercise_id]
        return grader.grade(grader.Exercise(exercise.id, "fake", exercise.function, exercise.check, exercise.hint))[1]
    finally:
        del sys.modules["course.exercises.fake"]


def test_the_usual_mistakes_are_named_with_a_hint():
    top_left = wrong("1.1", lambda tq, tk: torch.ones(tq, tk, dtype=torch.bool).tril())
    assert top_left.startswith("1.1 causal_mask: wrong. causal_mask(3, 7): ") and "entries differ" in top_left
    assert "Hint: query i may see key j when j <= i + (tk - tq)" in top_left

    from course.solutions.prefix_table import prefix_kv
    swapped = wrong("3.1", lambda table, L, H: [(v, k) for k, v in prefix_kv(table, L, H)])
    assert swapped.startswith("3.1 prefix_kv: wrong. layer 0's key: differs from the reference")

    def trains_everything(tuner, batches, steps, lr):
        opt = torch.optim.AdamW(tuner.parameters(), lr=lr)  # the base too
        out = []
        for step in range(steps):
            tuner.model.requires_grad_(True)
            loss = tuner(*batches[0][:1], labels=batches[0][1]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            out.append(loss.item())
        return out
    assert "the base model's weights changed" in wrong("3.3", trains_everything)

    def greedy_per_beam(model, ids, prefix, num_beams, steps):  # each beam's best token only: not beam search
        for _ in range(steps):
            ids = torch.cat([ids, model(ids, prefix=prefix)[:, -1:].argmax(-1)], dim=1)
        return ids
    assert wrong("2.1", greedy_per_beam).startswith("2.1 beam_search: wrong. 3 beams, 5 steps: ")
    assert wrong("4.q", "ahead").startswith("4.q Q04: wrong. 'ahead' is not right")
    assert "6 is not right (a repeated token is not a repeated key)" in wrong("5.q", 6)  # the phrase's token count
    assert "expected an integer, got '11'" in wrong("1.q", "11")
    assert "expected a list of 60 floats" in wrong("3.3", lambda *a: None)
    assert "the dev loss is 7.99; it should be below 3.6" in wrong("3.4", lambda tuner, batches, steps, lr: [0.0] * steps)


def test_an_answer_that_raises_is_one_line_naming_where():
    def broken(q, k, v, pk, pv):
        return q @ k  # shapes that do not multiply
    line = wrong("1.2", broken)
    assert line.startswith("1.2 attention_with_prefix: raised RuntimeError: ") and "\n" not in line
    assert "Hint: scores are q @ K^T" in line


def test_make_check_grades_from_the_command_line():
    done = subprocess.run([sys.executable, "-m", "course", "1.1", "3.2", "--solutions"], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "2 of 2 exercises done"
    todo = subprocess.run([sys.executable, "-m", "course", "1.1"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert todo.returncode == 1 and todo.stdout.startswith("FAIL 1.1 causal_mask: not done yet.") and not todo.stderr
    unknown = subprocess.run([sys.executable, "-m", "course", "9.9"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert unknown.returncode == 1 and "no exercise 9.9; the exercises: 1.1, 1.2, 2.1, 3.1" in unknown.stderr


def test_slides_start_at_each_section_and_leave_the_notebooks_alone():
    import nbformat

    from course.slides import NOTEBOOKS, as_slides
    path = NOTEBOOKS / "01_attention_with_a_prefix.ipynb"
    before = path.read_bytes()
    nb = as_slides(nbformat.read(path, as_version=4))
    starts = [c.source.split("\n", 1)[0] for c in nb.cells if c.metadata["slideshow"]["slide_type"] == "slide"]
    assert starts[0].startswith("# 01") and "## 1. Attention from the equations" in starts
    assert len(starts) == 1 + sum(c.cell_type == "markdown" and c.source.startswith("## ") for c in nb.cells)
    assert path.read_bytes() == before
