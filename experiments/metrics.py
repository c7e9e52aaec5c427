"""The E2E challenge's metrics, computed as its official script (tuetschek/e2e-metrics) computes them.

`corpus_metrics(hypotheses, references)` takes one output per input and that input's references (any
number each) and returns BLEU and NIST as e2e-metrics gets them from `mteval-v13a-sig.pl`, and
ROUGE-L, CIDEr and METEOR as it gets them from the MS-COCO caption evaluation (pycocoevalcap):

- BLEU, NIST: mteval-v13a tokenization with its default lowercasing (ASCII letters only, as Perl's
  `tr/[A-Z]/[a-z]/`); corpus BLEU-4 with the closest reference length (ties: the shorter) and mteval's
  smoothing of zero counts; NIST-5 with information weights counted over all references. e2e-metrics pads
  every input to the largest number of references with empty ones, so NIST's length penalty compares the
  output length with (all reference words) / (largest reference count), not with the mean reference length.
- ROUGE-L, CIDEr, METEOR: texts go through the COCO tokenizer first (Stanford PTBTokenizer, lowercased,
  punctuation tokens dropped). `coco_tokenize` re-implements it in Python: it gives the jar's tokens for
  every E2E dev and test reference and for 98.9% of the WebNLG test references (tests/test_metrics.py).
  ROUGE-L: LCS precision and recall each maximized over the references, F with beta = 1.2, averaged over
  inputs. CIDEr is pycocoevalcap's `Cider`, which is CIDEr-D: tf-idf n-grams 1-4 with document
  frequencies over the test references, clipped, Gaussian length penalty (sigma 6), x10.
- METEOR needs Java and the Meteor 1.5 jar: it is computed with the jar that the `pycocoevalcap` package
  ships, as that package's wrapper runs it, when the package and `java` are installed, and is None
  otherwise. The jar runs as a child process with a time limit (MINIGPT_METEOR_TIMEOUT seconds, default
  600): if it fails or gives no answer in time it is killed, METEOR is None and one warning says why.

BLEU, METEOR and ROUGE-L are reported on a 0-100 scale (as in the paper), NIST and CIDEr as they are.
"""
from __future__ import annotations

import importlib.util
import math
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from collections import Counter
from pathlib import Path

Tokens = list[str]

