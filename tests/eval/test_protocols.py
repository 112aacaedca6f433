"""Protocols on small hand-made embeddings: ranking, leave-one-out, query/gallery, attribute MAP,
kNN accuracy and the train/val/test split."""

from collections import Counter

import numpy as np
import pytest

from vestis.errors import VestisError
from vestis.eval.protocols import (
    attribute_map,
    group_labels,
    knn_accuracy,
    leave_one_out,
    leave_one_out_ranking,
    per_query_ap,
    load_split,
    query_gallery,
    rank,
    save_split,
    split_by_id,
)


def unit(*degrees: float) -> np.ndarray:
    """2-D unit vectors at the given angles: similarity falls with the angle between them."""
    rad = np.radians(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


def random_unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_rank_matches_brute_force_across_batches():
    q, g = random_unit(37, 8, seed=1), random_unit(50, 8, seed=2)
    scores, idx = rank(q, g, 5)
    full = q @ g.T
    expected = np.argsort(-full, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, axis=1), rtol=1e-6)


def test_rank_breaks_ties_by_lower_gallery_index_even_across_the_cut():
    g = np.repeat(unit(0), 5, axis=0)
    g = np.vstack([unit(90), g])  # index 0 is orthogonal, 1..5 identical to the query
    _, idx = rank(unit(0), g, 3)
    np.testing.assert_array_equal(idx, [[1, 2, 3]])


def test_rank_excludes_self_and_pads_when_k_exceeds_the_gallery():
    v = unit(0, 10, 20)
    scores, idx = rank(v, v, 4, exclude_self=np.array([0, 1, -1]))
    np.testing.assert_array_equal(idx, [[1, 2, -1, -1], [0, 2, -1, -1], [2, 1, 0, -1]])
    assert np.isneginf(scores[0, 2:]).all() and np.isfinite(scores[2, :3]).all()


def test_rank_rejects_bad_input():
    with pytest.raises(VestisError, match="dimension"):
        rank(unit(0), np.ones((3, 5), np.float32), 1)
    with pytest.raises(VestisError, match="NaN"):
        rank(np.array([[np.nan, 0.0]]), unit(0), 1)


def test_leave_one_out_never_counts_the_query_itself():
    # each item's nearest OTHER item has a different label; counting self would make P@1 = 1
    labels = np.array(["A", "A", "B", "B"])
    v = unit(0, 90, 6, 84)
    out = leave_one_out(v, labels, ks=(1, 3))
    assert out["P@1"] == 0.0 and out["R@1"] == 0.0
    # rankings: q0 [2, 3, 1], q1 [3, 2, 0], q2 [0, 3, 1], q3 [1, 2, 0] -> AP 1/3, 1/3, 1/2, 1/2
    assert out["mAP@3"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 2 + 1 / 2) / 4)
    assert out["P@3"] == pytest.approx(1 / 3) and out["R@3"] == 1.0
    assert out["n_queries"] == 4 and out["n_queries_without_relevant"] == 0


def test_leave_one_out_scores_an_external_ranking_that_contains_the_query():
    v, labels = random_unit(60, 6, seed=3), np.arange(60) % 7
    exact = leave_one_out(v, labels, ks=(1, 5))
    with_self = np.argsort(-(v @ v.T), axis=1, kind="stable")[:, :6]  # an index that returns the query first
    assert leave_one_out(v, labels, ks=(1, 5), ranking=with_self) == exact
    with pytest.raises(VestisError, match="search with K = 6"):
        leave_one_out(v, labels, ks=(1, 5), ranking=with_self[:, :5])


