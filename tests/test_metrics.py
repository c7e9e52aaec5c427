"""The E2E metrics against independent implementations: sacrebleu (BLEU), nltk (NIST), pycocoevalcap
(ROUGE-L, CIDEr, METEOR) and, where Java is installed, the Stanford PTBTokenizer jar that the official
COCO pipeline tokenizes with."""
from __future__ import annotations

import math
import shutil
import string

import pytest

from experiments import metrics as M
from experiments.data import group_by_mr, load_e2e, load_webnlg
from minigpt.datadir import find_data

needs_e2e = pytest.mark.skipif(find_data("e2e/testset_w_refs.csv") is None, reason="E2E data not found")
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="java not installed")


@pytest.fixture(scope="module")
def human():
    """A realistic system: for each E2E test MR with 2+ references, the first reference is the output and
    the others are its references (variable counts, 1 to 44)."""
    groups = [refs for _, refs in group_by_mr(load_e2e("test")) if len(refs) > 1]
    return [refs[0] for refs in groups], [refs[1:] for refs in groups]


def sacre_bleu(hyps, refs):
    sacrebleu = pytest.importorskip("sacrebleu")
    streams = [[rs[i] if i < len(rs) else None for rs in refs] for i in range(max(map(len, refs)))]
    return sacrebleu.corpus_bleu(hyps, streams, tokenize="13a", lowercase=True).score


@needs_e2e
def test_bleu_matches_sacrebleu_on_e2e(human):
    hyps, refs = human
    assert M.bleu(hyps, refs) == pytest.approx(sacre_bleu(hyps, refs), abs=0.01)
    assert 55 < M.bleu(hyps, refs) < 65  # PAPER.md: human references score about 59 against the others
    upper = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)
    short = [" ".join(h.split()[:10]).translate(upper) for h in hyps]  # brevity penalty, lowercasing
    assert M.bleu(short, refs) == pytest.approx(sacre_bleu(short, refs), abs=0.01)


def test_bleu_smoothing_of_zero_counts_matches_sacrebleu():
    hyps = ["The cat sat on the mat today.", "A dog ran, fast!"]
    refs = [["the cat is on the mat now", "there is a cat"], ["the dog runs fast", "a dog ran"]]
    assert M.bleu(hyps, refs) == pytest.approx(sacre_bleu(hyps, refs), abs=1e-9)


def test_bleu_extremes():
    refs = [["the vaults is a pub near café adriatic .", "a pub"], ["zizzi is cheap ."]]
    assert M.bleu([r[0] for r in refs], refs) == pytest.approx(100.0)
    disjoint, refs = ["one two three four five six seven eight nine ten"] * 100, refs * 50
    # mteval smooths zero counts (1/2, 1/4, ... of a hit), so "no match at all" is ~0 rather than 0
    assert M.bleu(disjoint, refs) < 0.05 and M.nist(disjoint, refs) == 0.0
    assert sacre_bleu(disjoint, refs) == 0.0


def test_bleu_lowercases_ascii_only_as_mteval():
    # Perl's tr/[A-Z]/[a-z]/: "CAFÉ" becomes "cafÉ", which does not match "café" (sacrebleu's .lower() would)
    assert M.mteval_tokenize("The CAFÉ, Zizzi.") == ["the", "cafÉ", ",", "zizzi", "."]


@needs_e2e
def test_nist_matches_nltk_with_one_reference(human):
    nltk_nist = pytest.importorskip("nltk.translate.nist_score")
    hyps, refs = human
    # pre-tokenized, lowercased text: mteval's tokenization leaves it alone, so both see the same tokens
    tok = lambda s: " ".join(M.mteval_tokenize(s))
    hyps, refs = [tok(h) for h in hyps], [[tok(rs[0])] for rs in refs]
    for hs in (hyps, [" ".join(h.split()[:8]) for h in hyps]):  # second: length penalty active
        ours = M.nist(hs, refs)
        theirs = nltk_nist.corpus_nist([[r.split() for r in rs] for rs in refs], [h.split() for h in hs], n=5)
        assert ours == pytest.approx(theirs, rel=1e-9)


