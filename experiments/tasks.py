"""Each task's splits in the one shape the runner uses: training/dev (table, text) pairs and test
(table, references) groups, plus named test subsets (WebNLG: seen / unseen categories)."""
from __future__ import annotations

from typing import NamedTuple

from .data import group_by_mr, load_e2e, load_webnlg


class Splits(NamedTuple):
    train: list[tuple[str, str]]
    dev: list[tuple[str, str]]
    test: list[tuple[str, list[str]]]
    subsets: dict[str, list[int]]  # name -> indices into test (scored separately as well)


def task_splits(task: str, data_dir=None, max_train: int | None = None, max_dev: int | None = None,
                max_test: int | None = None) -> Splits:
    """The first `max_*` items of each split (None: all)."""
    if task == "e2e":
        train = [tuple(e) for e in load_e2e("train", data_dir)]
        dev = [tuple(e) for e in load_e2e("dev", data_dir)]
        test = group_by_mr(load_e2e("test", data_dir))[:max_test]
        subsets = {}
    elif task == "webnlg":
        def pairs(split):
            return [(e.table, ref) for e in load_webnlg(split, data_dir) for ref in e.references]
        train, dev = pairs("train"), pairs("dev")
        entries = load_webnlg("test", data_dir)[:max_test]
        test = [(e.table, list(e.references)) for e in entries]
        subsets = {"seen": [i for i, e in enumerate(entries) if e.seen],
                   "unseen": [i for i, e in enumerate(entries) if not e.seen]}
    else:
        raise ValueError(f"unknown task {task!r}")
    return Splits(train[:max_train], dev[:max_dev], test, subsets)
