"""The paper's numbers and the floors every report draws, in one place.

Li & Liang (2021), ACL version, GPT-2 medium (../shared/PAPER.md): Table 1 (E2E, WebNLG) and the E2E
ablations (prefix length, embedding-only, infix). The floors are the levels a result must clear to mean
anything: E2E's fixed template, SST-2's chance and bag of words.
"""
from __future__ import annotations

# E2E test scores of Table 1 (ACL version, GPT-2 medium: fine-tuning, adapter 0.1%, prefix), with the share of
# the model's parameters each trains (%)
TABLE1 = {"finetune": {"bleu": 68.8, "nist": 8.71, "meteor": 46.1, "rouge_l": 71.1, "cider": 2.43, "percent": 100.0},
          "adapter-0.1": {"bleu": 66.3, "nist": 8.41, "meteor": 45.0, "rouge_l": 69.8, "cider": 2.40, "percent": 0.1},
          "prefix": {"bleu": 70.3, "nist": 8.82, "meteor": 46.3, "rouge_l": 72.1, "cider": 2.46, "percent": 0.1}}
# The LoRA paper (Hu et al. 2022; github.com/microsoft/LoRA), GPT-2 medium on E2E: test BLEU and trainable
# parameters (of 354.92M); its rows other than LoRA are Li & Liang's arXiv numbers
LORA_PAPER = {"finetune": (68.2, 354.92e6), "adapter": (66.3, 0.37e6), "prefix": (69.7, 0.35e6), "lora": (70.4, 0.35e6)}
LORA_PAPER_TOTAL = 354.92e6
# E2E test BLEU (Table 1)
E2E = {"prefix": TABLE1["prefix"]["bleu"], "finetune": TABLE1["finetune"]["bleu"]}
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
