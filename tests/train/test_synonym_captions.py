"""Synonym-substituted captions for training the joint space (text.synonym_rate), on real titles."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vestis.data.captions import substitute_synonyms, synonym_choices
from vestis.data.vocabulary import parse, shipped_entries, tokens
from vestis.errors import VestisError
from vestis.train.config import config_from_dict
from vestis.train.joint import JointPairs, Projection, synonym_variants

SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "fashion-product-text.yaml"
# the first titles of Fashion Product Images (styles.csv, productDisplayName)
TITLES = ["Turtle Check Men Navy Blue Shirt", "Peter England Men Party Blue Jeans", "Titan Women Silver Watch",
          "Manchester United Men Solid Black Track Pants", "Puma Men Grey T-shirt",
          "Inkfruit Mens Chain Reaction T-shirt", "Fabindia Men Striped Green Shirt", "Jealous 21 Women Purple Shirt",
          "Puma Men Pack of 3 Socks", "Skagen Men Black Watch"]


@pytest.fixture(scope="module")
def choices():
    return synonym_choices(shipped_entries())


def test_words_are_replaced_only_by_their_synonyms(choices):
    rng = random.Random(0)
    changed = 0
    for title in TITLES:
        allowed = set(tokens(title)) | {w for phrase in choices for other in choices[phrase]
                                        if phrase in " ".join(tokens(title)) for w in other.split()}
        for _ in range(20):
            variant = substitute_synonyms(title, choices, rng)
            assert set(variant.split()) <= allowed, (title, variant)
            brand = tokens(title)[0]  # brands are not in the vocabulary: kept
            assert variant == title or variant.split()[0] == brand
            changed += variant != title
    assert changed > 150  # nearly every title names a gender or a garment the vocabulary knows
    assert "tee" in {substitute_synonyms("Puma Men Grey T-shirt", choices, random.Random(s)).split()[-1]
                     for s in range(40)}


def test_one_way_entries_teach_the_left_word_only():
    choices = synonym_choices(parse(b"kicks => sneakers\ntshirts, tee\n", "x"))
    assert choices == {"sneakers": ("kicks",), "tshirts": ("tee",), "tee": ("tshirts",)}
    assert substitute_synonyms("Nike kicks", choices, random.Random(0)) == "Nike kicks"
    assert substitute_synonyms("Nike Sneakers", choices, random.Random(0)) == "nike kicks"


def test_rate_zero_is_todays_caption_and_draws_are_seeded(choices):
    for title in TITLES:
        assert substitute_synonyms(title, choices, random.Random(0), rate=0.0) is title
    assert synonym_variants(TITLES, 3) == synonym_variants(TITLES, 3)
    assert synonym_variants(TITLES, 3) != synonym_variants(TITLES, 4)


def test_the_model_sees_variants_only_in_training_and_at_the_rate():
    gen = torch.Generator().manual_seed(0)
    image_vecs, text_vecs, variant_vecs = (torch.randn(n, 8, generator=gen).numpy() for n in (4, 4, 4))
    pair_item = pair_text = np.arange(4, dtype=np.int64)

    def model(rate):
        torch.manual_seed(0)
        return JointPairs(Projection(8, 4), Projection(8, 4), image_vecs, text_vecs, pair_item, pair_text,
                          variant_vecs, rate, seed=0)

    pairs = torch.arange(4)
    plain, always = model(0.0).train(), model(1.0).train()
    assert torch.equal(plain(pairs), model(0.0).eval()(pairs))
    assert torch.equal(always.eval()(pairs), plain(pairs))
    assert not torch.equal(always.train()(pairs)[:, 4:], plain(pairs)[:, 4:])
    assert torch.allclose(always.train()(pairs)[:, 4:], always.text(torch.from_numpy(variant_vecs)))


def test_the_rate_is_checked():
    raw = yaml.safe_load(SHIPPED_CONFIG.read_text())
    assert config_from_dict(raw, "shipped").validate().text.synonym_rate == raw["text"].get("synonym_rate", 0.0)
    raw["text"]["synonym_rate"] = 1.5
    with pytest.raises(VestisError, match="synonym_rate"):
        config_from_dict(raw, "x").validate()
