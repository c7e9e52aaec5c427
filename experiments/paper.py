"""The paper's numbers and the floors every report draws, in one place.

Li & Liang (2021), ACL version, GPT-2 medium (../shared/PAPER.md): Table 1 (E2E, WebNLG) and the E2E
ablations (prefix length, embedding-only, infix). The floors are the levels a result must clear to mean
anything: E2E's fixed template, SST-2's chance and bag of words.
"""
from __future__ import annotations

# E2E test BLEU (Table 1)
E2E = {"prefix": 70.3, "finetune": 68.8}
# WebNLG test BLEU on the categories seen in training, the unseen ones and all (Table 1)
WEBNLG = {"prefix": {"seen": 62.9, "unseen": 45.3, "all": 55.0}, "finetune": {"seen": 64.7, "unseen": 26.7, "all": 45.7}}
# E2E ablations by prefix length: the every-layer prefix has a number at length 10 only
EVERY, EMBEDDING, INFIX = {10: E2E["prefix"]}, {1: 48.1, 10: 62.2, 20: 61.9}, {1: 67.9, 10: 67.2, 20: 66.7}
MEDIUM_NON_EMBEDDING = 24 * 12 * 1024 * 1024 + 24 * 13 * 1024 + 2 * 1024  # GPT-2 medium: blocks + final layer norm
FLOORS = {"e2e": [(58.0, "template floor (~58 BLEU)")], "sst2": [(50.0, "chance"), (80.9, "bag of words (80.9%)")]}


def draw_floors(ax, task: str, fontsize: float = 8) -> None:
    """The task's reference levels (template floor, chance, bag of words) as labelled dotted lines."""
    for y, label in FLOORS.get(task, []):
        ax.axhline(y, ls=":", c="gray")
        ax.annotate(label, (0.01, y), xycoords=("axes fraction", "data"), va="bottom", fontsize=fontsize, color="gray")


# the paper's points on the reference sweeps' plots (studies/reference/RESULTS.md), by (task, plot)
PAPER_POINTS = {("e2e", "length"): [(10, EVERY[10], f"paper, GPT-2 medium, len 10 ({EVERY[10]})")],
                ("e2e", "depth"): [(1, EMBEDDING[1], "paper: embedding only 1 / 10 / 20"), (10, EMBEDDING[10], None),
                                   (20, EMBEDDING[20], None), (10, EVERY[10], "paper: every layer, len 10")]}