def test_per_query_ap_gives_the_scores_behind_the_mean():
    # the hand example above: AP@3 1/3, 1/3, 1/2, 1/2; an unlabelled item and a singleton are no queries
    labels = np.array(["A", "A", "B", "B"])
    v = unit(0, 90, 6, 84)
    everyone = np.arange(4)
    assert per_query_ap(leave_one_out_ranking(v, labels, 3), labels, labels, 3, exclude_self=everyone) \
        == pytest.approx([1 / 3, 1 / 3, 1 / 2, 1 / 2])
    labels = np.array(["A", None, "A", "B"], dtype=object)
    v = unit(0, 1, 10, 80)
    ranking = leave_one_out_ranking(v, labels, 2)
    assert (ranking[1] == -1).all()
    assert per_query_ap(ranking, labels, labels, 2, exclude_self=everyone) == pytest.approx([0.5, 0.5])
    v, labels = random_unit(80, 6, seed=5), np.arange(80) % 9
    ap = per_query_ap(leave_one_out_ranking(v, labels, 10), labels, labels, 10, exclude_self=np.arange(80))
    assert len(ap) == 80 and ap.mean() == pytest.approx(leave_one_out(v, labels, ks=(10,))["mAP@10"])
    # separate queries and gallery
    q, g = random_unit(30, 6, seed=6), random_unit(50, 6, seed=7)
    ql, gl = np.arange(30) % 4, np.arange(50) % 5  # label 4 is in the gallery only
    ranking = rank(q, g, 10)[1]
    ap = per_query_ap(ranking, ql, gl, 10)
    assert len(ap) == 30 and ap.mean() == pytest.approx(query_gallery(q, ql, g, gl, ks=(10,))["mAP@10"])


def test_leave_one_out_unlabelled_items_are_gallery_only_and_singletons_are_counted():
    labels = np.array(["A", None, "A", "B"], dtype=object)
    v = unit(0, 1, 10, 80)  # the unlabelled item 1 is the nearest to item 0
    out = leave_one_out(v, labels, ks=(1, 2))
    # q0: [1 (not relevant), 2] -> P@1 0; q2: [1, 0] -> P@1 0; B is a singleton
    assert out["P@1"] == 0.0 and out["R@2"] == 1.0 and out["mAP@2"] == pytest.approx(0.5)
    assert out["n_queries"] == 2 and out["n_queries_without_relevant"] == 1
    assert out["n_queries_without_label"] == 1
    # counting the singleton B as a failed query (the ArcFace project's convention)
    counted = leave_one_out(v, labels, ks=(1, 2), include_queries_without_relevant=True)
    assert counted["R@2"] == pytest.approx(2 / 3) and counted["n_queries"] == 3


def test_query_gallery_hand_computed():
    gallery, g_labels = unit(0, 30, 60, 90), np.array([1, 2, 1, 2])
    queries, q_labels = unit(50, 85, 20), np.array([1, 2, 3])
    out = query_gallery(queries, q_labels, gallery, g_labels, ks=(1, 2))
    # q0 (50 deg): [2 (rel), 1]; q1 (85 deg): [3 (rel), 2]; R = 2 for both, so AP@2 = 1 / min(2, 2);
    # label 3 has no match in the gallery
    assert out["R@1"] == 1.0 and out["P@2"] == 0.5 and out["mAP@2"] == 0.5
    assert out["n_queries"] == 2 and out["n_queries_without_relevant"] == 1


def test_group_labels_joins_columns_and_marks_missing():
    meta = [{"articleType": "Shirts", "baseColour": "Navy Blue"}, {"articleType": "Shirts", "baseColour": ""},
            {"articleType": "Jeans"}, {"articleType": "Jeans", "baseColour": float("nan")},
            {"articleType": 3, "baseColour": "Red"}]
    keys = group_labels(meta, ["articleType", "baseColour"])
    assert keys.tolist() == ["Shirts|Navy Blue", None, None, None, "3|Red"]
    with pytest.raises(VestisError):
        group_labels(meta, [])


def test_attribute_map_hand_computed_with_per_attribute_spaces():
    meta = [{"colour": "red", "sleeve": "long"}, {"colour": "blue", "sleeve": None},
            {"colour": "red", "sleeve": "short"}, {"colour": "blue", "sleeve": "none"},
            {"colour": "", "sleeve": "short"}]
    vectors = {"colour": unit(0, 10, 25, 90, 5), "sleeve": unit(0, 45, 20, 90, 30)}
    out = attribute_map(vectors, meta, ["colour", "sleeve"])
    colour, sleeve = out["attributes"]["colour"], out["attributes"]["sleeve"]
    # colour (item 4 unlabelled, not a candidate): q0 [1, 2, 3] AP 1/2; q1 [0, 2, 3] 1/3;
    # q2 [1, 0, 3] 1/2; q3 [2, 1, 0] 1/2
    assert colour["mAP"] == pytest.approx(11 / 24)
    assert colour["values"]["red"] == {"mAP": pytest.approx(0.5), "n_queries": 2}
    assert colour["values"]["blue"]["mAP"] == pytest.approx(5 / 12)
    assert colour["n_candidates"] == 4
    # sleeve: "long" and "none" have no other item -> no AP; the two "short" items find each other first
    assert sleeve["mAP"] == 1.0 and sleeve["n_queries"] == 2 and sleeve["n_queries_without_relevant"] == 2
    # overall: query-weighted (4 colour + 2 sleeve queries), not the plain mean of 11/24 and 1
    assert out["attribute_mAP"] == pytest.approx((11 / 24 * 4 + 1.0 * 2) / 6)
    assert out["attribute_n_queries"] == 6 and out["attribute_n_queries_without_relevant"] == 2


