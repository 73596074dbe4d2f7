"""Unit tests for pixverse_tracker.rules.records: what an upstream JSON value becomes before it is stored."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pixverse_tracker.rules.records import MAX_DEPTH, PRUNED, REDACTED, clean, clean_text

SECRET = "tok-SECRET+7f3a"

# JSON values whose strings and keys may hold the secret anywhere
texts = st.lists(st.sampled_from(["", "a", " ", SECRET, "\x00", "é", "tok"]), max_size=4).map(
    "".join
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=30,
)


@given(json_values)
def test_no_cleaned_value_holds_the_secret_and_every_one_is_storable_json(value: Any) -> None:
    cleaned = clean(value, (SECRET,))
    text = json.dumps(cleaned, ensure_ascii=False, allow_nan=False)
    assert SECRET not in text and "\\u0000" not in text
    assert clean(cleaned, (SECRET,)) == cleaned  # cleaning twice changes nothing more


def test_a_value_nested_far_deeper_than_the_stack_allows_is_cut_at_the_bound() -> None:
    value: Any = "bottom"
    for _ in range(100_000):
        value = {"a": value}
    cleaned = clean(value)
    for _ in range(MAX_DEPTH):
        cleaned = cleaned["a"]
    assert cleaned == PRUNED


def test_keys_keep_their_order_and_two_keys_that_clean_to_one_keep_the_later_value() -> None:
    assert list(clean({"b": 1, "a": 2, "c": 3})) == ["b", "a", "c"]
    assert clean({"k\x00": 1, "k": 2}) == {"k": 2}


def test_the_secret_becomes_redacted_and_a_replacement_that_recreates_it_leaves_nothing() -> None:
    assert clean_text(f"Bearer {SECRET}!", (SECRET,)) == f"Bearer {REDACTED}!"
    # a secret that the replacement text itself contains can never be replaced away
    assert clean_text("[redacted]", ("acted]",)) == ""
