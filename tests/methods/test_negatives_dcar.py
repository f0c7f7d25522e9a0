"""Negative-caption construction for DCAR: class swap, template fallback, released negatives, seeding."""

from __future__ import annotations

import re

import pytest

from xdomain_bench.errors import ConfigError
from xdomain_bench.methods.negatives import NegativeBuilder, find_class_span, match_category

CLASSES = ["Abyssinian", "american_bulldog", "Bengal", "Birman", "Bombay", "boxer", "pug"]


def test_class_swap_replaces_the_name_with_other_training_classes():
    b = NegativeBuilder(CLASSES, mode="swapped", seed=0)
    caption = "An American Bulldog lies on a sofa."
    (negs,) = b.for_captions([caption], [1])
    assert len(negs) == 4
    others = [c.replace("_", " ") for i, c in enumerate(CLASSES) if i != 1]
    cats = [n.category for n in negs]
    assert len(set(cats)) == 4 and 1 not in cats
    for n in negs:
        assert n.kind == "class_swap"
        assert n.text == f"An {CLASSES[n.category].replace('_', ' ')} lies on a sofa."
        assert n.text.split(" lies")[0][3:] in others


def test_template_fallback_when_the_name_does_not_occur():
    b = NegativeBuilder(CLASSES, mode="swapped", seed=0)
    (negs,) = b.for_captions(["A fluffy cat with blue eyes."], [0])
    assert [n.kind for n in negs] == ["template"] * 4
    assert {n.text for n in negs} == {f"a photo of a {CLASSES[n.category].replace('_', ' ')}." for n in negs}
    assert all(n.category != 0 for n in negs)


def test_fewer_classes_than_negatives():
    b = NegativeBuilder(["cat", "dog", "cow"], mode="swapped", seed=0)
    (negs,) = b.for_captions(["a cat."], [0])
    assert sorted(n.text for n in negs) == ["a cow.", "a dog."]


def test_no_same_category_negative_is_invented_from_attribute_words():
    """DCAR's attribute-swapped negatives were not released: a caption full of colour, pattern and shape
    words gets class swaps only, each of another category (so the 1 + alpha weight never applies)."""
    b = NegativeBuilder(["blob", "thing", "cat"], mode="swapped", num_negatives=2, seed=3)
    for _ in range(10):
        (negs,) = b.for_captions(["a red striped star with wings, a blob"], [0])
        assert [n.kind for n in negs] == ["class_swap", "class_swap"]
        assert all(n.category != 0 for n in negs)


def test_released_negatives_are_used_when_present_else_swapped():
    b = NegativeBuilder(CLASSES, mode="released", seed=0)
    released = [["A Bengal sits on a chair.", "A Pug sits on a chair.", "A strange animal sits on a chair."], []]
    negs = b.for_captions(["A Birman sits on a chair.", "A boxer runs."], [3, 5], released)
    assert [n.kind for n in negs[0]] == ["released"] * 3
    assert [n.category for n in negs[0]] == [2, 6, None]  # by name; unknown -> classified zero-shot later
    assert [n.kind for n in negs[1]] == ["class_swap"] * 4  # empty released list: generated
    swapped = NegativeBuilder(CLASSES, mode="swapped", seed=0)
    assert all(n.kind == "class_swap" for n in swapped.for_captions(["A Birman."], [3], released[:1])[0])
    none = NegativeBuilder(CLASSES, mode="none", seed=0)
    assert none.for_captions(["A Birman."], [3], released[:1]) == [[]]


def test_templated_captions_for_datasets_without_captions():
    b = NegativeBuilder(CLASSES, seed=0)
    caps, negs = b.templated([0, 1])
    assert caps == ["a photo of a Abyssinian.", "a photo of a american bulldog."]
    for label, row in zip([0, 1], negs):
        assert len(row) == 4 and all(n.category != label and n.kind == "template" for n in row)
        assert all(n.text == f"a photo of a {CLASSES[n.category].replace('_', ' ')}." for n in row)


def test_negatives_are_reproducible_by_seed():
    def draw(seed: int) -> list[str]:
        b = NegativeBuilder(CLASSES, mode="swapped", seed=seed)
        rows = b.for_captions(["A red Bengal on a dotted rug."] * 6, [2] * 6)
        return [n.text for row in rows for n in row]

    assert draw(0) == draw(0)
    assert draw(0) != draw(1)


def test_name_matching_helpers_and_mode_check():
    assert find_class_span("two American-Bulldogs", "american_bulldog") is None  # whole words only
    assert find_class_span("an american-bulldog", "american_bulldog") == (3, 19)
    assert match_category("a great boxer pug", ["boxer", "great boxer", "pug"]) == 1  # longest wins
    assert re.fullmatch(r"a photo of a \w+\.", NegativeBuilder(["x", "y"]).templated([0])[1][0][0].text)
    with pytest.raises(ConfigError):
        NegativeBuilder(CLASSES, mode="bogus")
