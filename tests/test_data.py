"""E2E / WebNLG loading, the training format, batching, and where data comes from (offline and online)."""
from __future__ import annotations

import csv
import urllib.error
import xml.etree.ElementTree as ET

import pytest

import minigpt.datadir
from experiments import data
from experiments.data import (EOT, Example, bucket_batches, encode_pair, encode_source, group_by_mr, linearize_mr,
                              linearize_triples, load_e2e, load_webnlg)
from minigpt.datadir import find_data

E2E = find_data("e2e/trainset.csv")
WEBNLG = find_data("webnlg_2017/test/testdata_with_lex.xml")
needs_e2e = pytest.mark.skipif(E2E is None, reason="E2E data not found (../shared/data/e2e)")
needs_webnlg = pytest.mark.skipif(WEBNLG is None, reason="WebNLG data not found (../shared/data/webnlg_2017)")
PAPER_TABLE = ("name : The Vaults | Type : pub | price : more than £ 30 | customer rating : 5 out of 5 | "
               "near : Café Adriatic")


@needs_e2e
@pytest.mark.parametrize("split, n_refs, n_mrs", [("train", 42061, 4862), ("dev", 4672, 547), ("test", 4693, 630)])
def test_e2e_counts_are_the_official_ones(split, n_refs, n_mrs):
    examples = load_e2e(split)
    assert len(examples) == n_refs
    assert len(group_by_mr(examples)) == n_mrs


@needs_e2e
def test_e2e_paper_linearization():
    # the first row of trainset.csv is the paper's example MR (the raw key is "customer rating")
    first = load_e2e("train")[0]
    text = "The Vaults pub near Café Adriatic has a 5 star rating. Prices start at £30."  # two spaces in the file
    assert first == Example(PAPER_TABLE, text)
    assert linearize_mr("name[The Vaults], eatType[pub], priceRange[more than £30], customer rating[5 out of 5], "
                        "near[Café Adriatic]") == PAPER_TABLE
    assert linearize_mr("name[Zizzi], priceRange[£20-25], familyFriendly[yes]") == \
        "name : Zizzi | price : £ 20 - 25 | family friendly : yes"


