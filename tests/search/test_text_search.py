"""Text search: weights, composition, fusion, and the searcher's modes, filters and examples."""

from __future__ import annotations

import numpy as np
import pytest

from tests.store.test_joint_index import TITLES, joint_model, new_items
from vestis.errors import VestisError
from vestis.search.text import (
    TextSearcher,
    compose,
    reciprocal_rank_fusion,
    weighted_fusion,
)
from vestis.search.query import parse_weighted
from vestis.store.collection import Collection
from vestis.store.vector_builds import build_joint_index


def unit(*values: float) -> np.ndarray:
    v = np.array(values, np.float32)
    return v / np.linalg.norm(v)


def test_weight_prefixes_as_rclip_writes_them():
    assert parse_weighted("2:15970") == (2.0, "15970")
    assert parse_weighted("0.5:a:b") == (0.5, "a:b")
    assert parse_weighted("15970") == (1.0, "15970")
    assert parse_weighted("shirt:blue") == (1.0, "shirt:blue")  # not a number: part of the id
    # weights that overflow to infinity, or are far beyond any ratio, are refused, not turned into NaN scores
    for bad in ("0:15970", "2:", " ", "1" + "0" * 400 + ":6842", "99999999999999999999999999999999999999:6842"):
        with pytest.raises(VestisError, match="bad example"):
            parse_weighted(bad)


def test_composition_mixes_text_and_weighted_examples():
    t, a, b, c = unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1), unit(0, 1, 1)
    np.testing.assert_allclose(compose(t), t)
    np.testing.assert_allclose(compose(None, [(1, a), (1, b)]), unit(0, 1, 1), atol=1e-6)
    heavier = compose(None, [(2, a), (1, b)])
    assert heavier @ a > heavier @ b
    away = compose(None, [(1, c)], [(1, b)])  # less like b
    np.testing.assert_allclose(away, unit(0, np.sqrt(0.5), np.sqrt(0.5) - 1), atol=1e-6)
    assert away @ b < 0 < away @ a
    mixed = compose(t, [(1, a)], text_weight=0.75)
    assert mixed @ t > mixed @ a > 0
    np.testing.assert_allclose(compose(t, [(1, a)], text_weight=1.0), t, atol=1e-6)
    with pytest.raises(VestisError, match="cancel out"):
        compose(None, [(1, a)], [(1, a)])
    with pytest.raises(VestisError, match="positive example"):
        compose(None, [], [(1, a)])
    with pytest.raises(VestisError, match="between 0 and 1"):
        compose(t, [(1, a)], text_weight=2)


def test_fusions_reward_items_both_rankings_agree_on():
    vids, scores = reciprocal_rank_fusion([np.array([1, 2, 3]), np.array([3, 4, 1])])
    assert vids.tolist()[:2] == [1, 3] and scores[0] == pytest.approx(1 / 61 + 1 / 63)
    assert set(vids.tolist()) == {1, 2, 3, 4}
    vids, scores = weighted_fusion((np.array([1, 2]), np.array([0.9, 0.8], np.float32)),
                                   (np.array([2, 5]), np.array([4.0, 2.0], np.float32)), keyword_weight=0.5)
    # 2: 0.5 * 0.8 + 0.5 * 4/4; 5 (no cosine: the lowest seen) 0.5 * 0.8 + 0.5 * 2/4; 1: 0.5 * 0.9
    assert vids.tolist() == [2, 5, 1]
    assert scores.tolist() == pytest.approx([0.9, 0.65, 0.45])


@pytest.fixture
def collection(tmp_path):
    coll = Collection.create(tmp_path / "c", encoder_name="test", encoder_version="test-encoder/1", dim=8,
                             colour_dim=0)
    items = new_items(TITLES)
    for item, kind in zip(items, ["Shirts", "Shoes", "Watches", "Dresses"]):
        item.metadata["articleType"] = kind
    coll.upsert(items)
    yield coll
    coll.close()


def test_keyword_search_works_without_a_joint_model_and_says_what_the_rest_needs(collection):
    searcher = TextSearcher.open(collection)
    assert searcher.default_mode == "keyword"
    hits = searcher.search(searcher.query("silver watch"), k=3).hits
    assert [h.id for h in hits] == ["c"]
    with pytest.raises(VestisError, match="joint text-image model"):
        searcher.query("silver watch", mode="vector")
    with pytest.raises(VestisError, match="mode must be"):
        searcher.query("silver watch", mode="fuzzy")
    with pytest.raises(VestisError, match="empty"):
        searcher.query("  ")


@pytest.mark.slow
def test_vector_and_hybrid_search_with_examples_filters_and_paging(collection, tmp_path):
    model = joint_model(tmp_path)
    build_joint_index(collection, model)
    searcher = TextSearcher.open(collection)
    assert searcher.default_mode == "hybrid"
    query = searcher.query("silver watch", mode="vector")
    vids, vectors, _ = collection.table().view
    expected = np.argsort(-(model.embed_image_features(vectors) @ model.embed_text("silver watch")[0]),
                          kind="stable")
    ids = [collection.items_by_vid([int(vids[i])])[0].id for i in expected]
    response = searcher.search(query, k=4)
    assert [h.id for h in response.hits] == ids
    assert "embed_text" in response.timings_ms and "search" in response.timings_ms
    assert [h.id for h in searcher.search(query, k=2, offset=1).hits] == ids[1:3]
    assert [h.id for h in searcher.search(query, k=4, filters={"articleType": ["Shoes", "Dresses"]}).hits] == [
        i for i in ids if i in ("b", "d")]
    hybrid = searcher.search(searcher.query("silver watch"), k=4).hits
    assert hybrid[0].id == "c"  # first in the keyword ranking and in the vector ranking's top 4
    examples = searcher.query(None, items=["2:a", "b"], negative_items=["c"], mode="vector")
    assert set(examples.exclude) == {collection.get(i).vid for i in "abc"}
    assert [h.id for h in searcher.search(examples, k=4).hits] == ["d"]  # the examples are left out
    with pytest.raises(VestisError, match="keyword search takes text only"):
        searcher.query("watch", items=["a"], mode="keyword")
    with pytest.raises(Exception, match="zzz"):
        searcher.query(None, items=["zzz"])
