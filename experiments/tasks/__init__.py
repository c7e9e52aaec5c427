"""The tasks a run can train and score on, as a registry: one module per task declares its `Task`.

A task says where its data is (the dataset's folder in a data directory and its files, fingerprinted as the
run's data; data.py finds, downloads and checks them), how to read its splits in the one shape the runner
uses (`Splits`: training and dev items, test items, named test subsets scored apart such as WebNLG's seen and
unseen categories, and each file's published counts, checked before the `max_*` limits cut it), its kind
(generation: (table, text) pairs, beam-decoded and scored with the generation metrics; classification:
(label, text) rows), its primary metric, any extra scorer of its test predictions (E2E's slot errors) and the
unlabeled text a base model may be adapted on. A new task is one module plus one line in `MODULES`;
`tests/test_tasks.py` adds one and runs it through a run, a plan and its report.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, NamedTuple

from ..registry import Registry

MODULES = ("experiments.tasks.e2e", "experiments.tasks.webnlg", "experiments.tasks.sst2")


class Splits(NamedTuple):
    train: list  # generation: (table, text) pairs; classification: (label, text) rows
    dev: list
    test: list  # generation: (table, references) groups; classification: (label, text) rows
    subsets: dict[str, list[int]]  # name -> indices into test (scored separately as well)
    sizes: dict[str, dict[str, int]]  # split -> the whole file's counts (before the max_* limits)


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # "generation" or "classification"
    dataset: str  # its folder in a data directory (data.dataset_dir)
    files: tuple[str, ...]  # the dataset's files, fingerprinted as a run's data
    metric: tuple[str, str]  # the primary test metric: its key in metrics.json and its name in reports
    splits: Callable  # (data_dir, max_train, max_dev, max_test, train_seed) -> Splits
    texts: Callable | None = None  # data_dir -> the training split's target texts (task adaptation)
    score: Callable | None = None  # (predictions, test, data_dir) -> extra test metrics
    columns: tuple[str, ...] = ()  # metrics a study report shows beside the primary one, e.g. slot_error_rate
    rescore: Callable | None = None  # a finished run's results folder -> `columns` scored again from its predictions


REGISTRY = Registry("task", MODULES)
register, load, get = REGISTRY.register, REGISTRY.load, REGISTRY.find


def names() -> tuple[str, ...]:
    return tuple(load())


def primary(name: str) -> tuple[str, str]:
    """A task's primary test metric: (key in metrics.json, name in reports)."""
    return get(name).metric


def found(rows: list[dict]) -> list[str]:
    """The tasks of `rows` (each with a "task"), in the registry's order, then any others in theirs."""
    present = list(dict.fromkeys(r["task"] for r in rows))
    return [t for t in names() if t in present] + [t for t in present if t not in REGISTRY]


def limits(max_train: int | None, max_dev: int | None, max_test: int | None, train_seed: int | None) -> dict:
    """split -> how many items its file must hold at least (None: all it was published with): a training
    sample drawn with a seed comes from the whole file, so the whole file must be there."""
    return {"train": max_train if train_seed is None else None, "dev": max_dev, "test": max_test}


def draw(items: list, n: int | None, seed: int | None) -> list:
    """The first `n` items (all if n is None), or with a `seed`, n of them drawn at random, in file order."""
    if n is None or n >= len(items):
        return list(items)
    if seed is None:
        return items[:n]
    return [items[i] for i in sorted(random.Random(seed).sample(range(len(items)), n))]


def task_splits(task: str, data_dir=None, max_train: int | None = None, max_dev: int | None = None,
                max_test: int | None = None, train_seed: int | None = None) -> Splits:
    """A task's splits: the first `max_*` items of each (None: all); with `train_seed`, max_train training items
    drawn at random from the whole training file with that seed."""
    return get(task).splits(data_dir, max_train, max_dev, max_test, train_seed)


def sst2_splits(data_dir=None, max_train: int | None = None, max_dev: int | None = None,
                max_test: int | None = None, train_seed: int | None = None
                ) -> tuple[dict[str, list[tuple[int, str]]], dict[str, dict[str, int]]]:
    """SST-2's (label, sentence) rows per split and each file's counts (`task_splits("sst2", ...)`)."""
    s = task_splits("sst2", data_dir, max_train, max_dev, max_test, train_seed)
    return {"train": s.train, "dev": s.dev, "test": s.test}, s.sizes
