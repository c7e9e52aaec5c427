"""Each task's splits in the one shape the runner uses: training/dev (table, text) pairs and test
(table, references) groups, plus named test subsets (WebNLG: seen / unseen categories); SST-2's
(label, sentence) rows. Each file's counts are checked against the published dataset before the
`max_*` limits cut it (max_train: the first N, or N drawn at random with a seed)."""
from __future__ import annotations

import random
from typing import NamedTuple

from .data import (E2E_FILES, SPLITS, check_counts, dataset_dir, group_by_mr, load_e2e, load_sst2,
                   load_webnlg)

DATASETS = {"e2e": "e2e", "webnlg": "webnlg_2017", "sst2": "sst2"}  # task -> its folder in a data directory
TEST_UNIT = {"e2e": "MRs", "webnlg": "entries"}  # what max_test counts; max_train and max_dev count references


class Splits(NamedTuple):
    train: list[tuple[str, str]]
    dev: list[tuple[str, str]]
    test: list[tuple[str, list[str]]]
    subsets: dict[str, list[int]]  # name -> indices into test (scored separately as well)
    sizes: dict[str, dict[str, int]]  # split -> the whole file's counts (before the max_* limits)


def draw(items: list, n: int | None, seed: int | None) -> list:
    """The first `n` items (all if n is None), or with a `seed`, n of them drawn at random, in file order."""
    if n is None or n >= len(items):
        return list(items)
    if seed is None:
        return items[:n]
    return [items[i] for i in sorted(random.Random(seed).sample(range(len(items)), n))]


def task_splits(task: str, data_dir=None, max_train: int | None = None, max_dev: int | None = None,
                max_test: int | None = None, train_seed: int | None = None) -> Splits:
    """The first `max_*` items of each split (None: all); with `train_seed`, max_train training pairs drawn at
    random from the whole training file with that seed."""
    # a drawn sample comes from the whole file, so the whole file must be there
    limits = {"train": max_train if train_seed is None else None, "dev": max_dev, "test": max_test}
    if task == "e2e":
        rows = {s: load_e2e(s, data_dir) for s in SPLITS}
        sizes = {s: {"references": len(rows[s]), "MRs": len(group_by_mr(rows[s]))} for s in SPLITS}
        train, dev = ([tuple(e) for e in rows[s]] for s in ("train", "dev"))
        test = group_by_mr(rows["test"])[:max_test]
        subsets = {}
        where = {s: dataset_dir("e2e", data_dir) / E2E_FILES[s] for s in SPLITS}
    elif task == "webnlg":
        entries = {s: load_webnlg(s, data_dir) for s in SPLITS}
        sizes = {s: {"references": sum(len(e.references) for e in entries[s]), "entries": len(entries[s])}
                 for s in SPLITS}
        train, dev = ([(e.table, ref) for e in entries[s] for ref in e.references] for s in ("train", "dev"))
        test_entries = entries["test"][:max_test]
        test = [(e.table, list(e.references)) for e in test_entries]
        subsets = {"seen": [i for i, e in enumerate(test_entries) if e.seen],
                   "unseen": [i for i, e in enumerate(test_entries) if not e.seen]}
        where = dict.fromkeys(SPLITS, dataset_dir("webnlg_2017", data_dir))
    else:
        raise ValueError(f"unknown task {task!r}")
    for s in SPLITS:
        check_counts(task, s, sizes[s], TEST_UNIT[task] if s == "test" else "references", limits[s], where[s])
    return Splits(draw(train, max_train, train_seed), dev[:max_dev], test, subsets, sizes)


def sst2_splits(data_dir=None, max_train: int | None = None, max_dev: int | None = None,
                max_test: int | None = None, train_seed: int | None = None
                ) -> tuple[dict[str, list[tuple[int, str]]], dict[str, dict[str, int]]]:
    """SST-2's (label, sentence) rows per split, the first `max_*` of each (max_train drawn at random with
    `train_seed`, if given), and each file's counts."""
    limits = {"train": max_train if train_seed is None else None, "dev": max_dev, "test": max_test}
    rows = {s: load_sst2(s, data_dir) for s in SPLITS}
    sizes = {s: {"sentences": len(rows[s])} for s in SPLITS}
    for s in SPLITS:
        check_counts("sst2", s, sizes[s], "sentences", limits[s], dataset_dir("sst2", data_dir) / f"stsa.binary.{s}")
    return {"train": draw(rows["train"], max_train, train_seed),
            **{s: rows[s][:limits[s]] for s in ("dev", "test")}}, sizes

# each task's primary test metric: the key in a run's metrics.json, and its name in reports
PRIMARY = {"e2e": ("bleu", "BLEU"), "webnlg": ("bleu", "BLEU"), "sst2": ("accuracy", "accuracy (%)")}