# ---------------------------------------------------------------------------------------------------------
# Tokenizers


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_MTEVAL = [(re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation
           (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period and comma unless preceded by a digit
           (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # ... unless followed by a digit
           (re.compile(r"([0-9])(-)"), r"\1 \2 ")]  # dash after a digit


def mteval_tokenize(text: str) -> Tokens:
    """mteval-v13a's default tokenization (`tokenization`), lowercasing included."""
    text = text.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    text = text.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    text = f" {text} ".translate(_ASCII_LOWER)
    for pattern, repl in _MTEVAL:
        text = pattern.sub(repl, text)
    return text.split()


# pycocoevalcap's list of dropped tokens, plus '"' (which the jar would have turned into `` or '')
_COCO_DROPPED = {"''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";", '"'}
_PTB_CHARS = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": " -- ",
                            "\u2014": " -- ", "\u2026": "...", "\u20ac": "$", "£": "#"})
_PTB_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_W = r"[\w\u0300-\u036f]"
_PTB_TOKEN = re.compile(rf"""
    (?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|Inc|Co|Ltd|Corp|vs|etc|Mt|Ft|Gen|Gov|Sen|Rev|Capt|Col|Lt|Ave|al)\.(?!\w)
  | (?:[A-Za-z]\.){{2,}}(?!\w) | [A-Z]\.(?!\w|$)                          # U.S., e.g., initials
  | (?i:can(?=not\b)|gon(?=na\b)|wan(?=na\b)|{_W}+(?=n't\b)|n't|'(?:s|re|ve|ll|d|m)\b)  # clitics
  | \d+(?:\.\d+)+(?=[A-Za-z])                                            # 8.3 in 8.3m
  | (?:(?<!\w)-(?=\d))?{_W}+(?:(?:[-/&]|'(?!(?:s|re|ve|ll|d|m)\b)|\.(?=\d)|(?<=[^\W\d])\.(?=[^\W\d])
                              |(?<=\d)[,:](?=\d)|[!?](?={_W})){_W}+)*(?:\.(?=,))?  # words, numbers
  | \.\.\.|--|\S
""", re.X)


def coco_tokenize(text: str) -> str:
    """What pycocoevalcap's PTBTokenizer makes of a sentence: Stanford PTBTokenizer 3.4.1 with -preserveLines
    -lowerCase ("£30" -> "# 30", "(" -> "-lrb-", "can't" -> "ca n't"), then punctuation tokens removed
    ("-lrb-" stays: the removal list has it upper-case). A regex approximation of the Java lexer."""
    tokens = (_PTB_BRACKETS.get(t, t) for t in _PTB_TOKEN.findall(text.translate(_PTB_CHARS)))
    return " ".join(t.lower() for t in tokens if t not in _COCO_DROPPED)


# ---------------------------------------------------------------------------------------------------------
# BLEU and NIST (mteval-v13a-sig.pl as e2e-metrics runs it)


def _ngrams(tokens: Tokens, n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _clipped(hyp: Tokens, refs: list[Tokens], n: int) -> Counter:
    """The hypothesis' n-grams, each counted at most as often as in the reference that has it most."""
    most = Counter()
    for r in refs:
        most |= _ngrams(r, n)
    return _ngrams(hyp, n) & most


def _check(hypotheses: list[str], references: list[list[str]]) -> None:
    if len(hypotheses) != len(references) or not hypotheses or not all(references):
        raise ValueError(f"need one non-empty list of references per hypothesis "
                         f"({len(hypotheses)} hypotheses, {len(references)} reference lists)")


def bleu(hypotheses: list[str], references: list[list[str]]) -> float:
    """Corpus BLEU-4 (0-100), multi-reference, as mteval-v13a computes it (see the module docstring)."""
    _check(hypotheses, references)
    hits, totals, ref_len = [0] * 4, [0] * 4, 0
    for hyp, refs in zip(hypotheses, references):
        h, rs = mteval_tokenize(hyp), [mteval_tokenize(r) for r in refs]
        for n in range(1, 5):
            hits[n - 1] += sum(_clipped(h, rs, n).values())
            totals[n - 1] += max(len(h) - n + 1, 0)
        ref_len += min([len(r) for r in rs if r] or [0], key=lambda L: (abs(L - len(h)), L))
    if totals[0] == 0:
        return 0.0
    log_p, smooth = 0.0, 1
    for hit, total in zip(hits, totals):
        if total and not hit:  # mteval: the k-th zero count becomes 1 / 2^k
            smooth *= 2
            log_p += math.log(1 / (smooth * total))
        elif total:
            log_p += math.log(hit / total)
    return 100 * math.exp(log_p / 4 + min(0.0, 1 - ref_len / totals[0]))


def nist(hypotheses: list[str], references: list[list[str]]) -> float:
    """Corpus NIST-5, multi-reference, as mteval-v13a-sig.pl computes it for e2e-metrics."""
    _check(hypotheses, references)
    hyps = [mteval_tokenize(h) for h in hypotheses]
    refs = [[mteval_tokenize(r) for r in rs] for rs in references]
    counts = Counter()  # n-gram counts over all references; () counts the words
    for r in (r for rs in refs for r in rs):
        counts[()] += len(r)
        for n in range(1, 6):
            counts.update(_ngrams(r, n))
    gain, totals = [0.0] * 5, [0] * 5
    for h, rs in zip(hyps, refs):
        for n in range(1, 6):
            totals[n - 1] += max(len(h) - n + 1, 0)
            gain[n - 1] += sum(c * math.log2(counts[g[:-1]] / counts[g]) for g, c in _clipped(h, rs, n).items())
    score = sum(g / max(t, 1) for g, t in zip(gain, totals))
    ratio = totals[0] / (counts[()] / max(len(rs) for rs in refs)) if counts[()] else 0.0
    beta = -math.log(0.5) / math.log(1.5) ** 2  # penalty 0.5 at 2/3 of the reference length
    return score * (1.0 if ratio >= 1 else 0.0 if ratio <= 0 else math.exp(-beta * math.log(ratio) ** 2))


# ---------------------------------------------------------------------------------------------------------
# ROUGE-L, CIDEr, METEOR (pycocoevalcap, on COCO-tokenized text)


def _lcs(a: Tokens, b: Tokens) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, 1):
            prev_diag, row[j] = row[j], prev_diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(hypotheses: list[str], references: list[list[str]]) -> float:
    """pycocoevalcap's ROUGE-L (0-100): per input, best LCS precision and best LCS recall over its
    references, F-measure with beta = 1.2; mean over inputs."""
    _check(hypotheses, references)
    beta2, scores = 1.2 ** 2, []
    for hyp, refs in zip(hypotheses, references):
        c = coco_tokenize(hyp).split(" ")
        lcs = [(_lcs(c, r), len(r)) for r in (coco_tokenize(r).split(" ") for r in refs)]
        p, r = max(k / len(c) for k, _ in lcs), max(k / n for k, n in lcs)
        scores.append((1 + beta2) * p * r / (r + beta2 * p) if p and r else 0.0)
    return 100 * sum(scores) / len(scores)


def cider(hypotheses: list[str], references: list[list[str]]) -> float:
    """pycocoevalcap's `Cider` (CIDEr-D; see the module docstring), mean over inputs."""
    _check(hypotheses, references)
    grams = lambda s: Counter(g for n in range(1, 5) for g in _ngrams(coco_tokenize(s).split(), n).elements())
    hyps = [grams(h) for h in hypotheses]
    refs = [[grams(r) for r in rs] for rs in references]
    df = Counter(g for rs in refs for g in set().union(*rs))  # inputs whose references contain g
    log_n = math.log(len(refs))

    def vec(counts: Counter) -> tuple[dict, list[float], int]:
        v = {g: tf * (log_n - math.log(max(1.0, df[g]))) for g, tf in counts.items()}
        norms = [math.sqrt(sum(x * x for g, x in v.items() if len(g) == n)) for n in range(1, 5)]
        return v, norms, sum(tf for g, tf in counts.items() if len(g) == 2)  # "length": bigram count, as there

    scores = []
    for h, rs in zip(hyps, refs):
        vh, nh, lh = vec(h)
        total = 0.0
        for r in rs:
            vr, nr, lr = vec(r)
            for n in range(1, 5):
                s = sum(min(x, vr.get(g, 0.0)) * vr.get(g, 0.0) for g, x in vh.items() if len(g) == n)
                s = s / (nh[n - 1] * nr[n - 1]) if nh[n - 1] and nr[n - 1] else s
                total += s * math.exp(-((lh - lr) ** 2) / (2 * 6.0 ** 2)) / 4
        scores.append(10 * total / len(rs))
    return sum(scores) / len(scores)


class MeteorError(Exception):
    """Why the METEOR jar gave no score, and what to do about it (one line)."""


def meteor_files() -> tuple[Path, Path] | None:
    """The Meteor 1.5 jar and its English paraphrase table, as pycocoevalcap ships them, or None."""
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "meteor"
    jar = folder / "meteor-1.5.jar"
    return (jar, folder / "data" / "paraphrase-en.gz") if jar.is_file() else None


def meteor_command(java: str, jar: Path, table: Path) -> list[str]:
    """The jar's command line as pycocoevalcap's wrapper runs it (`-l en -norm`, lines over stdin and
    stdout), plus `-a table`: by itself the jar finds its table through a URL, which fails on a path with
    a space ("file not found (file:/a%2520b/...)"). A list, not a shell line: a space stays in its argument."""
    return [java, "-Xmx2G", "-jar", str(jar), "-", "-", "-stdio", "-l", "en", "-norm", "-a", str(table)]


def meteor_timeout() -> float:
    """Seconds the whole METEOR run may take (loading the jar's tables takes ~10 s): MINIGPT_METEOR_TIMEOUT."""
    value = os.environ.get("MINIGPT_METEOR_TIMEOUT", "600")
    try:
        return float(value)
    except ValueError:
        raise MeteorError(f"MINIGPT_METEOR_TIMEOUT={value!r} is not a number of seconds; set it to one") from None


def meteor(hypotheses: list[str], references: list[list[str]]) -> float | None:
    """METEOR 1.5 (0-100) as pycocoevalcap computes it, or None without pycocoevalcap or Java, or when the
    jar fails or gives no answer within meteor_timeout() seconds (then one warning line says why)."""
    _check(hypotheses, references)
    files, java = meteor_files(), shutil.which("java")
    if files is None or java is None:
        return None
    score_lines = [" ||| ".join(["SCORE", *(coco_tokenize(r) for r in refs),
                                 coco_tokenize(hyp).replace("|||", "").replace("  ", " ")])
                   for hyp, refs in zip(hypotheses, references)]  # as pycocoevalcap's Meteor._stat writes them
    try:
        return 100 * _meteor_score(meteor_command(java, *files), score_lines, meteor_timeout())
    except MeteorError as e:
        warnings.warn(f"METEOR not computed (recorded as None): {e}", stacklevel=2)
        return None


def _meteor_score(command: list[str], score_lines: list[str], timeout: float) -> float:
    """The corpus METEOR (0-1) from the jar's -stdio protocol: a SCORE line per output gets back its
    statistics; one EVAL line with all of them gets back each output's score, then the corpus score."""
    jar = _Child(command, timeout)
    try:
        jar.send("".join(line + "\n" for line in score_lines))
        stats = jar.receive(len(score_lines))
        jar.send("EVAL ||| " + " ||| ".join(stats) + "\n")
        answer = jar.receive(len(score_lines) + 1)[-1]
    finally:
        jar.stop()
    try:
        return float(answer)
    except ValueError:
        raise MeteorError(f"{jar.name} answered {answer[:80]!r}, not a score; run it by hand to see why") from None


class _Child:
    """A child process spoken to line by line, every wait bounded by one deadline: its stdin is written
    and its stdout read on helper threads, so a child that stops reading or answering never blocks the
    caller, and stop() kills it without waiting on it (pycocoevalcap's wrapper could deadlock here)."""

    def __init__(self, command: list[str], timeout: float):
        self.name, self.timeout = f"{Path(command[0]).name} {' '.join(command[1:4])}", timeout
        self.deadline = time.monotonic() + timeout
        self.errors = tempfile.TemporaryFile()  # stderr to a file: a full pipe could stall the child
        try:
            self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self.errors, encoding="utf-8")
        except OSError as e:
            self.errors.close()
            raise MeteorError(f"could not start {self.name} ({e}); check that `java -version` works") from None
        self.outbox, self.inbox = queue.Queue(), queue.Queue()
        threading.Thread(target=self._write, daemon=True).start()
        threading.Thread(target=self._read, daemon=True).start()

    def _write(self) -> None:
        """Writes what send() queued to the child's stdin, then closes it (None: stop)."""
        while (text := self.outbox.get()) is not None:
            try:
                self.proc.stdin.write(text)
                self.proc.stdin.flush()
            except (OSError, ValueError):  # the child is gone: receive() says why
                break
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def _read(self) -> None:
        """Queues the child's stdout line by line; None at its end (the child exited or was killed)."""
        try:
            for line in self.proc.stdout:
                self.inbox.put(line)
        except (OSError, ValueError):
            pass
        self.inbox.put(None)

    def send(self, text: str) -> None:
        self.outbox.put(text)

    def receive(self, n: int) -> list[str]:
        """The child's next `n` lines, stripped; MeteorError if it exits first or the deadline passes."""
        lines = []
        for _ in range(n):
            try:
                line = self.inbox.get(timeout=max(0.0, self.deadline - time.monotonic()))
            except queue.Empty:
                raise MeteorError(f"{self.name} gave no answer within {self.timeout:g} s and was stopped; "
                                  "set MINIGPT_METEOR_TIMEOUT=<seconds> to wait longer") from None
            if line is None:
                raise MeteorError(f"{self.name} stopped ({self._last_error()}); run it by hand to see why")
            lines.append(line.strip())
        return lines

    def _last_error(self) -> str:
        """The child's exit code and last line on stderr, e.g. a Java exception naming a missing file."""
        try:
            code = self.proc.wait(timeout=5)  # its stdout ended: it has exited or is about to
        except subprocess.TimeoutExpired:
            code = "none yet"
        self.errors.seek(0)
        last = [line.strip() for line in self.errors.read().decode(errors="replace").splitlines() if line.strip()]
        return f"exit code {code}" + (f": {last[-1][:200]}" if last else "")

    def stop(self) -> None:
        """Kills the child (if still running) and reaps it; waits at most 5 s, never on a lock."""
        self.outbox.put(None)
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.errors.close()


def corpus_metrics(hypotheses: list[str], references: list[list[str]]) -> dict[str, float | None]:
    """All five E2E metrics: {"bleu", "nist", "meteor", "rouge_l", "cider"} (meteor may be None)."""
    return {"bleu": bleu(hypotheses, references), "nist": nist(hypotheses, references),
            "meteor": meteor(hypotheses, references), "rouge_l": rouge_l(hypotheses, references),
            "cider": cider(hypotheses, references)}