def test_nist_length_penalty_divides_reference_words_by_the_largest_reference_count():
    # e2e-metrics pads to 2 references each: 10 reference words / 2 -> ratio 4/5 (not 4 / (4 + 3))
    hyps, refs = ["a b", "a b"], [["a b c d"], ["a b c d", "a b"]]
    info = math.log2(10 / 3)  # unigrams a, b: 3 of 10 reference words; bigram "a b" carries no information
    beta = math.log(2) / math.log(1.5) ** 2
    assert M.nist(hyps, refs) == pytest.approx(info * math.exp(-beta * math.log(4 / 5) ** 2), rel=1e-12)


@needs_e2e
def test_rouge_l_and_cider_match_pycocoevalcap(human):
    rouge = pytest.importorskip("pycocoevalcap.rouge.rouge")
    cider = pytest.importorskip("pycocoevalcap.cider.cider")
    hyps, refs = human[0][:200], human[1][:200]
    res = {i: [M.coco_tokenize(h)] for i, h in enumerate(hyps)}
    gts = {i: [M.coco_tokenize(r) for r in rs] for i, rs in enumerate(refs)}
    assert M.rouge_l(hyps, refs) == pytest.approx(100 * rouge.Rouge().compute_score(gts, res)[0], abs=1e-9)
    assert M.cider(hyps, refs) == pytest.approx(cider.Cider().compute_score(gts, res)[0], abs=1e-9)


def test_rouge_l_extremes():
    refs = [["The Vaults is a pub.", "A pub."]]
    assert M.rouge_l(["the vaults is a pub"], refs) == pytest.approx(100.0)
    assert M.rouge_l(["zizzi serves pasta"], refs) == 0.0


def ptb_jar_tokenize(sentences: list[str]) -> list[str]:
    """The official COCO tokenization: Stanford PTBTokenizer (Java) + pycocoevalcap's punctuation removal."""
    ptb = pytest.importorskip("pycocoevalcap.tokenizer.ptbtokenizer")
    out = ptb.PTBTokenizer().tokenize({i: [{"caption": s}] for i, s in enumerate(sentences)})
    return [out[i][0] for i in range(len(sentences))]


@needs_java
@needs_e2e
def test_coco_tokenize_matches_the_ptbtokenizer_jar():
    e2e = [e.text for e in load_e2e("test")]
    assert [M.coco_tokenize(s) for s in e2e] == ptb_jar_tokenize(e2e)  # all 4,693 test references
    webnlg = [r for e in load_webnlg("test") for r in e.references]
    same = sum(a == M.coco_tokenize(s) for a, s in zip(ptb_jar_tokenize(webnlg), webnlg))
    assert same / len(webnlg) > 0.985  # measured 98.9%: rare abbreviations, foreign apostrophes


@needs_java
@needs_e2e
def test_corpus_metrics_equal_the_official_coco_pipeline(human):
    """ROUGE-L, CIDEr and METEOR as e2e-metrics gets them: jar tokenization, then pycocoevalcap."""
    meteor = pytest.importorskip("pycocoevalcap.meteor.meteor")
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    hyps, refs = human[0][:60], human[1][:60]
    flat = ptb_jar_tokenize(hyps + [r for rs in refs for r in rs])
    res = {i: [flat[i]] for i in range(len(hyps))}
    gts, k = {}, len(hyps)
    for i, rs in enumerate(refs):
        gts[i], k = flat[k:k + len(rs)], k + len(rs)
    ours = M.corpus_metrics(hyps, refs)
    assert set(ours) == {"bleu", "nist", "meteor", "rouge_l", "cider"}
    assert ours["rouge_l"] == pytest.approx(100 * Rouge().compute_score(gts, res)[0], abs=1e-9)
    assert ours["cider"] == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-9)
    assert ours["meteor"] == pytest.approx(100 * meteor.Meteor().compute_score(gts, res)[0], abs=1e-6)
    assert 30 < ours["meteor"] < 60


def test_meteor_is_none_without_java(monkeypatch):
    monkeypatch.setattr(M.shutil, "which", lambda name: None)
    assert M.meteor(["a pub"], [["a pub"]]) is None


def test_mismatched_inputs_are_rejected():
    with pytest.raises(ValueError):
        M.bleu(["a", "b"], [["a"]])
    with pytest.raises(ValueError):
        M.cider(["a"], [[]])