@needs_e2e
@pytest.mark.parametrize("split", ["dev", "test"])
def test_group_by_mr_keeps_first_appearance_order(split):
    with open(E2E.parent / data.E2E_FILES[split], encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    first_seen = list(dict.fromkeys(linearize_mr(r["mr"]) for r in rows))
    groups = group_by_mr(load_e2e(split))
    assert [t for t, _ in groups] == first_seen
    # identical MRs are contiguous, so this is also e2e-metrics' grouping of consecutive rows
    consecutive = [r["mr"] for i, r in enumerate(rows) if i == 0 or r["mr"] != rows[i - 1]["mr"]]
    assert len(consecutive) == len(groups)
    assert sum(len(refs) for _, refs in groups) == len(rows)


def test_group_by_mr_order_on_a_toy_list():
    ex = [Example("b", "1"), Example("a", "2"), Example("b", "3")]
    assert group_by_mr(ex) == [("b", ["1", "3"]), ("a", ["2"])]


@needs_webnlg
@pytest.mark.parametrize("split, n_entries, n_refs", [("train", 6940, 18102), ("dev", 872, 2268), ("test", 1862, 4928)])
def test_webnlg_counts_are_the_official_ones(split, n_entries, n_refs):
    entries = load_webnlg(split)
    assert len(entries) == n_entries
    assert sum(len(e.references) for e in entries) == n_refs


@needs_webnlg
def test_webnlg_seen_means_a_training_category():
    assert {e.category for e in load_webnlg("train")} == set(data.SEEN_CATEGORIES)
    test = load_webnlg("test")
    unseen_file = ET.parse(WEBNLG.parent / "testdata_unseen_with_lex.xml").getroot()
    assert sum(not e.seen for e in test) == len(list(unseen_file.iter("entry"))) == 891
    assert {e.category for e in test if not e.seen} == {"Athlete", "Artist", "CelestialBody", "MeanOfTransportation",
                                                        "Politician"}
    assert all(e.seen for e in load_webnlg("dev"))


@needs_webnlg
def test_webnlg_first_test_entry():
    first = load_webnlg("test")[0]
    assert first.table == "Abilene Regional Airport : cityServed : Abilene, Texas"
    assert first.references == ("Abilene, Texas is served by the Abilene regional airport.",
                                "Abilene Regional Airport serves the city of Abilene in Texas.")
    assert (first.category, first.seen) == ("Airport", True)


def test_linearize_triples():
    triples = ["Alan_Bean | birthPlace | Wheeler,_Texas", 'Alan_Bean | status | "Retired"']
    assert linearize_triples(triples) == 'Alan Bean : birthPlace : Wheeler, Texas | Alan Bean : status : "Retired"'


@pytest.fixture(scope="module")
def enc():
    from minigpt import load_tokenizer
    try:
        return load_tokenizer()
    except FileNotFoundError as e:
        pytest.skip(str(e))


def test_encode_pair_masks_the_table_and_agrees_with_the_source(enc):
    table, text = PAPER_TABLE, "The Vaults pub near Café Adriatic has a 5 star rating."
    ids, labels = encode_pair(enc, table, text)
    source = encode_source(enc, table)
    assert len(ids) == len(labels)
    assert ids[:len(source)] == source and source[-1] == EOT
    assert labels[:len(source)] == [-100] * len(source)
    assert labels[len(source):] == ids[len(source):] and ids[-1] == EOT
    assert ids.count(EOT) == 2 and -100 not in labels[len(source):]
    assert enc.decode(ids) == f" {table}<|endoftext|> {text}<|endoftext|>"
    # the target is the text as GPT-2 reads it after a space, so decoding it gives back the text
    assert enc.decode(labels[len(source):-1]).strip() == text


def test_encode_pair_treats_special_token_text_as_text(enc):
    ids, _ = encode_pair(enc, "a : <|endoftext|>", "b")
    assert ids.count(EOT) == 2


def test_bucket_batches_cover_every_index_once_and_are_deterministic():
    lengths = [(i * 37) % 101 for i in range(2345)]
    batches = bucket_batches(lengths, 8, seed=3)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(1 <= len(b) <= 8 for b in batches) and sum(len(b) < 8 for b in batches) <= 3
    assert bucket_batches(lengths, 8, seed=3) == batches
    assert bucket_batches(lengths, 8, seed=4) != batches
    assert all([lengths[i] for i in b] == sorted(lengths[i] for i in b) for b in batches)
    # similar lengths share a batch: far less padding than batches of consecutive indices
    padded = lambda bs: sum(len(b) * max(lengths[i] for i in b) for b in bs)
    assert padded(batches) < 0.7 * padded([list(range(i, min(i + 8, 2345))) for i in range(0, 2345, 8)])


def test_bucket_batches_without_shuffle_is_ordered():
    lengths = [5, 1, 4, 2, 3]
    assert bucket_batches(lengths, 2, seed=0, shuffle=False) == [[1, 3], [4, 2], [0]]


@pytest.fixture
def no_data_anywhere(tmp_path, monkeypatch):
    """An empty $DATA_DIR, a working directory and a project root with no data/ or ../shared/data."""
    for d in ("empty", "cwd", "proj"):
        (tmp_path / d).mkdir()
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setattr(minigpt.datadir, "PROJECT_ROOT", tmp_path / "proj")
    monkeypatch.setattr(data, "PROJECT_ROOT", tmp_path / "proj")
    assert not any((d / "e2e").exists() for d in minigpt.datadir.data_dirs())
    return tmp_path


def test_offline_without_data_is_a_clear_error(no_data_anywhere, monkeypatch):
    def offline(url):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(data, "_fetch", offline)
    with pytest.raises(FileNotFoundError) as err:
        load_e2e("dev")
    msg = str(err.value)
    assert "trainset.csv" in msg and "testset_w_refs.csv" in msg and "DATA_DIR" in msg and "e2e/" in msg
    assert not (no_data_anywhere / "proj" / "data" / "e2e").exists()


def test_download_rejects_wrong_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_fetch", lambda url: b"not the E2E data\n")
    with pytest.raises(ValueError, match="checksum"):
        data.download("e2e", tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing saved, no temporary folder left


@needs_e2e
def test_download_saves_checked_files_and_loading_uses_them(no_data_anywhere, monkeypatch):
    urls = []

    def fetch(url):  # serve the real files, as the published URLs would
        urls.append(url)
        return (E2E.parent / url.rsplit("/", 1)[1]).read_bytes()
    monkeypatch.setattr(data, "_fetch", fetch)
    assert len(load_e2e("dev")) == 4672  # downloads into <project>/data/e2e, then loads
    saved = no_data_anywhere / "proj" / "data"
    assert sorted(p.name for p in saved.iterdir()) == ["e2e"]
    for name in data.E2E_FILES.values():
        assert (saved / "e2e" / name).read_bytes() == (E2E.parent / name).read_bytes()
    assert urls == [data.REMOTES["e2e"].base_url + f for f in data.REMOTES["e2e"].files]
    urls.clear()
    load_e2e("test")
    assert urls == []  # found locally the second time


@needs_webnlg
def test_webnlg_checksum_constant_matches_the_offline_copy():
    remote = data.REMOTES["webnlg_2017"]
    assert data.listing_sha256(WEBNLG.parent.parent, remote.files) == remote.sha256
    assert len(remote.files) == 105 and len(set(remote.files)) == 105


@needs_e2e
def test_e2e_checksum_constant_matches_the_offline_copy():
    remote = data.REMOTES["e2e"]
    assert data.listing_sha256(E2E.parent, remote.files) == remote.sha256


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="split"):
        load_e2e("validation")
