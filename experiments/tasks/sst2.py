"""SST-2 (Socher et al. 2013), the Kim (2014) split: movie-review sentences, positive or negative. Rows are
(label, sentence); a run reads them through a template and scores accuracy and macro F1."""
from __future__ import annotations

from ..data import REMOTES, SPLITS, check_counts, dataset_dir, load_sst2
from . import Splits, Task, draw, limits, register


def splits(data_dir, max_train, max_dev, max_test, train_seed) -> Splits:
    need = limits(max_train, max_dev, max_test, train_seed)
    rows = {s: load_sst2(s, data_dir) for s in SPLITS}
    sizes = {s: {"sentences": len(rows[s])} for s in SPLITS}
    for s in SPLITS:
        check_counts("sst2", s, sizes[s], "sentences", need[s], dataset_dir("sst2", data_dir) / f"stsa.binary.{s}")
    return Splits(draw(rows["train"], max_train, train_seed), rows["dev"][:max_dev], rows["test"][:max_test], {},
                  sizes)


def texts(data_dir) -> list[str]:
    return [sentence for _, sentence in load_sst2("train", data_dir)]


SST2 = register(Task("sst2", "classification", "sst2", REMOTES["sst2"].files, ("accuracy", "accuracy (%)"),
                     splits, texts))