def test_attribute_map_with_one_global_space_and_errors():
    meta = [{"a": "x"}, {"a": "x"}, {"a": "y"}]
    out = attribute_map(unit(0, 10, 90), meta, ["a"])
    assert out["attributes"]["a"]["values"]["x"]["mAP"] == 1.0 and out["attribute_n_queries"] == 2
    with pytest.raises(VestisError, match="no embedding"):
        attribute_map({"b": unit(0, 1, 2)}, meta, ["a"])
    with pytest.raises(VestisError, match="no item has a label"):
        attribute_map(unit(0, 10, 90), meta, ["missing"])


def test_knn_accuracy():
    gallery = unit(0, 5, 10, 80, 85, 90)
    g_labels = np.array(["top", "top", "shoe", "shoe", "shoe", "top"])
    queries, q_labels = unit(2, 88), np.array(["top", "top"])
    out = knn_accuracy(queries, q_labels, gallery, g_labels, k=3)
    # q0 neighbours: top, top, shoe -> top (right); q1: top, shoe, shoe -> shoe (wrong)
    assert out["kNN_accuracy"] == 0.5 and out["per_class_accuracy"] == {"top": 0.5}
    assert out["confusion_matrix"] == {"labels": ["shoe", "top"], "matrix": [[0, 0], [1, 1]]}
    with pytest.raises(VestisError):
        knn_accuracy(queries, q_labels, gallery, g_labels, k=7)


def make_groups():
    sizes = [1, 1, 2, 2, 3, 5, 9, 10, 17, 40, 100]
    groups = [f"g{i}" for i, n in enumerate(sizes) for _ in range(n)]
    ids = [f"id{i:04d}" for i in range(len(groups))]
    return ids, groups, Counter(groups)


def test_split_is_deterministic_and_independent_of_input_order():
    ids, groups, _ = make_groups()
    first = split_by_id(ids, groups, seed=3)
    assert split_by_id(ids, groups, seed=3) == first
    assert split_by_id(ids[::-1], groups[::-1], seed=3) == first
    assert split_by_id(ids, groups, seed=4) != first


def test_split_is_stratified_and_covers_every_id_once():
    ids, groups, sizes = make_groups()
    split = split_by_id(ids, groups)
    assert set(split) == set(ids) and set(split.values()) == {"train", "val", "test"}
    per_group = Counter((g, split[i]) for i, g in zip(ids, groups))
    for group, n in sizes.items():
        if n == 1:
            assert per_group[group, "train"] == 1  # singletons go to train
            continue
        for name, frac in zip(("train", "val", "test"), (0.8, 0.1, 0.1)):
            assert np.floor(n * frac) <= per_group[group, name] <= np.ceil(n * frac), (group, name)
    n_split = sum(sizes.values()) - 2  # the two singletons always go to train
    totals = Counter(split.values())
    assert abs(totals["test"] - 0.1 * n_split) <= 1 and abs(totals["val"] - 0.1 * n_split) <= 1


def test_split_round_trips_through_csv(tmp_path):
    ids, groups, _ = make_groups()
    split = split_by_id(ids, groups)
    save_split(tmp_path / "split.csv", split)
    assert load_split(tmp_path / "split.csv") == split
    (tmp_path / "bad.csv").write_text("id,split\n1,holdout\n")
    with pytest.raises(VestisError, match="holdout"):
        load_split(tmp_path / "bad.csv")
    with pytest.raises(VestisError, match="unique"):
        split_by_id(["a", "a"], ["g", "g"])
