"""E2E (Novikova et al. 2017): restaurant tables to text. Training and dev items are (table, reference) pairs;
the test set is grouped by table, each with all its references. Outputs are also scored for slot errors."""
from __future__ import annotations

from ..data import E2E_FILES, REMOTES, SPLITS, check_counts, dataset_dir, group_by_mr, load_e2e
from . import Splits, Task, draw, limits, register


def splits(data_dir, max_train, max_dev, max_test, train_seed) -> Splits:
    need = limits(max_train, max_dev, max_test, train_seed)
    rows = {s: load_e2e(s, data_dir) for s in SPLITS}
    sizes = {s: {"references": len(rows[s]), "MRs": len(group_by_mr(rows[s]))} for s in SPLITS}
    for s in SPLITS:
        check_counts("e2e", s, sizes[s], "MRs" if s == "test" else "references", need[s],
                     dataset_dir("e2e", data_dir) / E2E_FILES[s])
    train, dev = ([tuple(e) for e in rows[s]] for s in ("train", "dev"))
    return Splits(draw(train, max_train, train_seed), dev[:max_dev], group_by_mr(rows["test"])[:max_test], {}, sizes)


def texts(data_dir) -> list[str]:
    return [text for _, text in load_e2e("train", data_dir)]


def score(predictions: list[str], test: list, data_dir) -> dict:
    """Table values left out of the outputs or added to them (experiments/slots.py)."""
    from ..slots import corpus_slot_errors
    return corpus_slot_errors(predictions, [table for table, _ in test], data_dir)


def rescore(folder) -> dict:
    """The slot error rate (%) of a finished run's test predictions (None without them, or with fewer than the
    whole test set), scored again from its results folder as the reports do."""
    from ..results import read_predictions
    from ..slots import corpus_slot_errors, e2e_test
    outputs = read_predictions(folder)
    tables = e2e_test()[0] if outputs is not None else []
    full = outputs is not None and len(outputs) == len(tables)
    return {"slot_error_rate": corpus_slot_errors(outputs, tables)["slot_error_rate"] if full else None}


E2E = register(Task("e2e", "generation", "e2e", REMOTES["e2e"].files, ("bleu", "BLEU"), splits, texts, score,
                    columns=("slot_error_rate",), rescore=rescore))
