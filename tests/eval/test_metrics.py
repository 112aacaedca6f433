"""Metrics against hand-computed rankings, and full-list AP against scikit-learn."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, top_k_accuracy_score

from vestis.errors import VestisError
from vestis.eval.metrics import (
    accuracy_top_k,
    ann_recall_at_k,
    average_precision,
    average_precision_at_k,
    change_interval,
    confusion_matrix,
    knn_classify,
    map_at_k,
    ndcg_at_k,
    per_class_accuracy,
    precision_at_k,
    recall_at_k,
    retrieval_metrics,
)

LOG3 = math.log2(3)


def test_average_precision_at_k_hand_computed():
    rel = np.array([[1, 0, 1, 0, 0]])
    # P@1 = 1, P@3 = 2/3 -> (1 + 2/3) / min(5, 3)
    assert average_precision_at_k(rel, [3], 5)[0] == pytest.approx(5 / 9)
    # only rank 1 within K = 2, normalised by min(2, 3) = 2
    assert average_precision_at_k(rel, [3], 2)[0] == pytest.approx(0.5)
    # R larger than K: a perfect top K still scores 1
    assert average_precision_at_k(np.array([[1, 1, 0]]), [10], 2)[0] == pytest.approx(1.0)


def test_query_without_relevant_items_is_nan_and_left_out_of_the_mean():
    rel = np.array([[1, 0], [0, 0], [0, 1]])
    n_relevant = np.array([1, 0, 1])
    ap = average_precision_at_k(rel, n_relevant, 2)
    assert ap[0] == 1.0 and math.isnan(ap[1]) and ap[2] == 0.5
    assert map_at_k(rel, n_relevant, 2) == pytest.approx(0.75)
    assert math.isnan(ndcg_at_k(rel, n_relevant, 2)[1]) and math.isnan(recall_at_k(rel, n_relevant, 2)[1])
    assert math.isnan(map_at_k(rel[1:2], [0], 2))


def test_k_larger_than_the_ranking_counts_missing_ranks_as_misses():
    rel = np.array([[0, 1]])  # a two-item gallery, one relevant item at rank 2
    assert precision_at_k(rel, 5)[0] == pytest.approx(1 / 5)  # still divided by K
    assert average_precision_at_k(rel, [1], 5)[0] == pytest.approx(0.5)
    assert ndcg_at_k(rel, [1], 5)[0] == pytest.approx(1 / LOG3)
    assert recall_at_k(rel, [1], 5)[0] == 1.0


def test_precision_and_recall_hand_computed():
    rel = np.array([[1, 0, 1, 1], [0, 0, 1, 0]])
    np.testing.assert_allclose(precision_at_k(rel, 2), [0.5, 0.0])
    np.testing.assert_allclose(precision_at_k(rel, 4), [0.75, 0.25])
    np.testing.assert_array_equal(recall_at_k(rel, [3, 1], 2), [1.0, 0.0])
    np.testing.assert_array_equal(recall_at_k(rel, [3, 1], 3), [1.0, 1.0])


def test_ndcg_hand_computed():
    # DCG = 1/log2(3) + 1/log2(4); IDCG (R = 2) = 1 + 1/log2(3)
    expected = (1 / LOG3 + 0.5) / (1 + 1 / LOG3)
    assert ndcg_at_k(np.array([[0, 1, 1]]), [2], 3)[0] == pytest.approx(expected)
    assert ndcg_at_k(np.array([[1, 1, 0]]), [5], 2)[0] == pytest.approx(1.0)  # ideal uses min(K, R)
    assert ndcg_at_k(np.array([[0, 0, 1]]), [1], 2)[0] == 0.0


def test_full_ranking_average_precision_hand_computed():
    rel = np.array([[0, 1, 0, 1, 1], [1, 0, 0, 0, 0]])
    # (1/2 + 2/4 + 3/5) / 3, and a first-rank hit
    np.testing.assert_allclose(average_precision(rel), [(0.5 + 0.5 + 0.6) / 3, 1.0])
    # a truncated ranking normalised by the gallery's R (two relevant items never retrieved)
    assert average_precision(rel[:1], [5])[0] == pytest.approx((0.5 + 0.5 + 0.6) / 5)


def test_more_hits_than_n_relevant_is_rejected():
    # the symptom of counting the query as its own result
    with pytest.raises(VestisError, match="more relevant results"):
        average_precision_at_k(np.array([[1, 1]]), [1], 2)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=2, max_size=40).filter(any), st.integers(0, 2**32 - 1))
def test_full_list_ap_equals_sklearn(labels, seed):
    y = np.array(labels)
    scores = np.random.default_rng(seed).permutation(len(y)).astype(float)  # distinct scores, no ties
    rel = y[np.argsort(-scores, kind="stable")][None, :]
    assert average_precision(rel)[0] == pytest.approx(average_precision_score(y, scores))


def test_retrieval_metrics_excludes_queries_without_relevant_from_every_mean():
    rel = np.array([[1, 0], [0, 0]])
    out = retrieval_metrics(rel, np.array([1, 0]), ks=[1, 2])
    assert out["P@1"] == 1.0 and out["P@2"] == 0.5  # the R = 0 query would halve them
    assert out["mAP@2"] == 1.0 and out["R@1"] == 1.0 and out["NDCG@2"] == 1.0
    assert out["n_queries"] == 1 and out["n_queries_without_relevant"] == 1
    counted = retrieval_metrics(rel, np.array([1, 0]), ks=[1, 2], include_queries_without_relevant=True)
    assert counted["P@1"] == 0.5 and counted["mAP@2"] == 0.5 and counted["NDCG@2"] == 0.5
    assert counted["n_queries"] == 2 and counted["n_queries_without_relevant"] == 1


def test_change_interval_is_the_paired_interval_of_the_relative_change():
    rng = np.random.default_rng(0)
    n = 3000
    baseline = rng.uniform(0, 1, n)
    model = np.clip(baseline + rng.normal(0.01, 0.1, n), 0, 1)  # per-query scores, paired
    low, high = change_interval(model, baseline)
    change = model.mean() / baseline.mean() - 1
    # the delta method's standard error of a ratio of paired means
    se = np.std(model - (change + 1) * baseline, ddof=1) / np.sqrt(n) / baseline.mean()
    assert low < change < high
    assert (high - low) == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert (low, high) == change_interval(model, baseline)  # seeded
    # four times the queries, half the width
    quad = change_interval(np.tile(model, 4), np.tile(baseline, 4))
    assert (quad[1] - quad[0]) == pytest.approx((high - low) / 2, rel=0.15)
    # a model that changes every query alike has no spread to report
    assert change_interval(1.1 * baseline, baseline) == pytest.approx((0.1, 0.1))
    assert change_interval(baseline, baseline) == (0.0, 0.0)


def test_change_interval_refuses_unpaired_scores_and_has_none_for_one_query():
    with pytest.raises(VestisError, match="paired"):
        change_interval(np.ones(3), np.ones(4))
    assert all(math.isnan(v) for v in change_interval(np.array([0.5]), np.array([0.4])))
    assert all(math.isnan(v) for v in change_interval(np.array([0.5, 0.2]), np.zeros(2)))


def test_ann_recall():
    approx = np.array([[1, 2, 3], [7, -1, -1]])
    exact = np.array([[1, 3, 4], [7, 8, 9]])
    assert ann_recall_at_k(approx, exact, 3) == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert ann_recall_at_k(approx, exact, 1) == 1.0


def test_accuracy_top_k_ties_rank_the_lower_class_first():
    scores = np.array([[1.0, 1.0, 0.0], [0.2, 0.5, 0.3]])
    assert accuracy_top_k(scores, [1, 1], 1) == 0.5  # row 0: class 0 wins the tie
    assert accuracy_top_k(scores, [1, 1], 2) == 1.0
    assert accuracy_top_k(scores, [0, 2], 1) == 0.5


def test_accuracy_top_k_matches_sklearn_without_ties():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(200, 10))
    y = rng.integers(0, 10, 200)
    for k in (1, 5):
        expected = top_k_accuracy_score(y, scores, k=k, labels=range(10))
        assert accuracy_top_k(scores, y, k) == pytest.approx(expected)


def test_confusion_and_per_class_accuracy():
    y_true = np.array(["a", "a", "a", "b", "b", "c"])
    y_pred = np.array(["a", "b", "a", "b", "b", "a"])
    matrix, labels = confusion_matrix(y_true, y_pred)
    assert labels == ["a", "b", "c"]
    np.testing.assert_array_equal(matrix, [[2, 1, 0], [0, 2, 0], [1, 0, 0]])
    assert per_class_accuracy(y_true, y_pred) == pytest.approx({"a": 2 / 3, "b": 1.0, "c": 0.0})


def test_knn_classify_majority_then_similarity_then_nearest():
    labels = np.array([["a", "b", "b", "c"],   # majority b
                       ["a", "b", "b", "a"],   # 2-2 tie: b sums 0.8 + 0.7 > a 0.9 + 0.1
                       ["b", "a", "c", "d"]])  # all tied in votes and sums: the nearest, b
    scores = np.array([[0.9, 0.5, 0.4, 0.3],
                       [0.9, 0.8, 0.7, 0.1],
                       [0.5, 0.5, 0.5, 0.5]])
    np.testing.assert_array_equal(knn_classify(labels, scores, chunk=2), ["b", "b", "b"])
