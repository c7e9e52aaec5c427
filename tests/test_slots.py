"""E2E slot errors: what a text leaves out of its table, and what it adds."""
from __future__ import annotations

import pytest

from experiments.slots import corpus_slot_errors, parse_table, slot_errors, vocabulary

TABLE = "name : The Vaults | Type : pub | price : more than £ 30 | family friendly : no"


def test_vocabulary_is_read_from_the_training_tables():
    v = vocabulary()
    assert {"The Vaults", "Raja Indian Cuisine", "city centre", "£ 20 - 25", "5 out of 5", "Fast food"} <= set(v)
    assert "yes" not in v and "no" not in v


@pytest.mark.parametrize("text, missing, added", [
    ("The Vaults is a pub with prices more than £30. It is not family friendly.", [], []),
    ("The Vaults is a pub in the city centre, not kid friendly.", ["price"], ["city centre"]),
    ("The Vaults pub costs more than £ 30 and is family friendly.", ["family friendly"], []),
    ("A pub for adults only, more than £30, near Burger King.", ["name"], ["Burger King"]),
    ("The Vaults is a restaurant below the bridge, prices around £30, no children.", ["Type", "price"], ["restaurant"]),
    ("The Vaults is an expensive pub that isn't child friendly.", [], []),
])
def test_slot_errors_of_single_texts(text, missing, added):
    assert slot_errors(text, TABLE) == (missing, added)


def test_paraphrases_count_as_mentions():
    table = "name : The Punter | price : moderate | customer rating : 5 out of 5 | area : city centre"
    assert slot_errors("The Punter is moderately priced, rated five stars, in the centre of the city.", table) == ([], [])
    assert slot_errors("The Punter is rated five stars in the city centre.", table) == (["price"], [])


def test_a_word_inside_a_held_value_is_no_addition():
    table = "name : The Rice Boat | food : Indian | near : Raja Indian Cuisine | customer rating : high"
    assert slot_errors("The Rice Boat serves Indian food near Raja Indian Cuisine; rating high.", table) == ([], [])


def test_corpus_rates():
    result = corpus_slot_errors(["The Vaults is a pub. Not family friendly, more than £30.", "The Vaults, a pub."],
                                [TABLE, TABLE])
    assert (result["slots"], result["slots_missing"], result["slots_added"]) == (8, 2, 0)
    assert result["slot_error_rate"] == pytest.approx(25.0) and result["outputs_with_slot_errors"] == 50.0
    with pytest.raises(ValueError, match="2 outputs for 1 tables"):
        corpus_slot_errors(["a", "b"], [TABLE])
    with pytest.raises(ValueError, match="not an E2E table"):
        parse_table("just text")
