"""Slot errors of E2E outputs: table values the text leaves out, and values it adds that the table lacks.

A simple string match over the E2E slot values, after lower-casing and dropping the spaces that the
table strings put into prices ("£ 20 - 25"):

- **missing**: a slot of the table whose value the output does not mention, in its words or a common
  paraphrase (`SYNONYMS`: "expensive" for "more than £30", "5 stars" for "5 out of 5", ...).
  `family friendly` counts as mentioned when the output speaks of families, kids or children, and for
  `no` only in a negated form ("not family friendly", "non-family", "adults only", "children should not").
- **added**: a value of the E2E vocabulary (every name, food, area, price, rating and venue type that the
  training tables use) that the output mentions but no slot of its table holds. Values are matched as
  whole words, so "low" is not found in "below".

The slot error rate is (missing + added) / table slots, as in the E2E challenge's analyses (Dušek et al.).
A matcher this simple also finds "errors" in the human references (about a tenth of their slots, mostly
paraphrases it does not know): compare systems with each other and with the references' own rate.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from .data import group_by_mr, load_e2e

FRIENDLY = r"\b(famil(y|ies)|kids?|child(ren)?)\b"
NEGATED = (r"(\bnot|n't|\bnon|\bno)[- ]+(\w+[- ]+)?(famil(y|ies)|kids?|child(ren)?)|\badults?[- ]only\b|"
           r"\b(famil(y|ies)|kids?|child(ren)?)\b[^.]{0,30}\b(not|n't|no|avoid)\b")
# Common paraphrases of a value (normalized forms; E2E references say "expensive" for "more than £30").
SYNONYMS = {
    "less than £20": ["less than £20", "under £20", "below £20", "cheap", "inexpensive", "low[- ]priced?",
                      "low[- ]cost", "affordable"],
    "more than £30": ["more than £30", "over £30", "above £30", "expensive", "high[- ]priced?", "pricey"],
    "£20-25": ["£20-25", "£20-£25", "20-25", "20 to 25", "moderate(ly)?", "average[- ]priced?", "mid[- ]priced?",
               "reasonabl[ey]"],
    "cheap": ["cheap", "inexpensive", "low[- ]priced?", "affordable", "low[- ]cost"],
    "moderate": ["moderate(ly)?", "average[- ]priced?", "mid[- ]priced?", "reasonabl[ey]"],
    "high": ["high", "expensive", "pricey", "costly"],
    "5 out of 5": ["5 out of 5", "5 stars?", "five stars?", "5/5", "five out of five"],
    "3 out of 5": ["3 out of 5", "3 stars?", "three stars?", "3/5", "three out of five"],
    "1 out of 5": ["1 out of 5", "1 stars?", "one stars?", "1/5", "one out of five"],
    "low": ["low", "poor(ly)?", "bad"],
    "city centre": ["city centre", "city center", "centre", "center", "downtown"],
    "riverside": ["riverside", "river"],
    "fast food": ["fast[- ]food"],
    "english": ["english", "british"],
    "coffee shop": ["coffee shop", "café", "cafe", "coffee house"],
}


def normalize(text: str) -> str:
    """Lower case, prices without inner spaces ("£ 20 - 25" -> "£20-25"), single spaces."""
    text = re.sub(r"£\s+(?=\d)", "£", text.lower())
    text = re.sub(r"(?<=\d)\s*-\s*(?=\d)", "-", text)
    return " ".join(text.split())


@lru_cache(maxsize=None)
def word_pattern(value: str) -> tuple[str, re.Pattern]:
    """`value` normalized, and the compiled pattern that finds it as a whole word or phrase (made once per value:
    reports score every run's 630 outputs against the whole vocabulary)."""
    v = normalize(value)
    return v, re.compile(rf"(?<![\w£]){re.escape(v)}(?![\w])")


def mentions(text: str, value: str) -> bool:
    """`value` occurs in normalized `text` as a whole word or phrase."""
    v, pattern = word_pattern(value)
    return v in text and pattern.search(text) is not None  # a match contains the value: test that first


@lru_cache(maxsize=None)
def paraphrases(value: str) -> tuple[re.Pattern, ...]:
    """The compiled patterns of `value` and its paraphrases (SYNONYMS), each as a whole word or phrase."""
    patterns = SYNONYMS.get(normalize(value), [re.escape(normalize(value))])
    return tuple(re.compile(rf"(?<![\w£]){p}(?![\w])") for p in patterns)


def expressed(text: str, value: str) -> bool:
    """`value` or one of its paraphrases (SYNONYMS) occurs in normalized `text`."""
    return any(p.search(text) for p in paraphrases(value))


def parse_table(table: str) -> dict[str, str]:
    """The linearized E2E table ("name : The Vaults | Type : pub | ...") as {slot: value}."""
    slots = {}
    for part in table.split(" | "):
        key, sep, value = part.partition(" : ")
        if not sep:
            raise ValueError(f"not an E2E table string: {table!r}")
        slots[key.strip()] = value.strip()
    return slots


@lru_cache(maxsize=4096)
def table_slots(table: str) -> tuple[dict[str, str], frozenset[str]]:
    """The table's slots (`parse_table`; read only) and its values normalized, once per table."""
    slots = parse_table(table)
    return slots, frozenset(normalize(v) for v in slots.values())


@lru_cache(maxsize=4)
def vocabulary(data_dir: str | None = None) -> tuple[str, ...]:
    """Every slot value of the E2E training tables (as the table strings write them, "£ 20 - 25") except
    family friendly's yes/no: the names, "near" places, venue types, foods, prices, ratings and areas."""
    values = {v for table, _ in load_e2e("train", data_dir) for k, v in parse_table(table).items()
              if k != "family friendly"}
    return tuple(sorted(values))


def slot_errors(output: str, table: str, data_dir: str | None = None) -> tuple[list[str], list[str]]:
    """(missing slots, added values) of one output for its linearized table."""
    slots, held = table_slots(table)
    text = normalize(output)
    missing = []
    for key, value in slots.items():
        if key == "family friendly":
            negated = re.search(NEGATED, text) is not None
            ok = negated if value == "no" else (re.search(FRIENDLY, text) is not None and not negated)
        else:
            ok = expressed(text, value)
        if not ok:
            missing.append(key)
    added = sorted(v for v in vocabulary(data_dir) if word_pattern(v)[0] not in held and mentions(text, v)
                   and not any(mentions(h, v) for h in held))  # a word inside a held value is no addition
    return missing, added


@lru_cache(maxsize=4)
def e2e_test(data_dir: str | None = None) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """(tables, their references) of the E2E test set, in the order of a run's predictions.txt."""
    groups = group_by_mr(load_e2e("test", data_dir))
    return tuple(t for t, _ in groups), tuple(tuple(refs) for _, refs in groups)


def corpus_slot_errors(outputs: Sequence[str], tables: Sequence[str], data_dir: str | None = None) -> dict:
    """Counts and rates over a test set: slots, missing, added, slot error rate, outputs with an error."""
    if len(outputs) != len(tables):
        raise ValueError(f"{len(outputs)} outputs for {len(tables)} tables")
    slots = missing = added = wrong = 0
    for out, table in zip(outputs, tables):
        m, a = slot_errors(out, table, data_dir)
        slots += len(parse_table(table))
        missing, added, wrong = missing + len(m), added + len(a), wrong + bool(m or a)
    return {"slots": slots, "slots_missing": missing, "slots_added": added,
            "slot_error_rate": 100.0 * (missing + added) / max(slots, 1),
            "outputs_with_slot_errors": 100.0 * wrong / max(len(outputs), 1)}
