"""WebNLG 2017 (Gardent et al. 2017): DBpedia triples to text, the paper's copy. The test set is scored as a
whole and on the categories seen in training and the unseen ones apart (the paper's extrapolation test)."""
from __future__ import annotations

from ..data import REMOTES, SPLITS, check_counts, dataset_dir, load_webnlg
from . import Splits, Task, draw, limits, register


def splits(data_dir, max_train, max_dev, max_test, train_seed) -> Splits:
    need = limits(max_train, max_dev, max_test, train_seed)
    entries = {s: load_webnlg(s, data_dir) for s in SPLITS}
    sizes = {s: {"references": sum(len(e.references) for e in entries[s]), "entries": len(entries[s])}
             for s in SPLITS}
    for s in SPLITS:
        check_counts("webnlg", s, sizes[s], "entries" if s == "test" else "references", need[s],
                     dataset_dir("webnlg_2017", data_dir))
    train, dev = ([(e.table, ref) for e in entries[s] for ref in e.references] for s in ("train", "dev"))
    test_entries = entries["test"][:max_test]
    subsets = {"seen": [i for i, e in enumerate(test_entries) if e.seen],
               "unseen": [i for i, e in enumerate(test_entries) if not e.seen]}
    test = [(e.table, list(e.references)) for e in test_entries]
    return Splits(draw(train, max_train, train_seed), dev[:max_dev], test, subsets, sizes)


def texts(data_dir) -> list[str]:
    return [ref for e in load_webnlg("train", data_dir) for ref in e.references]


WEBNLG = register(Task("webnlg", "generation", "webnlg_2017", REMOTES["webnlg_2017"].files, ("bleu", "BLEU"),
                       splits, texts, columns=("bleu_seen", "bleu_unseen")))
